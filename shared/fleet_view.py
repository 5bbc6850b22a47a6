"""The fleet as Redis sees it: who is alive, which models each holds and may load, how deep
the queues are.

Read by the API (/ready, /fleet, /metrics, the reaper, model names) and by ``mlxq status``.

Which models the fleet can serve (``fleet_models``, ``availability``): every model in a live
worker's catalogue, loaded or not, with what its files say (size, family, parameters,
quantization, context), where it is loaded (``held_by``, suspended workers included: what
``/api/ps`` lists) and which workers take its jobs (``servable_by``: they hold it or may load
it, and are not suspended; ``WorkerStats.takes_jobs`` is the rule). ``/ready``, the model
listings (``/v1/models``, ``/api/tags``, ``/api/show``), the API's queue timeout and the
reaper's retry (``servable_models``: a job whose model another worker may load is not lost)
all ask this. A model every worker that lists it refuses (its load failed, it never fits) is
refused at once.
"""

import time
from dataclasses import dataclass, field
from typing import Literal

import redis
import redis.asyncio as aioredis

from shared import protocol, rq_bridge
from shared.errors import ErrorCode
from shared.keys import lane_of, model_queue_of, queue_name_for_model
from shared.protocol import CatalogueEntry, HeldModel, WorkerStats


@dataclass
class FleetModel:
    """One model the fleet can serve: what its files say, and where it stands."""

    model: str
    entry: CatalogueEntry
    """What a worker that lists it read of it (one that may serve it, when any may)."""
    servable_by: list[str] = field(default_factory=list)
    """Live workers that take jobs and may serve it (hold it, or may load it)."""
    held_by: list[tuple[str, HeldModel]] = field(default_factory=list)
    loading_on: list[str] = field(default_factory=list)
    refusals: list[tuple[str, ErrorCode, str]] = field(default_factory=list)
    """(worker, code, why) for each live worker that lists it but cannot serve it."""


def fleet_models(connection: redis.Redis) -> dict[str, FleetModel]:
    """Model id -> the fleet's view of it, for every model a live worker lists or holds."""
    names = [name for name, _ in protocol.live_worker_beats(connection)]
    if not names:
        return {}
    stats = protocol.read_stats(connection, names)
    catalogues = protocol.read_catalogues(connection, names)
    return _models(names, stats, catalogues)


def _models(
    names: list[str], stats: list[WorkerStats], catalogues: list[dict[str, CatalogueEntry]]
) -> dict[str, FleetModel]:
    models: dict[str, FleetModel] = {}
    for name, worker, catalogue in zip(names, stats, catalogues, strict=True):
        for entry in catalogue.values():
            seen = models.setdefault(entry.model, FleetModel(entry.model, entry))
            if entry.servable and not seen.entry.servable:
                seen.entry = entry
            seen.entry = _shortest_context(seen.entry, entry)
            if not entry.servable:
                seen.refusals.append(
                    (name, entry.refusal or ErrorCode.MODEL_LOAD_FAILED, entry.refused or "")
                )
            elif worker.takes_jobs:
                seen.servable_by.append(name)
        for held in worker.holdings:
            seen = models.setdefault(held.model, FleetModel(held.model, _bare(held.model)))
            seen.held_by.append((name, held))
            if worker.takes_jobs and name not in seen.servable_by:
                seen.servable_by.append(name)
        for model in worker.loading:
            models.setdefault(model, FleetModel(model, _bare(model))).loading_on.append(name)
    return models


def _shortest_context(kept: CatalogueEntry, other: CatalogueEntry) -> CatalogueEntry:
    """``kept``, with the shortest context of the two (workers may be configured apart, and
    a request must fit every one of them), and the capabilities ``other``'s loaded copy told
    where ``kept``'s worker has not loaded it."""
    lengths = [n for n in (kept.context_length, other.context_length) if n]
    update: dict[str, object] = {"context_length": min(lengths)} if lengths else {}
    if not kept.capabilities and other.capabilities:
        update["capabilities"] = other.capabilities
    return kept.model_copy(update=update) if update else kept


def _bare(model: str) -> CatalogueEntry:
    """A held model no catalogue describes (a worker of an engine without files)."""
    return CatalogueEntry(model=model)


Availability = Literal["served", "loadable", "refused", "none"]


def servable_models(connection: redis.Redis) -> set[str]:
    """The models a live worker that takes jobs holds or may load (the reaper retries a
    dead worker's job when its model is one of these)."""
    return {model for model, seen in fleet_models(connection).items() if seen.servable_by}


async def availability(
    connection: aioredis.Redis, model: str
) -> tuple[Availability, FleetModel | None]:
    """Whether a request for ``model`` can be run: a live worker that takes jobs holds it
    ("served"), or may load it ("loadable"); every live worker that lists it refuses it
    ("refused": see ``FleetModel.refusals``); or no live worker lists it ("none")."""
    live = await protocol.read_live_workers_async(connection)
    if not live:
        return "none", None
    names = [name for name, _ in live]
    catalogues = await protocol.read_catalogues_async(connection, names)
    seen = _models(names, [stats for _, stats in live], catalogues).get(model)
    if seen is None:
        return "none", None
    if any(name in seen.servable_by for name, _ in seen.held_by):
        return "served", seen
    if seen.servable_by:
        return "loadable", seen
    return ("refused" if seen.refusals else "none"), seen


def snapshot(connection: redis.Redis) -> dict:
    """Workers (live ones, with the models each holds); queues, each with its lane
    (``shared``, ``worker <name>``, ``batch``), its depth, its failed jobs and its refused
    requests apart; and the last placement decisions: for /fleet, /metrics, the page and
    `mlxq status`."""
    beats = protocol.live_worker_beats(connection)
    stats = protocol.read_stats(connection, [name for name, _ in beats]) if beats else []
    workers = [
        _worker_row(name, beat, worker_stats)
        for (name, beat), worker_stats in zip(beats, stats, strict=True)
    ]
    models = {model_queue_of(q): w["model"] for w in workers for q in w["queues"][:1]}
    models.update({queue_name_for_model(m): m for s in stats for m in s.held_models})
    queues = [
        {
            "queue": depth.queue,
            "lane": lane_of(depth.queue),
            "model": models.get(model_queue_of(depth.queue)),
            "queued": depth.queued,
            "failed": depth.failed,
            "refused": depth.refused,
        }
        for depth in rq_bridge.queue_depths(connection)
    ]
    placement = [d.model_dump() for d in protocol.recent_decisions(connection)]
    return {"workers": workers, "queues": queues, "placement": placement}


def _worker_row(name: str, last_beat: float, stats: protocol.WorkerStats) -> dict:
    return {
        "name": name,
        "host": stats.host,
        "model": stats.model,
        "queues": stats.queues,
        "slots": stats.slots,
        "running": stats.running,
        "tokens_per_s": stats.tokens_per_s,
        "tokens_total": stats.tokens_total,
        "prefix_cache_bytes": stats.prefix_cache_bytes,
        "prefix_cache_budget_bytes": stats.prefix_cache_budget_bytes,
        "kv_cache_bytes": stats.kv_cache_bytes,
        "kv_cache_budget_bytes": stats.kv_cache_budget_bytes,
        "prefix_cache_queried_tokens": stats.prefix_cache_queried_tokens,
        "prefix_cache_hit_tokens": stats.prefix_cache_hit_tokens,
        "draft_tokens_proposed": stats.draft_tokens_proposed,
        "draft_tokens_accepted": stats.draft_tokens_accepted,
        "suggested_temperature": stats.suggested_temperature,
        "seconds_since_heartbeat": round(max(0.0, time.time() - last_beat), 1),
        "held": [held.model_dump() for held in stats.holdings],
        "loading": stats.loading,
        "memory_budget": stats.memory_budget,
        "memory_used": stats.memory_used,
        "group": _group_of(stats),
    }


def _group_of(stats: protocol.WorkerStats) -> dict | None:
    """A worker group's shape (worker/group), None for a worker alone."""
    if stats.group_ranks < 2:
        return None
    return {"ranks": stats.group_ranks, "hosts": stats.group_hosts, "split": stats.group_split}
