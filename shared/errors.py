"""Domain errors shared by the API and the workers, each with the HTTP status it maps to.

Workers report errors as (code, message) in a job's final event; the API turns the code back
into the HTTP status below, in one place (api/errors.py).
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    MODEL_NOT_FOUND = "model_not_found"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    GENERATION_FAILED = "generation_failed"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    QUEUE_FULL = "queue_full"
    CANCELLED = "cancelled"
    NO_WORKER = "no_worker"
    TIMEOUT = "timeout"
    REDIS_UNAVAILABLE = "redis_unavailable"
    WORKER_LOST = "worker_lost"
    NOT_FOUND = "not_found"
    INTERNAL_ERROR = "internal_error"
    """A bug: an unhandled exception in the API (api/edge/crash_guard.py)."""
    HEADERS_TOO_LARGE = "headers_too_large"
    OVERLOADED = "overloaded"
    STORAGE_FULL = "storage_full"
    RATE_LIMITED = "rate_limited"
    MODEL_LOAD_FAILED = "model_load_failed"
    MODEL_TOO_LARGE = "model_too_large"
    PULL_FAILED = "pull_failed"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CANCELLED: 499,
    ErrorCode.GENERATION_FAILED: 500,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.MODEL_LOAD_FAILED: 500,
    ErrorCode.WORKER_LOST: 502,
    ErrorCode.PULL_FAILED: 502,
    ErrorCode.NO_WORKER: 503,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.REDIS_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.STORAGE_FULL: 507,
    ErrorCode.MODEL_TOO_LARGE: 507,
}


RETRY_AFTER_S: dict[ErrorCode, int] = {
    ErrorCode.NO_WORKER: 5,
    ErrorCode.REDIS_UNAVAILABLE: 2,
    ErrorCode.OVERLOADED: 1,
}
"""Retry-After of a 503, by its cause, when the error names none: a worker may be starting
(seconds), a Redis restart takes a couple of seconds, an overloaded edge frees connections
at once. Every 503 carries one, so that clients back off instead of hammering."""
DEFAULT_RETRY_AFTER_S = 2


class MlxqError(Exception):
    """An error with a code a client can act on and a message a person can read."""

    code: ErrorCode = ErrorCode.GENERATION_FAILED

    def __init__(
        self, message: str, code: ErrorCode | None = None, partial: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial
        """Text generated before the error (a deadline), returned with it."""
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def retry_after(self) -> int | None:
        """Seconds a client should wait before trying again, for a 503 or 429; else None."""
        given = getattr(self, "retry_after_s", None)
        if given is not None:
            return int(given)
        if self.http_status in (429, 503):
            return RETRY_AFTER_S.get(self.code, DEFAULT_RETRY_AFTER_S)
        return None


class InvalidRequest(MlxqError):
    code = ErrorCode.INVALID_REQUEST


class ModelNotFound(MlxqError):
    code = ErrorCode.MODEL_NOT_FOUND


class NotFound(MlxqError):
    """A file or batch that does not exist (or has expired)."""

    code = ErrorCode.NOT_FOUND


class PayloadTooLarge(MlxqError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class ContextLengthExceeded(MlxqError):
    code = ErrorCode.CONTEXT_LENGTH_EXCEEDED


class GenerationFailed(MlxqError):
    code = ErrorCode.GENERATION_FAILED


class QueueFull(MlxqError):
    code = ErrorCode.QUEUE_FULL

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(MlxqError):
    """A key over one of its limits (requests or tokens per minute, concurrent requests,
    stored file bytes): 429, with ``Retry-After`` and the dialect's rate-limit headers."""

    code = ErrorCode.RATE_LIMITED

    def __init__(
        self, message: str, retry_after_s: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class Cancelled(MlxqError):
    code = ErrorCode.CANCELLED


class NoWorkerAvailable(MlxqError):
    code = ErrorCode.NO_WORKER


class JobTimedOut(MlxqError):
    code = ErrorCode.TIMEOUT


class RedisUnavailable(MlxqError):
    code = ErrorCode.REDIS_UNAVAILABLE


class StorageFull(MlxqError):
    """An upload that does not fit the files budget or Redis' free memory."""

    code = ErrorCode.STORAGE_FULL


class ModelLoadFailed(MlxqError):
    """Every worker that may serve the model failed to load it (its files are broken,
    missing, or of an architecture mlx-lm does not know); requests are refused at once
    until its files change or a worker that can load it joins."""

    code = ErrorCode.MODEL_LOAD_FAILED


class ModelTooLarge(MlxqError):
    """The model takes more memory than any worker that may serve it has in its budget
    (MLXQ_MEMORY_BUDGET), even with every other model unloaded."""

    code = ErrorCode.MODEL_TOO_LARGE
