"""What the numbers were measured on, and the BLAS every system is given."""

import ctypes.util
import os
import platform
import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.procs import ROOT


def openblas_path() -> str | None:
    """The absolute path of the OpenBLAS that mlxq's workers load (worker/cpu_backend.py finds
    it with ``ctypes.util.find_library("openblas")``), for the baselines' LD_PRELOAD."""
    name = ctypes.util.find_library("openblas")
    if name is None:
        return None
    if os.path.isabs(name):
        return name
    try:
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        match = re.match(rf"\s*{re.escape(name)} \(.*\) => (\S+)", line)
        if match:
            return match.group(1)
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _git() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def _redis_version() -> str:
    server = shutil.which("redis-server")
    if server is None:
        return "not installed"
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip()


def describe(blas: str | None) -> dict[str, str]:
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "CPU": _cpu_model(),
        "nproc": str(
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "memory": f"{memory_kb / 1024 / 1024:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "MLX": _package("mlx"),
        "mlx-lm": _package("mlx-lm"),
        "rq": _package("rq"),
        "redis-py": _package("redis"),
        "redis-server": _redis_version(),
        "BLAS (all systems)": f"{blas} -> {os.path.realpath(blas)}" if blas else "MLX's own",
        "mlxq commit": _git(),
    }
