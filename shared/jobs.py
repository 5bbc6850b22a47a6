"""The RQ job functions mlxq enqueues, by dotted path (the API never imports worker code)."""

GENERATE_FUNCTION = "worker.jobs.generate"
"""The only job function an mlxq worker runs; any other function name is refused."""

ALLOWED_FUNCTIONS = frozenset({GENERATE_FUNCTION})
