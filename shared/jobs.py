"""The RQ job functions mlxq enqueues, by dotted path (the API never imports worker code)."""

GENERATE_FUNCTION = "worker.jobs.generate"
"""A generation job (its request: a GenerationRequest)."""
EMBED_FUNCTION = "worker.jobs.embed"
"""An embedding job (its request: an EmbeddingRequest)."""

ALLOWED_FUNCTIONS = frozenset({GENERATE_FUNCTION, EMBED_FUNCTION})
"""The only job functions an mlxq worker runs; any other function name is refused."""
