"""Models in the local Hugging Face cache: listing them, pulling one, removing one.

``mlxq pull`` and Ollama's ``POST /api/pull`` download with ``huggingface_hub``'s
``snapshot_download`` into the standard cache (``HF_HOME``, ``~/.cache/huggingface`` by
default), where mlx-lm and every other tool find them, and where workers whose catalogue
holds ``hf-cache`` (the default of MLXQ_MODELS) pick them up within a rescan
(worker/catalogue.py). A download that stops (Ctrl+C, a dropped network) resumes where it
stopped: ``huggingface_hub`` keeps the partial files and continues them. Without network a
pull fails at once with one line.

Only the hub's client library is used here: nothing imports MLX, so the API may call it.
"""

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.jinja",
    "tokenizer*",
]
"""What mlx-lm reads of a repository: its config, weights and tokenizer (not PyTorch's
``*.bin`` or GGUF copies that some repositories also hold)."""


class PullFailed(Exception):
    """A pull that cannot go on; the message is one line a person can act on."""


@dataclass(frozen=True)
class Progress:
    """Where a pull stands: bytes of the repository's files done, out of ``total``."""

    status: str
    completed: int = 0
    total: int = 0


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name))


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_models() -> dict[str, Path]:
    """Repo id -> the folder of its cached snapshot (the one its ``main`` ref names, else the
    newest), for every model repository in the cache."""
    root = cache_dir()
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for repo in sorted(root.glob("models--*")):
        snapshot = _snapshot(repo)
        if snapshot is not None:
            found[repo.name.removeprefix("models--").replace("--", "/")] = snapshot
    return found


def cached_path(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id``, or None when it was never pulled."""
    return _snapshot(cache_dir() / ("models--" + repo_id.replace("/", "--")))


def _snapshot(repo: Path) -> Path | None:
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = snapshots / ref.read_text().strip()
        if named.is_dir():
            return named
    candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return candidates[0] if candidates else None


def pull(repo_id: str, progress: Callable[[Progress], None] | None = None) -> Path:
    """Download ``repo_id``'s weights, config and tokenizer into the cache (resuming a pull
    that stopped); ``progress`` hears how far it is, from the downloading thread."""
    if not is_repo_id(repo_id):
        raise PullFailed(f"{repo_id!r} is not a Hugging Face repo id (org/name).")
    from huggingface_hub import snapshot_download

    report = progress or (lambda _: None)
    report(Progress("pulling manifest"))
    try:
        path = snapshot_download(
            repo_id, allow_patterns=WEIGHT_PATTERNS, tqdm_class=_progress_class(report)
        )
    except Exception as exc:
        raise PullFailed(_why(repo_id, exc)) from exc
    report(Progress("success"))
    return Path(path)


def _why(repo_id: str, exc: Exception) -> str:
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if name in (
        "LocalEntryNotFoundError",
        "ConnectError",
        "ConnectionError",
        "OfflineModeIsEnabled",
    ):
        return (
            f"cannot pull {repo_id}: the Hugging Face hub is unreachable (offline?); "
            "nothing was downloaded."
        )
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"cannot pull {repo_id}: no such repository on the hub, or it needs a token."
    return f"cannot pull {repo_id}: {name}: {text[:300]}"


def _progress_class(report: Callable[[Progress], None]) -> Any:
    """A tqdm class for ``snapshot_download`` that reports its byte bars, not drawing them."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Reported(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._bytes = kwargs.get("unit") == "B"
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if self._bytes:
                report(Progress("downloading", self._done, int(self.total or 0)))
            return None

    return Reported


def remove(repo_id: str) -> int:
    """Delete ``repo_id`` from the cache; returns the bytes freed (0: it was not there)."""
    if not is_repo_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hugging Face repo id (org/name)")
    folder = cache_dir() / ("models--" + repo_id.replace("/", "--"))
    if not folder.is_dir():
        return 0
    freed = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    shutil.rmtree(folder)
    return freed


def disk_bytes(folder: Path) -> int:
    """Bytes a model's files take (a cached snapshot's links followed)."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
