"""What a worker process needs of the settings, read once. Every default is the setting's
own, in shared/settings.py: a worker is configured from a ``Settings``, never by hand."""

from dataclasses import dataclass

from shared.settings import Settings


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int
    """Batch slots: jobs generated for at once (MLXQ_WORKER_CONCURRENCY)."""
    batch_slots: int
    """Of those, the most that lines of OpenAI batches may hold (MLXQ_BATCH_SLOTS)."""
    event_ttl_s: int
    """How long a job's events, and its owner mark, are kept (MLXQ_EVENT_TTL)."""
    job_timeout_s: int
    """How long a job may run when RQ's record names no timeout (MLXQ_JOB_TIMEOUT)."""
    drain_timeout_s: float
    """How long a stopping worker finishes its running jobs (MLXQ_DRAIN_TIMEOUT)."""
    refused_ttl_s: int
    """How long RQ keeps a refused or cancelled job's record (MLXQ_REFUSED_TTL)."""
    log_content: bool
    """Prompts and answers may be logged (MLXQ_LOG_CONTENT)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "WorkerConfig":
        return cls(
            concurrency=settings.worker_concurrency,
            batch_slots=settings.batch_slot_limit,
            event_ttl_s=settings.event_ttl,
            job_timeout_s=settings.job_timeout,
            drain_timeout_s=settings.drain_timeout,
            refused_ttl_s=settings.refused_ttl,
            log_content=settings.log_content,
        )
