"""A worker's models: the engines of the models it holds loaded, one per model, each on its
own thread, and what loading and unloading them asks (a memory budget, keep-alive).

To the rest of the worker the host is the engine (it subclasses ``Engine``): a job goes to
the engine of its model (``prepare``, ``submit``, ``cancel``). It also answers the main
thread's questions about models: which it holds, which it loads, what they take
(``report``), and carries out its decisions: load one (on the loader thread,
worker/model_loader.py), unload one (``unload``), make room for one (``make_room``: idle
models out, least recently used first; a model with jobs is never unloaded).

Threads: the main thread adds and removes held models (``collect``, ``unload``) and counts
a job taken (``taken``); preparers, the reporter and the cancel listener reach a job's
engine, and the reporter frees its seat (``released``). The seats and the held models'
counters are under ``_lock``.
"""

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from shared.errors import ErrorCode, GenerationFailed
from shared.protocol import HeldModel
from shared.schemas import JobRequest
from shared.settings import Settings
from shared.units import FOREVER
from worker.catalogue import Catalogue, Item
from worker.engine_api import (
    Emit,
    Engine,
    EngineRequest,
    KvCacheReport,
    PrefixCacheReport,
    SpeculationCounts,
)
from worker.group.ranks import joined
from worker.memory import release_freed_memory
from worker.model_loader import Bases, Loaded, LoadOrder, LoadResult, ModelLoader

log = logging.getLogger(__name__)


@dataclass
class Holding:
    """A model held loaded: its engine and what keeps it."""

    model: str
    engine: Engine
    own_bytes: int
    base: str | None
    load_started_at: float
    load_s: float
    keep_alive: float
    """Seconds it stays loaded once idle (FOREVER: until evicted or asked to unload)."""
    last_used: float
    running: int = 0
    unload_asked: bool = False

    @property
    def expires_at(self) -> float | None:
        return None if self.keep_alive == FOREVER else self.last_used + self.keep_alive


@dataclass
class _Seat:
    """A job this worker took, from its dequeue until its slot is free."""

    model: str
    keep_alive: float | None = None


class ModelHost(Engine):
    def __init__(
        self, settings: Settings, emit: Emit, catalogue: Catalogue, budget: int, device: str
    ) -> None:
        self.model_id = settings.model
        self.budget = budget
        self.device = device
        self.catalogue = catalogue
        self._settings = settings
        self._bases = Bases()
        self._loader = ModelLoader(settings, emit, self._bases)
        self._held: dict[str, Holding] = {}
        self._loading: dict[str, float] = {}
        """Model -> time.monotonic() its load was ordered."""
        self._seats: dict[str, _Seat] = {}
        self._lock = threading.Lock()
        self._retired_tokens = 0
        self._retired_peak = 0
        self._retired_drafts = SpeculationCounts()
        self._host_name = socket.gethostname()

    @classmethod
    def serving(cls, engine: Engine, settings: Settings) -> "ModelHost":
        """A host that holds ``engine`` (already built) as its only model, for good: for
        tests and benchmarks that drive a worker with an engine of their own."""
        fixed = settings.model_copy(update={"model": engine.model_id, "models": "", "engine": "-"})
        catalogue = Catalogue(fixed, budget=0, expand_quantized=False)
        catalogue.scan()
        host = cls(fixed, lambda output: None, catalogue, budget=0, device="gpu")
        host._hold(Loaded(engine.model_id, engine, 0, None, time.time(), 0.0), keep_alive=FOREVER)
        return host

    # -- the Engine the worker sees ------------------------------------------------------------

    @property
    def reuses_prefixes(self) -> bool:  # type: ignore[override]
        return self._settings.engine in ("mlx", "embedding") or any(
            h.engine.reuses_prefixes for h in self._held.values()
        )

    @property
    def context_length(self) -> int | None:  # type: ignore[override]
        default = self._held.get(self.model_id)
        return default.engine.context_length if default else None

    @property
    def suggested_temperature(self) -> float | None:  # type: ignore[override]
        default = self._held.get(self.model_id)
        return default.engine.suggested_temperature if default else None

    @property
    def peak_batch_size(self) -> int:  # type: ignore[override]
        engines = [h.engine.peak_batch_size for h in list(self._held.values())]
        return max([self._retired_peak, *engines])

    @property
    def generated_tokens(self) -> int:  # type: ignore[override]
        return self._retired_tokens + sum(
            h.engine.generated_tokens for h in list(self._held.values())
        )

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest[Any]:
        with self._lock:
            seat = self._seats.get(job_id)
            if seat is not None:
                seat.keep_alive = getattr(request, "keep_alive", None)  # a tokenize job has none
        return self._engine_of(request.model).prepare(job_id, request, timeout_s)

    def submit(self, request: EngineRequest[Any]) -> None:
        self._engine_of(request.request.model).submit(request)

    def cancel(self, job_id: str) -> None:
        seat = self._seats.get(job_id)
        holding = self._held.get(seat.model) if seat else None
        if holding is not None:
            holding.engine.cancel(job_id)

    def holds(self, job_id: str) -> bool:
        return any(h.engine.holds(job_id) for h in list(self._held.values()))

    def start(self) -> None:
        self._loader.start()

    def stop(self) -> None:
        self._loader.stop()
        for holding in list(self._held.values()):
            holding.engine.stop()

    def prefix_cache_report(self) -> PrefixCacheReport:
        reports = [h.engine.prefix_cache_report() for h in list(self._held.values())]
        return PrefixCacheReport(
            sum(r.queried_tokens for r in reports),
            sum(r.hit_tokens for r in reports),
            sum(r.bytes for r in reports),
            sum(r.budget_bytes for r in reports),
        )

    def kv_cache_report(self) -> KvCacheReport:
        reports = [h.engine.kv_cache_report() for h in list(self._held.values())]
        return KvCacheReport(sum(r.bytes for r in reports), sum(r.budget_bytes for r in reports))

    def speculation_report(self) -> SpeculationCounts:
        reports = [h.engine.speculation_report() for h in list(self._held.values())]
        return SpeculationCounts(
            self._retired_drafts.proposed + sum(r.proposed for r in reports),
            self._retired_drafts.accepted + sum(r.accepted for r in reports),
        )

    def _engine_of(self, model: str) -> Engine:
        holding = self._held.get(model)
        if holding is None:  # unloaded between its dequeue and now: cannot happen (taken)
            raise GenerationFailed(f"The model {model!r} is not loaded on this worker.")
        return holding.engine

    # -- jobs (main thread, preparers, reporter) ---------------------------------------------

    def taken(self, job_id: str, model: str) -> None:
        """Main thread: a job of ``model`` was dequeued; the model stays until it ends."""
        with self._lock:
            self._seats[job_id] = _Seat(model)
            holding = self._held.get(model)
            if holding is not None:
                holding.running += 1

    def released(self, job_id: str) -> None:
        """A job's slot is free: its model was used now, and keeps the keep-alive the job
        asked for (Ollama's ``keep_alive``: the latest request's wins)."""
        with self._lock:
            seat = self._seats.pop(job_id, None)
            holding = self._held.get(seat.model) if seat else None
            if seat is None or holding is None:
                return
            holding.running = max(0, holding.running - 1)
            holding.last_used = time.time()
            if seat.keep_alive is not None:
                holding.keep_alive = _keep_alive(seat.keep_alive)
                holding.unload_asked = seat.keep_alive == 0

    def set_keep_alive(self, model: str, seconds: float) -> None:
        """A load request's keep-alive (Ollama's request without a prompt), from now."""
        with self._lock:
            holding = self._held.get(model)
            if holding is not None:
                holding.keep_alive = _keep_alive(seconds)
                holding.last_used = time.time()
                holding.unload_asked = seconds == 0

    def load_wait(self, model: str, enqueued_at: float | None) -> float:
        """Seconds a job enqueued at ``enqueued_at`` (Unix time) waited for ``model`` to
        load here: the part of its load it was queued for (0 when it came later)."""
        holding = self._held.get(model)
        if holding is None or holding.load_s <= 0:
            return 0.0
        end = holding.load_started_at + holding.load_s
        start = max(holding.load_started_at, enqueued_at or holding.load_started_at)
        return round(min(holding.load_s, max(0.0, end - start)), 3)

    # -- models (main thread) ---------------------------------------------------------------

    def held(self) -> list[str]:
        return list(self._held)

    def loading(self) -> list[str]:
        return list(self._loading)

    def is_busy(self, model: str) -> bool:
        holding = self._held.get(model)
        return holding is not None and holding.running > 0

    def used_bytes(self) -> int:
        return self._bases.total_bytes() + sum(h.own_bytes for h in self._held.values())

    def free_bytes(self) -> int:
        return max(0, self.budget - self.used_bytes()) if self.budget else 1 << 62

    def freeable_bytes(self, model: str) -> int:
        """What unloading ``model`` alone would free."""
        holding = self._held[model]
        base = self._bases.get(holding.base) if holding.base else None
        alone = base is not None and self._bases.shared_with(holding.base or "") <= 1
        return holding.own_bytes + (base.nbytes if alone and base else 0)

    def load_default(self) -> LoadResult:
        """Start-up: load MLXQ_MODEL on this thread, held until a request says otherwise."""
        item = self.catalogue.item(self.model_id)
        assert item is not None, "the catalogue always holds the default model"
        result = self._loader.load_now(item)
        if isinstance(result, Loaded):
            self._hold(result, keep_alive=FOREVER)
        return result

    def order_load(self, item: Item) -> None:
        self._loading[item.entry.model] = time.monotonic()
        self._loader.load(LoadOrder(item))

    def collect(self) -> list[LoadResult]:
        """The loads finished since the last call; loaded models are held from now on."""
        results = self._loader.results()
        for result in results:
            self._loading.pop(result.model, None)
            if isinstance(result, Loaded):
                self._hold(result, keep_alive=self._default_keep_alive(result.model))
        return results

    def _default_keep_alive(self, model: str) -> float:
        """MLXQ_KEEP_ALIVE; the default model stays (until a request says otherwise)."""
        return FOREVER if model == self.model_id else _keep_alive(self._settings.keep_alive)

    def _hold(self, loaded: Loaded, keep_alive: float) -> None:
        now = time.time()
        holding = Holding(
            loaded.model,
            loaded.engine,
            loaded.own_bytes,
            loaded.base,
            loaded.started_at,
            loaded.seconds,
            keep_alive,
            now,
        )
        with self._lock:
            holding.running = sum(1 for s in self._seats.values() if s.model == loaded.model)
            self._held[loaded.model] = holding
        told = loaded.engine.facts.capabilities
        self.catalogue.measured(loaded.model, self.model_bytes(loaded.model), told)

    def model_bytes(self, model: str) -> int:
        """What ``model`` takes: its own arrays and its base's."""
        holding = self._held[model]
        base = self._bases.get(holding.base) if holding.base else None
        return holding.own_bytes + (base.nbytes if base else 0)

    def expired(self, now: float, asked: dict[str, float]) -> list[tuple[str, str]]:
        """Idle models to unload now: past their keep-alive, or asked to unload (``asked``:
        model -> when an unload was asked of the fleet). Never a worker group's model: its
        ranks could not load it again (the group stays until it is stopped)."""
        if joined() is not None:
            return []
        due = []
        for holding in list(self._held.values()):
            if holding.running:
                continue
            asked_at = asked.get(holding.model)
            if holding.unload_asked or (asked_at and asked_at >= holding.load_started_at):
                due.append((holding.model, "asked to unload (keep_alive 0)"))
            elif holding.expires_at is not None and now >= holding.expires_at:
                due.append((holding.model, f"idle for its keep-alive ({holding.keep_alive:g} s)"))
        return due

    def make_room(self, needed: int, keep: str | None = None) -> list[str] | None:
        """The idle models to unload, least recently used first, so that ``needed`` bytes
        are free; None when even all of them would not do (busy models are never unloaded)."""
        if not self.budget or self.free_bytes() >= needed:
            return []
        free = self.free_bytes()
        chosen = []
        idle = sorted(
            (h for h in self._held.values() if not h.running and h.model != keep),
            key=lambda h: h.last_used,
        )
        for holding in idle:
            chosen.append(holding.model)
            free += self.freeable_bytes(holding.model)
            if free >= needed:
                return chosen
        return None

    def overflow(self, keep: str) -> list[str]:
        """Idle models to unload, least recently used first, while the held models take
        more than the budget (a model measured larger than its estimate)."""
        excess = self.used_bytes() - self.budget
        if not self.budget or excess <= 0:
            return []
        chosen = []
        idle = sorted(
            (h for h in self._held.values() if not h.running and h.model != keep),
            key=lambda h: h.last_used,
        )
        for holding in idle:
            if excess <= 0:
                break
            chosen.append(holding.model)
            excess -= self.freeable_bytes(holding.model)
        return chosen

    def unload(self, model: str) -> None:
        """Stop the model's engine and let go of its weights (its base's too, if no other
        held model uses it)."""
        with self._lock:
            holding = self._held.pop(model, None)
        if holding is None:
            return
        holding.engine.stop()
        self._retired_tokens += holding.engine.generated_tokens
        self._retired_peak = max(self._retired_peak, holding.engine.peak_batch_size)
        retired = holding.engine.speculation_report()
        self._retired_drafts.proposed += retired.proposed
        self._retired_drafts.accepted += retired.accepted
        if holding.base is not None:
            self._bases.release(holding.base, model)
        del holding
        release_freed_memory_if_mlx(self._settings)

    def report(self) -> list[HeldModel]:
        """What the heartbeat publishes of each held model."""
        with self._lock:
            holdings = list(self._held.values())
        return [
            HeldModel(
                model=h.model,
                host=self._host_name,
                bytes=self.model_bytes(h.model),
                own_bytes=self.freeable_bytes(h.model),
                base=h.base,
                running=h.running,
                last_used=h.last_used,
                expires_at=h.expires_at,
                loaded_at=h.load_started_at + h.load_s,
                load_s=round(h.load_s, 3),
                device="cpu" if self.device == "cpu" else "gpu",
            )
            for h in holdings
        ]

    def refuse_oversized(self, model: str) -> str | None:
        """After a load: a model measured larger than the whole budget is unloaded and
        refused from now on; returns why, or None when it fits."""
        if not self.budget or model not in self._held:
            return None
        size = self.model_bytes(model)
        if size <= self.budget:
            return None
        from shared.units import human_bytes

        why = (
            f"{model} takes {human_bytes(size)} loaded; this worker's budget is "
            f"{human_bytes(self.budget)} (MLXQ_MEMORY_BUDGET)."
        )
        self.unload(model)
        self.catalogue.refuse(model, ErrorCode.MODEL_TOO_LARGE, why)
        return why


def _keep_alive(seconds: float) -> float:
    """A keep-alive as a request or a setting gives it: negative (or infinite) is forever."""
    return FOREVER if seconds < 0 or seconds == FOREVER else seconds


def release_freed_memory_if_mlx(settings: Settings) -> None:
    if settings.engine in ("mlx", "embedding"):
        release_freed_memory()
