"""A worker's catalogue: every model it may load on demand, with what its files say.

MLXQ_MODEL comes first (the default model, loaded at start), then each item of MLXQ_MODELS:

- a demo model id (``mlxq/SmolLM2-135M-Instruct-Q4_1``, ``mlxq/all-MiniLM-L6-v2``);
- a local MLX model folder (``config.json`` and safetensors), served under the path given;
- a LoRA adapter folder as ``mlx_lm.lora`` writes it (``adapter_config.json``, whose
  ``model`` names the base, and ``adapters.safetensors``), served as a model of its own;
- a folder that holds such folders: each one inside, as ``<folder>/<name>``;
- a Hugging Face repo id already in the local cache (``mlxq pull`` puts it there);
- ``hf-cache``: every model in the local Hugging Face cache that mlx-lm can load.

With a plug-in engine (MLXQ_ENGINE other than ``mlx``: the echo engine, test engines) the
items are bare names, with no files to read.

The catalogue is scanned again every RESCAN_S seconds (a pull, a new folder), on the main
thread. A model this worker cannot serve stays listed with the reason (``refuse``): one
whose load failed, until its files change; one whose memory exceeds the budget.
"""

import importlib.util
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from shared import hub_cache
from shared.errors import ErrorCode
from shared.protocol import CatalogueEntry
from shared.settings import DEMO_EMBEDDING_MODEL_ID, DEMO_MODEL_ID, Settings
from shared.units import human_bytes
from worker import model_files
from worker.model import resolve_model_path
from worker.startup_error import StartupError

log = logging.getLogger(__name__)

HF_CACHE = "hf-cache"
RESCAN_S = 15.0
"""How often the catalogue is read again (a model pulled meanwhile appears within this)."""

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Item:
    """A catalogue entry and what the loader needs to load it."""

    entry: CatalogueEntry
    folder: Path | None = None
    """The model's folder (an adapter's own folder); None for a plug-in engine's name."""
    base_folder: Path | None = None
    """An adapter's base model folder."""
    engine: str = "mlx"
    """"mlx", "embedding", or MLXQ_ENGINE's plug-in."""
    fingerprint: Fingerprint = ()


class Catalogue:
    """The main thread's own (it scans, refuses and measures)."""

    def __init__(self, settings: Settings, budget: int, expand_quantized: bool) -> None:
        """``budget``: MLXQ_MEMORY_BUDGET in bytes (0: none); ``expand_quantized``: this worker
        expands quantized weights to float32 (the CPU backend)."""
        self._settings = settings
        self._budget = budget
        self._expand = expand_quantized
        self._items: dict[str, Item] = {}
        self._refusals: dict[str, tuple[Fingerprint, ErrorCode, str]] = {}
        self._measured: dict[str, tuple[Fingerprint, int, list[str]]] = {}
        self._scanned_at = float("-inf")

    @property
    def default_model(self) -> str:
        return self._settings.model

    def item(self, model: str) -> Item | None:
        return self._items.get(model)

    def models(self) -> list[str]:
        return list(self._items)

    def entries(self) -> list[CatalogueEntry]:
        return [item.entry for item in self._items.values()]

    def due(self, now: float) -> bool:
        return now - self._scanned_at >= RESCAN_S

    def scan(self) -> bool:
        """Read the catalogue again; returns whether it changed. Raises StartupError when the
        default model cannot be found (the worker cannot start without it)."""
        self._scanned_at = time.monotonic()
        items = {self._settings.model: self._default_item()}
        for spec in _split(self._settings.models):
            for item in self._resolve(spec):
                items.setdefault(item.entry.model, item)
        items = {model: self._judged(item) for model, item in items.items()}
        changed = items != self._items
        if changed:
            log.info("catalogue: %d model(s): %s", len(items), ", ".join(items))
        self._items = items
        return changed

    def refuse(self, model: str, code: ErrorCode, why: str) -> None:
        """This worker cannot serve ``model`` until its files change (a failed load, or it
        measured larger than the budget)."""
        item = self._items.get(model)
        if item is None:
            return
        self._refusals[model] = (item.fingerprint, code, why)
        self._items[model] = self._judged(item)

    def measured(self, model: str, memory_bytes: int, capabilities: tuple[str, ...] = ()) -> None:
        """What ``model`` took when loaded (it replaces the estimate from its files), and what
        its loaded tokenizer says it can do (fill-in-the-middle, thinking)."""
        item = self._items.get(model)
        if item is not None:
            self._measured[model] = (item.fingerprint, memory_bytes, list(capabilities))
            self._items[model] = self._judged(item)

    # -- judging an entry against this worker ----------------------------------------------

    def _judged(self, item: Item) -> Item:
        entry = item.entry.model_copy(update={"refused": None, "refusal": None})
        measured = self._measured.get(entry.model)
        if measured is not None and measured[0] == item.fingerprint:
            entry.memory_bytes, entry.measured = measured[1], True
            entry.capabilities = measured[2] or entry.capabilities
        refusal = self._refusals.get(entry.model)
        if refusal is not None and refusal[0] != item.fingerprint:
            log.info("catalogue: %s changed on disk; it may be loaded again", entry.model)
            del self._refusals[entry.model]
            refusal = None
        if refusal is not None:
            entry.refusal, entry.refused = refusal[1], refusal[2]
        elif self._budget and (entry.memory_bytes or 0) > self._budget:
            entry.refusal = ErrorCode.MODEL_TOO_LARGE
            entry.refused = (
                f"{entry.model} needs {human_bytes(entry.memory_bytes or 0)} of memory loaded; "
                f"this worker's budget is {human_bytes(self._budget)} (MLXQ_MEMORY_BUDGET)."
            )
        return replace(item, entry=entry)

    # -- reading the settings ----------------------------------------------------------------

    def _default_item(self) -> Item:
        model = self._settings.model
        if self._settings.engine not in ("mlx", "embedding"):
            return Item(CatalogueEntry(model=model), engine=self._settings.engine)
        folder = resolve_model_path(model, self._settings.cache_dir)  # StartupError if not
        item = self._folder_item(model, folder)
        if item is None:
            raise StartupError(f"MLXQ_MODEL={model!r} is not a model mlxq can serve.")
        if self._settings.engine == "embedding":
            item = replace(item, engine="embedding")
        return item

    def _resolve(self, spec: str) -> list[Item]:
        if self._settings.engine not in ("mlx", "embedding"):
            if spec == HF_CACHE:
                return []
            return [Item(CatalogueEntry(model=spec), engine=self._settings.engine)]
        if spec == HF_CACHE:
            items = [self._folder_item(r, f) for r, f in hub_cache.cached_models().items()]
            return [i for i in items if i is not None and _mlx_lm_knows(i)]
        folder = self._folder_of(spec)
        if folder is None:
            return []
        item = self._folder_item(spec, folder)
        if item is not None:
            return [item]
        children = [self._folder_item(str(Path(spec) / c.name), c) for c in _subfolders(folder)]
        found = [child for child in children if child is not None]
        if not found:
            log.warning("MLXQ_MODELS: %s holds no model or adapter folder; skipped", spec)
        return found

    def _folder_of(self, spec: str) -> Path | None:
        if spec in (DEMO_MODEL_ID, DEMO_EMBEDDING_MODEL_ID):
            try:
                return resolve_model_path(spec, self._settings.cache_dir)
            except StartupError as exc:
                log.warning("MLXQ_MODELS: %s cannot be prepared (%s); skipped", spec, exc)
                return None
        path = Path(spec).expanduser()
        if path.is_dir():
            return path
        if hub_cache.is_repo_id(spec):
            cached = hub_cache.cached_path(spec)
            if cached is None:
                log.warning(
                    "MLXQ_MODELS: %s is not in the local Hugging Face cache (mlxq pull %s); "
                    "skipped",
                    spec,
                    spec,
                )
            return cached
        log.warning("MLXQ_MODELS: %s is neither a folder nor a repo id; skipped", spec)
        return None

    def _folder_item(self, model: str, folder: Path) -> Item | None:
        if model_files.is_adapter_folder(folder):
            return self._adapter_item(model, folder)
        if not model_files.is_model_folder(folder):
            return None
        config = model_files.read_config(folder)
        weights = model_files.weights(folder, config)
        embedding = model_files.is_embedding_config(config)
        entry = CatalogueEntry(
            model=model,
            kind="embedding" if embedding else "chat",
            path=str(folder),
            family=model_files.family(config),
            parameter_count=weights.parameters or None,
            quantization=model_files.quantization(config),
            context_length=model_files.context_length(config),
            disk_bytes=weights.disk_bytes,
            memory_bytes=weights.memory_bytes(self._expand and not embedding),
            modified_at=_modified_at(model_files.fingerprint(folder)),
        )
        engine = "embedding" if embedding else "mlx"
        return Item(entry, folder, engine=engine, fingerprint=model_files.fingerprint(folder))

    def _adapter_item(self, model: str, folder: Path) -> Item | None:
        adapter_config = model_files.read_config(folder, "adapter_config.json")
        base_id = adapter_config.get("model")
        base_folder = self._folder_of(str(base_id)) if isinstance(base_id, str) else None
        base = self._folder_item(str(base_id), base_folder) if base_folder else None
        own = model_files.weights(folder, {}, "adapters.safetensors")
        fingerprint = model_files.fingerprint(folder)
        if base is None or base.entry.kind != "chat":
            entry = CatalogueEntry(model=model, kind="adapter", base=str(base_id), path=str(folder))
            why = f"{model}: its base model {base_id!r} (adapter_config.json) cannot be found."
            self._refusals.setdefault(model, (fingerprint, ErrorCode.MODEL_LOAD_FAILED, why))
            return Item(entry, folder, fingerprint=fingerprint)
        entry = base.entry.model_copy(
            update={
                "model": model,
                "kind": "adapter",
                "base": base.entry.model,
                "path": str(folder),
                "parameter_count": (base.entry.parameter_count or 0) + own.parameters or None,
                "disk_bytes": own.disk_bytes,
                "memory_bytes": (base.entry.memory_bytes or 0) + own.memory_bytes(False),
                "modified_at": _modified_at(fingerprint),
            }
        )
        return Item(entry, folder, base.folder, fingerprint=fingerprint + base.fingerprint)


def _modified_at(fingerprint: Fingerprint) -> float | None:
    return max((mtime_ns for _, _, mtime_ns in fingerprint), default=0) / 1e9 or None


def _split(models: str) -> list[str]:
    return [part.strip() for part in models.split(",") if part.strip()]


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return []


def _mlx_lm_knows(item: Item) -> bool:
    """mlx-lm has an implementation of the model's architecture (the cache may hold models
    of other libraries)."""
    if item.entry.kind == "embedding":
        return True
    from mlx_lm.utils import MODEL_REMAPPING

    family = item.entry.family or ""
    name = MODEL_REMAPPING.get(family, family)
    return bool(name) and importlib.util.find_spec(f"mlx_lm.models.{name}") is not None
