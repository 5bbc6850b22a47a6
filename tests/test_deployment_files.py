"""The Procfile, docker-compose.yml and the Dockerfile describe the processes the docs promise.

Without a Docker engine (as on CI), compose is checked against the Compose Specification's
JSON schema (vendored in tests/data/) and for its content, and the Dockerfile for what it
copies; where an engine answers, the image is built too."""

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support.installed import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
IMAGE_BUILD_TIMEOUT_S = 1800
"""Building the image installs every locked dependency: minutes, not seconds."""


def compose_errors(compose: object) -> list[str]:
    """What the Compose Specification's schema finds wrong with ``compose`` (a parsed file)."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]


def dockerfile_copy_sources() -> list[str]:
    """The source paths of the Dockerfile's COPY instructions, continuation lines joined and
    flags (--chown=...) dropped; a COPY --from=<stage> copies from an image and is left out."""
    lines = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines()
    sources: list[str] = []
    for words in (line.split() for line in lines):
        if not words or words[0].upper() != "COPY":
            continue
        if any(word.startswith("--from=") for word in words[1:]):
            continue
        arguments = [word for word in words[1:] if not word.startswith("--")]
        if arguments[0].startswith("["):  # the exec form: COPY ["src", ..., "dest"]
            arguments = json.loads(" ".join(arguments))
        sources += arguments[:-1]
    return sources


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0


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


def test_compose_file_follows_the_compose_specification() -> None:
    assert compose_errors(yaml.safe_load((ROOT / "docker-compose.yml").read_text())) == []


def test_the_compose_schema_catches_a_misspelt_key_and_a_wrong_condition() -> None:
    """The vendored schema is enforced, not merely loaded."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose["services"]["api"]["comand"] = compose["services"]["api"].pop("command")
    compose["services"]["worker"]["depends_on"]["redis"]["condition"] = "healthy"
    errors = compose_errors(compose)
    assert any("'comand'" in error for error in errors), errors
    assert any("depends_on" in error for error in errors), errors


def test_every_path_the_dockerfile_copies_exists() -> None:
    sources = dockerfile_copy_sources()
    assert "pyproject.toml" in sources  # the parse found the COPY lines
    missing = [s for s in sources if s.strip("/") not in ("", ".") and not any(ROOT.glob(s))]
    assert missing == []


def test_the_image_copies_every_package_the_wheel_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {source.strip("/") for source in dockerfile_copy_sources()}
    assert shipped == set(PACKAGES)  # the packages tests/test_wheel.py checks in the wheel
    assert shipped <= copied


def test_dockerignore_leaves_out_nothing_the_dockerfile_copies() -> None:
    """A common '*.md' there would take README.md, which the package's build reads."""
    patterns = [
        line.strip().removeprefix("**/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in patterns and ".git" in patterns  # the parse found the file's lines
    ignored = [s for s in dockerfile_copy_sources() if any(fnmatch.fnmatch(s, p) for p in patterns)]
    assert ignored == []


@pytest.mark.timeout(IMAGE_BUILD_TIMEOUT_S + 60)
def test_the_image_builds_where_a_docker_engine_answers() -> None:
    if not docker_engine_answers():
        pytest.skip("no Docker engine answers `docker info` (a docker client alone is not enough)")
    result = subprocess.run(
        ["docker", "build", "--tag", "mlxq:test", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=IMAGE_BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]


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
