"""``mlxq pull``, ``mlxq models`` and ``mlxq rm`` as a user runs them, on a Hugging Face
cache of the test's own (no hub is reachable: a pull fails at once, in one line)."""

import time
from pathlib import Path

from tests.support.hf_cache import cache_model
from tests.support.processes import Processes
from tests.test_cli import mlxq


def test_pull_without_the_hub_fails_at_once_in_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = mlxq("pull", "mlx-community/no-such-model", env={"HF_HUB_CACHE": str(tmp_path)})
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("mlxq pull: cannot pull mlx-community/no-such-model:")


def test_models_lists_the_fleet_and_this_machines_cache_and_rm_deletes(
    processes: Processes, mlxq_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "model.safetensors").write_bytes(b"x" * 4096)
    cache_model(tmp_path / "hf", "org/pulled", source)
    env = {
        **mlxq_env,
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "MLXQ_ENGINE": "echo",
        "MLXQ_MODEL": "model-a",
        "MLXQ_MODELS": "model-b",
    }
    processes.worker(env)
    listed = mlxq("models", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"model-a", "model-b", "org/pulled"}
    assert rows["model-b"].rstrip().endswith("-")  # listed, loaded nowhere
    assert "no worker lists it" in rows["org/pulled"] and "4.1 kB" in rows["org/pulled"]
    removed = mlxq("rm", "org/pulled", env=env)
    assert removed.returncode == 0 and "deleted org/pulled" in removed.stdout
    assert "org/pulled" not in mlxq("models", env=env).stdout
    again = mlxq("rm", "org/pulled", env=env)
    assert again.returncode == 1 and "not in the Hugging Face cache" in again.stderr
