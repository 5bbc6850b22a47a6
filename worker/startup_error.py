"""Why a worker process cannot start (not why one job failed: that is shared/errors.py's)."""


class StartupError(RuntimeError):
    """The worker cannot start serving (its model, its engine, Redis); it exits with this
    message on one line instead of a traceback."""
