"""Loading a model into an engine, on the loader thread, while the held models generate.

The main thread orders a load (``ModelLoader.load``: a ``LoadOrder``); the loader thread
reads the weights, builds the model's engine (its own thread, started here) and answers with
``Loaded`` or ``LoadFailed`` in its outbox, which the main thread empties at every turn of its
loop (``ModelLoader.results``). One load at a time: a second order waits for the first.

Loading is gentle with the models already generating: weights are evaluated layer by layer
on a stream of the loader's own, and the CPU backend's float32 expansion goes in blocks
(worker/cpu_backend.py), so decoding beside a load slows (two cores shared) but never stops.

Base weights are loaded once per worker (``Bases``): a model and its LoRA adapters, or
several adapters of one base, share them (worker/adapters.py).
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ErrorCode
from shared.settings import Settings
from worker.catalogue import Item
from worker.engine_api import Emit, Engine
from worker.group.ranks import GroupInfo, joined
from worker.memory import array_bytes, arrays_of
from worker.startup_error import StartupError

log = logging.getLogger(__name__)


@dataclass
class Base:
    """Weights loaded once, used by one model and its adapters (``users``)."""

    loaded: Any
    """worker.model.LoadedModel of the base model."""
    nbytes: int
    array_ids: frozenset[int]
    users: set[str] = field(default_factory=set)


class Bases:
    """The base weights a worker holds, by folder. Used by the loader thread (to load or
    reuse one) and the main thread (to let go of one when a model unloads): under a lock."""

    def __init__(self) -> None:
        self._bases: dict[str, Base] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Base | None:
        with self._lock:
            return self._bases.get(key)

    def use(self, key: str, model: str, base: Base | None = None) -> Base:
        """Register ``model`` as a user of the base at ``key`` (``base``: newly loaded)."""
        with self._lock:
            held = self._bases.get(key)
            if held is None:
                assert base is not None, "a base must be loaded before it is used"
                held = self._bases[key] = base
            held.users.add(model)
            return held

    def release(self, key: str, model: str) -> int:
        """``model`` no longer uses the base; returns the bytes freed (0 while another
        model still uses it)."""
        with self._lock:
            base = self._bases.get(key)
            if base is None:
                return 0
            base.users.discard(model)
            if base.users:
                return 0
            del self._bases[key]
            return base.nbytes

    def total_bytes(self) -> int:
        with self._lock:
            return sum(base.nbytes for base in self._bases.values())

    def shared_with(self, key: str) -> int:
        """How many models use the base now."""
        with self._lock:
            base = self._bases.get(key)
            return len(base.users) if base else 0


@dataclass(frozen=True)
class LoadOrder:
    item: Item


@dataclass(frozen=True)
class Loaded:
    model: str
    engine: Engine
    own_bytes: int
    """Its own arrays (an adapter's LoRA weights; 0 for a model that is its own base)."""
    base: str | None
    """The key of the base weights it uses (``Bases``), or None (a plug-in engine)."""
    started_at: float
    """Unix time the load began."""
    seconds: float


@dataclass(frozen=True)
class LoadFailed:
    model: str
    code: ErrorCode
    why: str
    seconds: float


LoadResult = Loaded | LoadFailed


class ModelLoader:
    """The loader thread and its two queues (its inbox of orders, its outbox of results)."""

    def __init__(self, settings: Settings, emit: Emit, bases: Bases) -> None:
        self._settings = settings
        self._emit = emit
        self._bases = bases
        self._orders: queue.Queue[LoadOrder | None] = queue.Queue()
        self._results: queue.Queue[LoadResult] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mlxq-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._orders.put(None)
        self._thread.join(timeout=60)

    def load(self, order: LoadOrder) -> None:
        """Main thread: load this model on the loader thread."""
        self._orders.put(order)

    def results(self) -> list[LoadResult]:
        """Main thread: the loads finished since the last call."""
        done = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                return done

    def load_now(self, item: Item) -> LoadResult:
        """Load on the calling thread (the default model, at start-up)."""
        return load_item(item, self._settings, self._emit, self._bases)

    def _run(self) -> None:
        import mlx.core as mx

        stream = mx.new_thread_local_stream(mx.default_device())
        with mx.stream(stream):
            while (order := self._orders.get()) is not None:
                self._results.put(load_item(order.item, self._settings, self._emit, self._bases))


def load_item(item: Item, settings: Settings, emit: Emit, bases: Bases) -> LoadResult:
    """Build ``item``'s engine (loading its weights), started; or say why it failed."""
    model = item.entry.model
    started_at, clock = time.time(), time.monotonic()
    log.info("loading %s", model)
    try:
        engine, own_bytes, base = _build(item, settings, emit, bases)
    except StartupError as exc:  # says what to do already (a plug-in engine that is not one)
        return LoadFailed(model, ErrorCode.MODEL_LOAD_FAILED, str(exc), time.monotonic() - clock)
    except Exception as exc:  # a load failure is the model's, never the worker's
        log.warning("could not load %s: %s: %s", model, type(exc).__name__, exc)
        log.debug("the load of %s failed", model, exc_info=True)
        why = f"Could not load the model {model!r}: {type(exc).__name__}: {exc}"
        return LoadFailed(model, ErrorCode.MODEL_LOAD_FAILED, why, time.monotonic() - clock)
    engine.start()
    seconds = time.monotonic() - clock
    log.info("loaded %s in %.1f s", model, seconds)
    return Loaded(model, engine, own_bytes, base, started_at, seconds)


def _build(
    item: Item, settings: Settings, emit: Emit, bases: Bases
) -> tuple[Engine, int, str | None]:
    model = item.entry.model
    own_settings = settings.model_copy(update={"model": model})
    if item.engine == "mlx":
        return _mlx_engine(item, own_settings, emit, bases, is_default=model == settings.model)
    if item.engine == "embedding":
        from worker.embedding_engine import EmbeddingEngine

        folder = item.folder or Path(model)
        engine: Engine = EmbeddingEngine(
            own_settings.model_copy(update={"model": str(folder)}), emit
        )
        engine.model_id = model
        return engine, engine.weights_bytes, None
    from worker.main import build_engine

    engine = build_engine(own_settings, emit)
    return engine, getattr(engine, "weights_bytes", 0), None


def _mlx_engine(
    item: Item, settings: Settings, emit: Emit, bases: Bases, *, is_default: bool
) -> tuple[Engine, int, str]:
    from worker.draft_model import load_draft_model
    from worker.mlx_engine import MLXEngine
    from worker.model import LoadedModel, suggested_temperature

    assert item.folder is not None
    base_folder = item.base_folder or item.folder
    key = str(base_folder)
    group = joined() if is_default else None  # a group serves its own model only
    base = bases.get(key) or _load_base(
        base_folder, settings.cpu_dequantize, group, settings.group_split
    )
    model, own_bytes = base.loaded.model, 0
    if item.entry.kind == "adapter":
        from worker.adapters import with_adapter

        model = with_adapter(base.loaded.model, item.folder)
        own_bytes = array_bytes(arrays_of(model), set(base.array_ids))
    _warm_up(model)
    loaded = LoadedModel(
        model_id=item.entry.model,
        path=base_folder,
        model=model,
        tokenizer=base.loaded.tokenizer,
        context_length=base.loaded.context_length,
        temperature=suggested_temperature(base_folder),
        facts=base.loaded.facts,
    )
    draft = load_draft_model(settings, loaded, is_default=is_default)
    if draft is not None:  # loaded for this model alone: its own bytes
        own_bytes += draft.nbytes
    engine: MLXEngine
    if group is not None:
        from worker.group.engine import GroupEngine

        engine = GroupEngine(settings, emit, loaded=loaded, draft=draft, group=group)
    else:
        engine = MLXEngine(settings, emit, loaded=loaded, draft=draft)
    engine.weights_bytes = own_bytes
    bases.use(key, item.entry.model, base)
    return engine, own_bytes, key


WARM_UP_TOKENS = 4


def _warm_up(model: Any) -> None:
    """A prefill of a few tokens and one decode step, on the loader thread: MLX's first
    call of a model allocates and prepares what every later call reuses (about 0.7 s on two
    cores for the demo model), which would otherwise land on the first request's first token
    instead of the load's time."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    mx.eval(model(mx.zeros((1, WARM_UP_TOKENS), dtype=mx.int32), cache=cache))
    mx.eval(model(mx.zeros((1, 1), dtype=mx.int32), cache=cache))


def _load_base(
    folder: Path, cpu_dequantize: bool, group: GroupInfo | None = None, split: str = "auto"
) -> Base:
    """A model's weights and tokenizer, evaluated layer by layer (see the module doc); in a
    worker group, only this rank's share of them (worker/group/split.py)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model, load_tokenizer

    from worker.cpu_backend import dequantize_to_float32, on_cpu
    from worker.model import LoadedModel, context_length
    from worker.model_facts import chat_model_facts

    model, config = load_model(folder, lazy=True)
    expand = cpu_dequantize and on_cpu()
    if group is not None:
        from worker.group.split import apply_split, choose_split

        group.split = choose_split(model, group.size, split)
        if group.split == "tensor" and expand:  # mlx-lm slices plain layers only
            dequantize_to_float32(model)
            expand = False
        apply_split(model, group.group, group.split)
        log.info(
            "rank %d of %d: %s-parallel share of %s", group.rank, group.size, group.split, folder
        )
    leaves: Any = tree_flatten(model.leaf_modules(), is_leaf=lambda m: isinstance(m, nn.Module))
    for _, leaf in leaves:
        mx.eval(leaf.parameters())
    tokenizer = load_tokenizer(folder, eos_token_ids=config.get("eos_token_id"))
    if expand:
        expanded = dequantize_to_float32(model)
        log.info("CPU backend: expanded %d quantized layers of %s to float32", expanded, folder)
    arrays = arrays_of(model)
    loaded = LoadedModel(
        model_id=str(folder),
        path=folder,
        model=model,
        tokenizer=tokenizer,
        context_length=context_length(folder),
        facts=chat_model_facts(tokenizer),
    )
    return Base(loaded, array_bytes(arrays), frozenset(id(a) for a in arrays))
