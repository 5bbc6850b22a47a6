"""Ship what is tested: the wheel a user gets from ``pip install .`` runs mlxq.

Everything else in the suite imports the checkout (an editable install, PYTHONPATH set to the
repository root), so it passes even when the wheel leaves out a package or a data file: a
hand-written package list once missed ``api/batch/``, and ``mlxq api`` from an installed wheel
died with ModuleNotFoundError while every other test passed. These tests build the wheel,
install it (not editable) in a scratch virtual environment and start the API and a worker
from that install (tests/support/installed.py says how, without downloading dependencies).
"""

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.installed import (
    PACKAGES,
    ScratchInstall,
    build_wheel,
    clone_files,
    copy_tree,
    import_origins,
    install_in_scratch_venv,
    wheel_files,
)
from tests.support.processes import ROOT, Processes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """The clone's files, and the wheel built from a copy of them."""
    names = clone_files(ROOT)
    source = copy_tree(ROOT, names, tmp_path_factory.mktemp("source"))
    return names, build_wheel(source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(
    built: tuple[list[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> ScratchInstall:
    return install_in_scratch_venv(built[1], tmp_path_factory.mktemp("venv") / "venv")


@pytest.fixture
def installed_processes(installed: ScratchInstall, tmp_path: Path) -> Iterator[Processes]:
    """``mlxq api`` and ``mlxq worker`` from the scratch install, run in a temporary folder."""
    started = Processes(tmp_path, program=installed.mlxq)
    yield started
    started.stop_all()


def test_wheel_ships_every_file_of_the_packages_and_nothing_else(
    built: tuple[list[str], Path],
) -> None:
    names, wheel = built
    in_packages = {name for name in names if name.split("/", 1)[0] in PACKAGES}
    shipped = wheel_files(wheel)
    assert sorted(in_packages - shipped) == []  # modules and data files (the web page)
    assert sorted(shipped - in_packages) == []  # no tests/, bench/, scripts/


def test_installed_packages_are_imported_from_the_scratch_install(
    installed: ScratchInstall, tmp_path: Path
) -> None:
    origins = import_origins(installed, cwd=tmp_path)
    assert origins == {name: installed.site_packages / name for name in PACKAGES}


def test_installed_api_and_worker_answer_ask_and_serve_the_web_page(
    installed_processes: Processes, mlxq_env: dict[str, str], cache_dir: Path
) -> None:
    from worker.demo_model import prepare_demo_model

    prepare_demo_model(cache_dir)  # once per cache (the e2e tests share it): no download here
    installed_processes.worker(mlxq_env)
    base_url = installed_processes.api(mlxq_env)

    response = httpx.post(
        f"{base_url}/ask", json={"question": "What is 2 + 2?", "max_tokens": 8}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert response.json()["answer"].strip()

    page = httpx.get(f"{base_url}/", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    assert assets, page.text[:500]
    missing = [a for a in assets if httpx.get(f"{base_url}{a}", timeout=10).status_code != 200]
    assert missing == []
