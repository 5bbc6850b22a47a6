"""Ollama's API (``/api/*``): chat, generate and embeddings (``routes.py``), the model
listings (``catalog.py``), with their schemas (``schemas.py``, ``options.py``), translation
to mlxq's neutral request (``translate.py``) and answers (``render.py``, documented in
``answers.py``). Errors are Ollama's ``{"error": message}``."""

from api.core.dialect import Dialect
from api.dialects.ollama.render import error_body, invalid_input

PREFIX = "/api/"

DIALECT = Dialect(
    name="ollama",
    owns=lambda path: path.startswith(PREFIX),
    error_body=error_body,
    invalid_input=invalid_input,
)
