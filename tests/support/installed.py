"""mlxq as a user installs it: a wheel built from this working tree, installed (not editable)
in a scratch virtual environment.

The rest of the suite imports the checkout itself (an editable install, ``PYTHONPATH`` set to
the repository root), which hides a package or data file that the wheel leaves out. Here the
wheel is built the way ``pip install .`` builds it (with build isolation, from
``[build-system]``), from a copy of the files a clone has, so that a stale ``build/`` folder
in the checkout cannot fill a gap. Only mlxq itself is installed in the scratch environment:
its dependencies are this interpreter's, seen through a ``.pth`` file, so nothing is
downloaded again. The directories a ``.pth`` file adds are not site directories, so the
``.pth`` files inside them (this environment's editable install of mlxq among them) do not
run: ``import api`` finds the installed copy or nothing.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import without_pythonpath

PACKAGES = ("api", "worker", "shared", "mlxq_cli")
"""The top-level packages mlxq ships (pyproject.toml's [tool.setuptools.packages.find])."""

BUILD_TIMEOUT_S = 180
"""Building the wheel: its build environment may have to fetch setuptools (pip caches it)."""

INSTALL_TIMEOUT_S = 120


def clone_files(root: Path) -> list[str]:
    """The working tree's files that a clone of it would have once committed: tracked and
    untracked ones, less what .gitignore names (.venv, build/, caches), less deleted ones."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return sorted(name for name in listed if name and (root / name).is_file())


def copy_tree(root: Path, names: list[str], destination: Path) -> Path:
    for name in names:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return destination


def _run(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    """Run without PYTHONPATH (it would import the checkout); the output in the error."""
    env = {**without_pythonpath(os.environ), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(source: Path, wheel_dir: Path) -> Path:
    """``pip wheel`` of ``source`` (no dependencies), as ``pip install .`` would build it."""
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheel_dir), "."],
        BUILD_TIMEOUT_S,
        cwd=source,
    )
    (wheel,) = wheel_dir.glob("mlxq-*.whl")
    return wheel


def wheel_files(wheel: Path) -> set[str]:
    """The files the wheel installs, less its own metadata (``*.dist-info/``)."""
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


@dataclass(frozen=True)
class ScratchInstall:
    """A virtual environment with the wheel installed and this interpreter's dependencies."""

    python: Path
    mlxq: Path
    site_packages: Path


def install_in_scratch_venv(wheel: Path, venv: Path) -> ScratchInstall:
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], INSTALL_TIMEOUT_S)
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 30
        ).strip()
    )
    ours = sysconfig.get_paths()
    dependencies = dict.fromkeys([ours["purelib"], ours["platlib"]])  # once each, in order
    (site_packages / "mlxq-test-dependencies.pth").write_text(
        "".join(f"{d}\n" for d in dependencies)
    )
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + ["--no-deps", "--no-index", str(wheel)],
        INSTALL_TIMEOUT_S,
    )
    return ScratchInstall(python=python, mlxq=venv / "bin" / "mlxq", site_packages=site_packages)


def import_origins(install: ScratchInstall, cwd: Path) -> dict[str, Path]:
    """Where the scratch interpreter imports each of mlxq's packages from, run in ``cwd``
    without PYTHONPATH, as the installed ``mlxq`` script runs."""
    code = "; ".join(
        [f"import {', '.join(PACKAGES)}"] + [f"print({name}.__path__[0])" for name in PACKAGES]
    )
    lines = _run([str(install.python), "-c", code], 60, cwd=cwd).splitlines()
    return {name: Path(line) for name, line in zip(PACKAGES, lines, strict=True)}
