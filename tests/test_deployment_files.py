"""The Procfile and docker-compose.yml describe the processes the docs promise (Docker is not
available here, so compose is checked for syntax and content, not run)."""

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid_and_complete() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "api", "worker"}
    assert "--appendonly" in services["redis"]["command"]
    assert (
        services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1]
        == "yes"
    )
    assert services["api"]["command"] == ["mlxq", "api"]
    assert services["worker"]["command"] == ["mlxq", "worker"]
    for name in ("api", "worker"):
        assert services[name]["environment"]["MLXQ_REDIS_URL"] == "redis://redis:6379/0"
    assert services["api"]["ports"] == ["127.0.0.1:5015:5015"]
    assert (ROOT / services["api"]["build"] / "Dockerfile").is_file()


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker client not installed")
def test_compose_file_passes_docker_compose_config() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    if "is not a docker command" in result.stderr or "unknown" in result.stderr.lower():
        pytest.skip("docker compose plugin not installed")
    assert result.returncode == 0, result.stderr


def test_procfile_runs_redis_api_and_worker_through_the_console_script() -> None:
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert entries["api"].strip() == "mlxq api"
    assert entries["worker"].strip() == "mlxq worker"
    assert "--appendonly yes" in entries["redis"]
    assert "--bind 127.0.0.1" in entries["redis"]  # not reachable from the network
    assert "--maxmemory 1gb --maxmemory-policy noeviction" in entries["redis"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mlxq"] == "mlxq_cli:main"
