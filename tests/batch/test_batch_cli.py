"""``mlxq batch``: submit a file, follow it, write the output; interrupted, re-attach. The
command runs as a real process, against the API and a worker on threads of this process."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.batch.test_batch_api import lines_file
from tests.faults.helpers import SLOW_ENGINE
from tests.support.processes import ROOT


def mlxq_batch(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlxq_cli", "batch", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_batch_command_writes_the_output_and_can_reattach(make_fleet, tmp_path: Path) -> None:
    with make_fleet(engine=SLOW_ENGINE, worker_concurrency=4) as fleet:
        check_batch_command(fleet.api, tmp_path)


def check_batch_command(api: str, tmp_path: Path) -> None:
    env = {"MLXQ_PORT": api.rsplit(":", 1)[1]}
    requests = tmp_path / "in.jsonl"
    requests.write_bytes(lines_file(6))
    output = tmp_path / "out.jsonl"

    command = mlxq_batch([str(requests), "-o", str(output)], env)
    _, errors = command.communicate(timeout=60)
    assert command.returncode == 0, errors
    assert "completed: 6 answered, 0 failed of 6" in errors
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"r{i}" for i in range(6)]

    requests.write_bytes(lines_file(8, max_tokens=10))
    command = mlxq_batch([str(requests), "-o", str(output)], env)
    time.sleep(3)
    command.send_signal(signal.SIGINT)
    _, errors = command.communicate(timeout=30)
    assert command.returncode == 130, errors
    batch_id = re.search(r"--attach (batch_\w+)", errors)
    assert batch_id is not None, errors
    output.unlink()
    command = mlxq_batch(["--attach", batch_id.group(1), "-o", str(output)], env)
    _, errors = command.communicate(timeout=60)
    assert command.returncode == 0, errors
    assert len(output.read_text().splitlines()) == 8
