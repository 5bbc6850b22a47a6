"""Which worker should load a model: one deterministic rule, applied by every worker.

Nothing central places models. Once a second each worker reads the fleet from Redis (every
live worker's stats, its catalogue and what it holds) and the demand for the models it may
load but does not hold (jobs waiting in their queues, load requests), and applies ``choose``
to each. Every worker computes the same choice from the same view; the one chosen claims the
load with ``SET NX`` (shared/protocol/model_records.py), so two never load a model for the
same need even when their views differ for a moment, and its next heartbeat shows the model
as loading, which ends that need.

The rule, for a model with demand:

- **No worker holds it or loads it**: one worker loads it, the cheapest of those that may:
  first one with no job running, then one that need not unload anything (room in its budget),
  then the one that would unload the fewest bytes (idle models only: a model with running jobs
  is never unloaded), then the one with the most free memory; the name breaks ties.
- **Its holders are all busy**: when more jobs wait than its holders have free slots, for
  SCALE_OUT_AFTER_S, a worker with no job running (idle, or holding only idle models) loads a
  copy too, chosen the same way. None loads a copy while one is already loading.
- Copies that fall idle unload after their keep-alive (worker/model_host.py).
"""

from dataclasses import dataclass, field

from shared.protocol import CatalogueEntry, HeldModel, WorkerStats
from shared.units import human_bytes

SCALE_OUT_AFTER_S = 2.0
"""How long a model's queue must stay beyond its holders' free slots before another worker
loads a copy: a queue between two dequeues is not a crowd."""


@dataclass(frozen=True)
class WorkerView:
    """One live worker as the rule sees it."""

    name: str
    takes_jobs: bool
    slots: int
    running: int
    budget: int
    used: int
    held: dict[str, HeldModel] = field(default_factory=dict)
    loading: frozenset[str] = frozenset()
    catalogue: dict[str, CatalogueEntry] = field(default_factory=dict)

    @classmethod
    def of(
        cls, name: str, stats: WorkerStats, catalogue: dict[str, CatalogueEntry]
    ) -> "WorkerView":
        return cls(
            name=name,
            takes_jobs=stats.takes_jobs,
            slots=stats.slots,
            running=stats.running,
            budget=stats.memory_budget,
            used=stats.memory_used,
            held={h.model: h for h in stats.holdings},
            loading=frozenset(stats.loading),
            catalogue=catalogue,
        )

    def holds(self, model: str) -> bool:
        return model in self.held or model in self.loading

    @property
    def free(self) -> int:
        return max(0, self.budget - self.used) if self.budget else 1 << 62


@dataclass(frozen=True)
class Choice:
    model: str
    worker: str
    reason: str


def cost(worker: WorkerView, model: str) -> tuple | None:
    """How much loading ``model`` would disturb ``worker``; None when it may not load it."""
    entry = worker.catalogue.get(model)
    if entry is None or not entry.servable or not worker.takes_jobs or worker.holds(model):
        return None
    need = entry.memory_bytes or 0
    idle = sum(h.own_bytes for h in worker.held.values() if h.running == 0)
    if worker.budget and worker.free + idle < need:
        return None  # only by unloading a model with running jobs: never
    evict = max(0, need - worker.free)
    return (worker.running > 0, evict > 0, evict, worker.running, -worker.free, worker.name)


def choose(
    model: str, waiting: int, workers: list[WorkerView], crowded_for_s: float = 0.0
) -> Choice | None:
    """The worker that should load ``model`` now, with ``waiting`` jobs (or load requests)
    for it; None when none should. ``crowded_for_s``: how long its queue has been beyond its
    holders' free slots (the caller keeps the time)."""
    if waiting <= 0:
        return None
    holders = [w for w in workers if w.takes_jobs and w.holds(model)]
    if not holders:
        return _cheapest(model, workers, f"{waiting} request(s) wait and no worker holds it")
    if any(model in w.loading for w in holders):
        return None
    free_slots = sum(max(0, w.slots - w.running) for w in holders)
    if waiting <= free_slots or crowded_for_s < SCALE_OUT_AFTER_S:
        return None
    idle = [w for w in workers if w.running == 0]
    reason = (
        f"{waiting} request(s) wait beyond the free slots of its {len(holders)} holder(s) "
        f"for {crowded_for_s:.0f} s"
    )
    return _cheapest(model, idle, reason)


def crowded(model: str, waiting: int, workers: list[WorkerView]) -> bool:
    """More jobs wait for ``model`` than its holders have free slots (a copy may help)."""
    holders = [w for w in workers if w.takes_jobs and model in w.held]
    return bool(holders) and waiting > sum(max(0, w.slots - w.running) for w in holders)


def _cheapest(model: str, workers: list[WorkerView], why: str) -> Choice | None:
    costs = [(c, w) for w in workers if (c := cost(w, model)) is not None]
    if not costs:
        return None
    best, worker = min(costs, key=lambda pair: pair[0])
    running, must_evict, evict = best[0], best[1], best[2]
    how = "busy" if running else "idle"
    room = f"must unload {human_bytes(evict)} of idle models" if must_evict else "has room"
    return Choice(model, worker.name, f"{why}; {worker.name[:12]} is the cheapest ({how}, {room})")
