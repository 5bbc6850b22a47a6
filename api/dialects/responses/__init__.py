"""OpenAI's Responses API (``POST /v1/responses``), stateless: its request (``schemas.py``,
input items in ``items.py``), the translation to mlxq's neutral request (``translate.py``),
the Response (``render.py``, documented in ``answers.py``), its stream of typed events
(``stream.py``) and the route (``routes.py``). Errors are OpenAI's (api/dialects/openai)."""
