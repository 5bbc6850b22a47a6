"""Model records: what each worker may serve (its catalogue), what it holds loaded, and the
fleet's placement of models (claims, decisions, and what the API asks of them).

- ``mlxq:worker:<name>:catalogue``: a hash, model id -> ``CatalogueEntry`` (JSON), written by
  the worker when its catalogue changes and kept alive by its heartbeat;
- a worker's loaded models travel in its ``WorkerStats`` (``HeldModel``, worker_records.py);
- ``mlxq:placement:<model key>``: a worker's claim to load a model for the demand seen now
  (``SET NX``: two workers never load the same model for the same need);
- ``mlxq:placement:log``: the last placement decisions (loads, unloads, refusals), newest
  first, for ``/fleet``, ``mlxq status`` and the page;
- ``mlxq:model:<model key>:wanted`` / ``:unload``: the API asks for a model to be loaded
  (Ollama's empty request) or unloaded now (``keep_alive: 0`` with nothing to answer).

Which worker should load what is worker/placement.py's rule; which models the fleet can
serve, shared/fleet_view.py's.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from shared.errors import ErrorCode
from shared.keys import queue_name_for_model
from shared.protocol.common import PREFIX, text

PLACEMENT_LOG = f"{PREFIX}:placement:log"
PLACEMENT_LOG_KEPT = 200
"""Decisions kept in the log (a few minutes of a busy fleet)."""
WISH_TTL_S = 60
"""A request to load a model (Ollama's empty request) counts as demand this long."""
UNLOAD_MARK_TTL_S = 60
"""An unload request reaches the workers holding the model within their next beat."""


class CatalogueEntry(BaseModel):
    """One model a worker may serve, as it read the model's files (the API reads no files)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    kind: Literal["chat", "embedding", "adapter"] = "chat"
    base: str | None = None
    """An adapter's base model id."""
    path: str | None = None
    family: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    disk_bytes: int | None = None
    """The weights' size on disk (an adapter's own)."""
    memory_bytes: int | None = None
    """What it takes loaded in this worker: estimated from its files until it was loaded
    once, then measured (``measured``). An adapter's includes its base's weights."""
    measured: bool = False
    capabilities: list[str] = []
    """In Ollama's words: completion, tools, insert (fill-in-the-middle tokens), thinking
    (thinking markers); or embedding. Told once a worker loaded it (its tokenizer says);
    empty until then (a listing then goes by ``kind``: ``told_capabilities``)."""
    modified_at: float | None = None
    """Unix time its files last changed."""
    refused: str | None = None
    """Why this worker cannot serve it: its load failed, or it never fits its budget."""
    refusal: ErrorCode | None = None

    @property
    def servable(self) -> bool:
        return self.refused is None

    @property
    def told_capabilities(self) -> list[str]:
        """What it does: as its loaded tokenizer told, else what every model of its kind does
        (a chat model: completion and tools, through its template or mlxq's fallback)."""
        if self.capabilities:
            return self.capabilities
        return ["embedding"] if self.kind == "embedding" else ["completion", "tools"]


class HeldModel(BaseModel):
    """A model a worker holds loaded (in its ``WorkerStats``)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    host: str | None = None
    """The machine of the worker holding it."""
    bytes: int
    """What it takes: its own weights and, for an adapter, its base's (shared)."""
    own_bytes: int
    """What unloading it alone would free (an adapter's own weights; a base still used by
    another held adapter stays)."""
    base: str | None = None
    """The base weights it shares with other held models (an adapter's base model)."""
    running: int = 0
    last_used: float = 0.0
    """Unix time its last job ended (or it loaded)."""
    expires_at: float | None = None
    """Unix time it unloads if still idle; None: never (keep_alive negative)."""
    loaded_at: float = 0.0
    load_s: float = 0.0
    device: Literal["gpu", "cpu"] = "gpu"


class Decision(BaseModel):
    """One placement decision, as /fleet and the logs show it."""

    at: float
    worker: str
    host: str | None = None
    model: str
    action: Literal["load", "loaded", "unload", "evict", "fail", "refuse"]
    reason: str


def model_key(model: str) -> str:
    """A model's part of its records' keys: its queue's name (readable, unique)."""
    return queue_name_for_model(model)


def worker_catalogue_key(worker_name: str) -> str:
    return f"{PREFIX}:worker:{worker_name}:catalogue"


def add_catalogue(
    pipeline: Any, worker: str, entries: list[CatalogueEntry] | None, ttl_s: int
) -> None:
    """Queue the worker's catalogue: rewritten when ``entries`` is given (it changed), its
    expiry renewed in every case (the heartbeat's pipeline)."""
    key = worker_catalogue_key(worker)
    if entries is not None:
        pipeline.delete(key)
        if entries:
            pipeline.hset(key, mapping={e.model: e.model_dump_json() for e in entries})
    pipeline.expire(key, ttl_s)


def read_catalogues(connection: redis.Redis, workers: list[str]) -> list[dict[str, CatalogueEntry]]:
    with connection.pipeline(transaction=False) as pipeline:
        for name in workers:
            pipeline.hgetall(worker_catalogue_key(name))
        return [_entries(fields) for fields in pipeline.execute()]


async def read_catalogues_async(
    connection: aioredis.Redis, workers: list[str]
) -> list[dict[str, CatalogueEntry]]:
    async with connection.pipeline(transaction=False) as pipeline:
        for name in workers:
            pipeline.hgetall(worker_catalogue_key(name))
        return [_entries(fields) for fields in await pipeline.execute()]


def _entries(fields: dict[bytes, bytes]) -> dict[str, CatalogueEntry]:
    return {text(k): CatalogueEntry.model_validate_json(v) for k, v in fields.items()}


def forget_catalogue(connection: redis.Redis, worker: str) -> None:
    connection.delete(worker_catalogue_key(worker))


# -- placement ------------------------------------------------------------------------------


def claim_load(connection: redis.Redis, model: str, worker: str, ttl_s: float) -> bool:
    """Become the one worker that loads ``model`` for the demand seen now (SET NX); the
    claim lapses after ``ttl_s``, by which time the loader's heartbeat shows it loading."""
    key = f"{PREFIX}:placement:{model_key(model)}"
    return bool(connection.set(key, worker, nx=True, px=int(ttl_s * 1000)))


def log_decision(connection: redis.Redis, decision: Decision) -> None:
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.lpush(PLACEMENT_LOG, decision.model_dump_json())
        pipeline.ltrim(PLACEMENT_LOG, 0, PLACEMENT_LOG_KEPT - 1)
        pipeline.execute()


def recent_decisions(connection: redis.Redis, count: int = 20) -> list[Decision]:
    rows: Any = connection.lrange(PLACEMENT_LOG, 0, count - 1)
    return [Decision.model_validate_json(row) for row in rows]


# -- what the API asks of a model -----------------------------------------------------------


def _wish_key(model: str) -> str:
    return f"{PREFIX}:model:{model_key(model)}:wanted"


def _unload_key(model: str) -> str:
    return f"{PREFIX}:model:{model_key(model)}:unload"


def add_load_wish(pipeline: Any, model: str, keep_alive: float | None) -> None:
    """Queue a request that the fleet load ``model`` with nothing to answer (Ollama's empty
    request; sync or async pipeline): it counts as demand for WISH_TTL_S, and ``keep_alive``
    applies once it is loaded."""
    value = json.dumps({"at": time.time(), "keep_alive": keep_alive})
    pipeline.set(_wish_key(model), value, ex=WISH_TTL_S)
    pipeline.delete(_unload_key(model))


def add_unload_request(pipeline: Any, model: str) -> None:
    """Queue a request that every worker holding ``model`` unload it as soon as it is idle
    (``keep_alive: 0`` with nothing to answer, as ``ollama stop`` sends; ``mlxq rm``)."""
    pipeline.set(_unload_key(model), time.time(), ex=UNLOAD_MARK_TTL_S)
    pipeline.delete(_wish_key(model))


def read_wishes(
    connection: redis.Redis, models: list[str]
) -> dict[str, tuple[float, float | None]]:
    """Model -> (when it was asked, the keep-alive asked with it), for the models among
    ``models`` a load was asked of."""
    if not models:
        return {}
    values: Any = connection.mget([_wish_key(m) for m in models])
    wishes = {}
    for model, value in zip(models, values, strict=True):
        if value is not None:
            wish = json.loads(value)
            wishes[model] = (float(wish["at"]), wish.get("keep_alive"))
    return wishes


def read_unload_marks(connection: redis.Redis, models: list[str]) -> dict[str, float]:
    """Model -> when an unload was asked, for those among ``models``."""
    if not models:
        return {}
    values: Any = connection.mget([_unload_key(m) for m in models])
    return {model: float(value) for model, value in zip(models, values, strict=True) if value}
