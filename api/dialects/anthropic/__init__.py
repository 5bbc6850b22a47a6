"""Anthropic's Messages API: ``/v1/messages`` and ``/v1/messages/count_tokens``.

Its schemas (``schemas.py``), the translation to mlxq's neutral request (``translate.py``),
the message, its named stream events and error body (``render.py``, documented in
``answers.py``) and the routes (``routes.py``).
"""

from api.core.dialect import Dialect
from api.dialects.anthropic.render import error_body, invalid_input

PREFIX = "/v1/messages"

DIALECT = Dialect(
    name="anthropic",
    owns=lambda path: path == PREFIX or path.startswith(PREFIX + "/"),
    error_body=error_body,
    invalid_input=invalid_input,
)
