"""mlxq's own API: ``POST /ask``. Its error body, ``{"detail", "code"}``, is also the one of
every route outside the other dialects (/fleet, /ready, /metrics...)."""

from api.core.dialect import Dialect
from api.dialects.ask.render import error_body, invalid_input

DIALECT = Dialect(
    name="ask",
    owns=lambda path: True,
    error_body=error_body,
    invalid_input=invalid_input,
    invalid_input_status=422,
)
