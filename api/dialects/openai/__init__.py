"""OpenAI's API: chat completions, completions, embeddings and models under ``/v1``.

Its schemas (``schemas.py``), their translation to mlxq's neutral request
(``translate.py``), the answers and stream chunks (``render.py``, documented in
``answers.py``) and the routes (``routes.py``). Files and batches (api/batch/) answer in this
dialect too, being under /v1.
"""

from api.core.dialect import Dialect
from api.dialects.openai.render import error_body, invalid_input

PREFIX = "/v1/"

DIALECT = Dialect(
    name="openai",
    owns=lambda path: path.startswith(PREFIX),
    error_body=error_body,
    invalid_input=invalid_input,
)
