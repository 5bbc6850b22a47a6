"""OpenAI's API: chat completions, completions, embeddings and models under ``/v1``.

Its schemas (``schemas.py``), their translation to mlxq's neutral request
(``translate.py``), the answers and stream chunks (``render.py``, documented in
``answers.py``) and the routes (``routes.py``); vLLM's ``/tokenize`` and ``/detokenize``
(``tokenize.py``). Files and batches (api/batch/) answer in this dialect too, being under /v1.
"""

from api.core.dialect import Dialect
from api.dialects.openai.render import error_body, invalid_input

PREFIX = "/v1/"
VLLM_PATHS = frozenset({"/tokenize", "/detokenize"})
"""vLLM's tokenizer routes, outside /v1 as vLLM serves them (tokenize.py)."""

DIALECT = Dialect(
    name="openai",
    owns=lambda path: path.startswith(PREFIX) or path in VLLM_PATHS,
    error_body=error_body,
    invalid_input=invalid_input,
)
