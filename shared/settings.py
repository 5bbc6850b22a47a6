"""One typed settings object for every mlxq process, read from ``MLXQ_*`` environment variables."""

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.units import parse_bytes, parse_duration

DEMO_MODEL_ID = "mlxq/SmolLM2-135M-Instruct-Q4_1"
"""The default model: SmolLM2-135M-Instruct, prepared from a PyPI wheel (worker/demo_model.py)."""
DEMO_EMBEDDING_MODEL_ID = "mlxq/all-MiniLM-L6-v2"
"""The demo embedding model, prepared from a PyPI wheel (worker/demo_embedding_model.py)."""


class Settings(BaseSettings):
    """Configuration shared by the API and the workers. Every field maps to ``MLXQ_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MLXQ_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis (queue, results, token streams)."
    )
    model: str = Field(
        DEMO_MODEL_ID,
        description="The default model: the one /ask uses and a worker loads at start (and "
        "keeps): the demo model id, a local MLX model folder, or a Hugging Face repo id.",
    )
    models: str = Field(
        "hf-cache",
        description="Models a worker may load on demand besides MLXQ_MODEL, comma-separated: "
        "model ids (demo ids, local MLX model folders, LoRA adapter folders, Hugging Face "
        "repo ids in the local cache), folders that hold model folders, and 'hf-cache' "
        "(every MLX model in the local Hugging Face cache). Empty: MLXQ_MODEL only.",
    )
    memory_budget: int | None = Field(
        None,
        ge=0,
        description="Bytes of model weights a worker may hold loaded (e.g. 6GB, 6GiB), as "
        "measured after load; to load another model, idle ones are unloaded, least recently "
        "used first. Default: 60% of the machine's memory; 0: no limit.",
    )
    keep_alive: float = Field(
        300.0,
        ge=0,
        description="How long an idle model stays loaded (seconds, or 5m, 1h; negative: "
        "forever); a request's own keep_alive (Ollama) overrides it for its model. The "
        "default model stays loaded unless a request says otherwise.",
    )
    embedding_model: str = Field(
        DEMO_EMBEDDING_MODEL_ID,
        description="Model the embedding workers of 'mlxq up --embedding-workers N' serve "
        "(a worker serves MLXQ_MODEL; this sets it for those).",
    )
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(5015, ge=1, le=65535, description="Port the API listens on.")
    worker_concurrency: int = Field(
        8, ge=1, le=256, description="Jobs one worker process generates for at once (batch size)."
    )
    batch_slots: int | None = Field(
        None,
        ge=0,
        description="Most of a worker's slots that lines of OpenAI batches may hold; the rest "
        "are kept for interactive requests. Default: half of MLXQ_WORKER_CONCURRENCY "
        "(at least 1).",
    )
    max_file_bytes: int = Field(
        104_857_600,
        ge=1024,
        description="Largest file accepted by POST /v1/files (batch input); larger ones get a 413.",
    )
    files_budget: int | None = Field(
        None,
        ge=0,
        description="Bytes all stored files (batch inputs and outputs) may take in Redis; an "
        "upload past it is refused with a 507. Default: half of Redis' maxmemory (2 GiB "
        "without a cap).",
    )
    batch_retention: int = Field(
        604_800,
        ge=60,
        description="Seconds uploaded files, and finished batches with their output and error "
        "files, are kept in Redis (default 7 days).",
    )
    batch_window: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Lines of one batch waiting in the queue or running at once.",
    )
    redis_maxmemory: str = Field(
        "1gb",
        description="Memory cap of the Redis that 'mlxq up' starts (noeviction: when full, "
        "writes are refused with a 503, queued jobs are never evicted).",
    )
    queue: str | None = Field(
        None, description="RQ queue name; default: derived from the model id (one queue per model)."
    )
    queue_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may wait for a worker to take it before a 503."
    )
    route_wait: float = Field(
        2.0,
        gt=0,
        description="Seconds a request routed to the worker holding its conversation's cache "
        "may wait for it; then any worker may take it.",
    )
    redis_outage_grace: float = Field(
        30.0,
        ge=0,
        description="Seconds a waiting request rides out an unreachable Redis (a restart) "
        "before it is answered 503; a request that arrives while Redis is down is a 503 at once.",
    )
    request_timeout: float = Field(
        600.0,
        gt=0,
        description="Default deadline of a request in seconds (a request may set its own "
        "'timeout'); past it the client gets a 504 and generation stops.",
    )
    max_queued: int = Field(
        1000,
        ge=1,
        description="Most jobs waiting in one queue, fleet-wide: a model's shared queue, or "
        "one key's queue of it; beyond it a 429.",
    )
    max_header_bytes: int = Field(
        65_536, ge=1024, description="Largest request head (request line and headers); a 431."
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a connection may take to send a request's head; a 408."
    )
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send a request's body; a 408."
    )
    keepalive_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle kept-alive connection stays open."
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Open connections (and requests) at once; beyond it a new connection is "
        "answered 503 with Retry-After. Default: the process's open-file limit less 256.",
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=1,
        description="Open connections one client address may hold; beyond it a 503. Default: a "
        "quarter of MLXQ_MAX_CONNECTIONS.",
    )
    max_client_bytes_per_second: int = Field(
        4_194_304,
        ge=0,
        description="Request-body bytes one client address may send per second (a burst of "
        "one largest body allowed); beyond it a 429 with Retry-After. File uploads are not "
        "counted. 0: no bound.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted; larger ones get a 413."
    )
    drain_timeout: float = Field(
        60.0, ge=0, description="Seconds a stopping worker may spend finishing running jobs."
    )
    job_timeout: int = Field(
        600, ge=1, description="Seconds a job may generate before it is stopped (RQ job_timeout)."
    )
    result_ttl: int = Field(300, ge=1, description="Seconds RQ keeps a finished job's result.")
    failure_ttl: int = Field(
        86400, ge=1, description="Seconds RQ keeps a failed job (without its prompt)."
    )
    refused_ttl: int = Field(
        300,
        ge=1,
        description="Seconds RQ keeps a refused or cancelled request's job (invalid, too "
        "long for the context, past its deadline, client gone).",
    )
    event_ttl: int = Field(
        600, ge=1, description="Seconds a job's event stream (tokens, result) is kept in Redis."
    )
    stream_keepalive: float = Field(
        10.0,
        gt=0,
        description="Seconds of silence after which a stream sends an SSE comment (keep-alive).",
    )
    stream_write_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a stream waits for a client that stopped reading; then it is "
        "dropped and its job cancelled.",
    )
    max_tokens_cap: int = Field(
        4096,
        ge=1,
        description="Largest max_tokens a request may ask for; also the bound when omitted.",
    )
    prefix_cache_bytes: int | None = Field(
        None,
        ge=0,
        description="Bytes of KV cache a worker keeps for reuse across requests (prefix "
        "cache); unset: 8 full contexts of the model, at most a quarter of memory; 0: off.",
    )
    speculation: bool = Field(
        True,
        description="Speculative decoding by prompt lookup: each sequence's guessed next "
        "tokens (copied from its own prompt and answer) are checked in one forward pass; same "
        "text, faster when the answer copies its context. Requests can turn it off.",
    )
    draft_model: str | None = Field(
        None,
        description="A smaller model with the same tokenizer (a path or id, as MLXQ_MODEL) "
        "that guesses a lone request's next tokens when prompt lookup finds none to copy "
        "(mlx_lm.server's --draft-model); unset: prompt lookup only.",
    )
    group_split: Literal["auto", "tensor", "pipeline"] = Field(
        "auto",
        description="A worker group (ranks started by mlx.launch): how the model is split. "
        "'auto': tensor parallel where the model supports it and its heads divide among the "
        "ranks, pipeline otherwise.",
    )
    group_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A worker group ends when one of its ranks has not been heard from for "
        "this long (killed, stopped, its Mac asleep); the fleet retries its jobs.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "mlxq", description="Where the demo model is prepared and cached."
    )
    engine: str = Field(
        "mlx",
        description="Generation engine: 'mlx', 'embedding' (chosen by itself for an embedding "
        "model), 'echo' (zero-cost, for overhead benchmarks), or 'module:Class'.",
    )
    cpu_dequantize: bool = Field(
        True,
        description="On MLX's CPU backend, expand quantized weights to float32 at load "
        "(much faster there; about 8x the memory of a 4-bit model).",
    )
    cpu_blas: str = Field(
        "auto",
        description="Linux CPU workers: OpenBLAS library to use for MLX's matmuls: 'auto' "
        "(find it), 'off', or a path.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="An admin key without limits: when set, every route but /health needs "
        "'Authorization: Bearer <key>' (this key, or one made with 'mlxq keys create').",
    )
    allow_insecure: bool = Field(
        False,
        description="Allow listening on a non-loopback address without an API key.",
    )
    log_content: bool = Field(
        False, description="Log prompts and answers (for debugging; off: only ids and timings)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Without an API key, the names (Host header) the API answers to besides "
        "localhost, 127.0.0.1, ::1 and MLXQ_HOST (JSON list); guards against DNS rebinding.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); empty: CORS off."
    )
    log_level: str = Field("INFO", description="Log level of every process.")

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_bytes(value) if isinstance(value, str) and value.strip() else value

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str | int | float) else value

    @field_validator("log_level")
    @classmethod
    def _upper_log_level(cls, value: str) -> str:
        return value.upper()

    @property
    def queue_name(self) -> str:
        from shared.keys import queue_name_for_model

        return self.queue or queue_name_for_model(self.model)

    def queue_of(self, model: str) -> str:
        """The queue of any model: MLXQ_QUEUE renames the default model's only."""
        from shared.keys import queue_name_for_model

        return self.queue_name if model == self.model else queue_name_for_model(model)

    @property
    def batch_slot_limit(self) -> int:
        """MLXQ_BATCH_SLOTS, or half of the worker's slots (at least one)."""
        if self.batch_slots is not None:
            return min(self.batch_slots, self.worker_concurrency)
        return max(1, self.worker_concurrency // 2)


def without_password(url: str) -> str:
    """A Redis URL fit for logs and messages: its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
