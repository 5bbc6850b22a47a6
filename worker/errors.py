"""Errors of the worker process itself (not of one job: those are in shared/errors.py)."""


class ModelLoadError(RuntimeError):
    """The worker cannot start serving (its model, its engine, Redis); it exits with this
    message on one line instead of a traceback."""
