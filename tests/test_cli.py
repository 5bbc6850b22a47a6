"""The ``mlxq`` command line: up, status, ask — as a user runs them (``mlxq`` is a real
process; what status and ask talk to runs on threads of this process where no process is
what is tested)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.faults.helpers import SLOW_ENGINE
from tests.support.processes import ROOT, free_port, wait_until


def mlxq(
    *args: str, env: dict[str, str], timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlxq_cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def test_up_starts_redis_api_and_worker_and_stops_them(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "MLXQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing there: up starts it
        "MLXQ_PORT": str(port),
        "MLXQ_CACHE_DIR": str(tmp_path),
        "MLXQ_ENGINE": "echo",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "mlxq_cli", "up", "--workers", "2"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                response = httpx.get(f"{api}/ready", timeout=1)
                return response.status_code == 200 and response.json()["workers"] == 2
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "mlxq up to be ready")
        answer = httpx.post(f"{api}/ask", json={"question": "hello from up"}, timeout=10)
        assert answer.json() == {"answer": "hello from up"}
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert "starting redis-server" in output
    assert (tmp_path / "redis" / "appendonlydir").is_dir()  # Redis ran with append-only files


def test_status_lists_workers_and_queues(make_fleet, mlxq_env: dict[str, str]) -> None:
    with make_fleet(model="model-s"):  # a worker on a thread of this process
        result = mlxq("status", env=mlxq_env)
    assert result.returncode == 0, result.stderr
    assert "workers (1 live)" in result.stdout
    assert "model-s" in result.stdout and "0/8" in result.stdout
    assert "queues" in result.stdout


def test_ask_streams_the_answer_to_the_terminal(make_fleet, mlxq_env: dict[str, str]) -> None:
    with make_fleet(engine=SLOW_ENGINE) as fleet:  # the API and a worker on threads
        port = fleet.api.rsplit(":", 1)[1]
        result = mlxq("ask", "anything", "--max-tokens", "5", env={**mlxq_env, "MLXQ_PORT": port})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "w0 w1 w2 w3 w4\n"


def test_ask_reports_errors_clearly(mlxq_env: dict[str, str]) -> None:
    result = mlxq("ask", "hi", env={**mlxq_env, "MLXQ_PORT": str(free_port())})
    assert result.returncode == 1
    assert "cannot reach the API" in result.stderr


def test_up_starts_an_embedding_worker_beside_the_chat_worker(
    tmp_path: Path, cache_dir: Path
) -> None:
    from worker.demo_embedding_model import prepare_demo_embedding_model

    folder = str(prepare_demo_embedding_model(cache_dir))  # a BertModel folder: auto engine
    port = free_port()
    env = {
        "MLXQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MLXQ_PORT": str(port),
        "MLXQ_CACHE_DIR": str(tmp_path),
        "MLXQ_ENGINE": "echo",  # the chat worker's; embedding workers choose their own
        "MLXQ_EMBEDDING_MODEL": folder,
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "mlxq_cli", "up", "--workers", "1", "--embedding-workers", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = f"http://127.0.0.1:{port}"
    try:

        def both_live() -> bool:  # the embedding model counts once its worker beats
            try:
                fleet = httpx.get(f"{api}/ready", timeout=1)
                embedded = httpx.post(
                    f"{api}/v1/embeddings", json={"model": folder, "input": "a"}, timeout=30
                )
                return fleet.status_code == 200 and embedded.status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(both_live, 60, "mlxq up to start both workers", interval=0.5)
        answer = httpx.post(f"{api}/ask", json={"question": "still here"}, timeout=10)
        assert answer.json() == {"answer": "still here"}
        embedded = httpx.post(
            f"{api}/v1/embeddings", json={"model": folder, "input": ["a", "b"]}, timeout=30
        )
        assert [len(d["embedding"]) for d in embedded.json()["data"]] == [384, 384]
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert "1 embedding worker(s)" in output


def test_up_gives_children_the_drain_timeout_and_a_margin_to_stop(monkeypatch) -> None:
    """A worker finishing its jobs within MLXQ_DRAIN_TIMEOUT is not killed (before: a fixed
    70 s, whatever the drain timeout); one that stops answering is, after the margin."""
    from mlxq_cli import supervisor
    from shared.settings import Settings

    assert supervisor.stop_timeout_s(Settings(drain_timeout=300)) > 300
    monkeypatch.setattr(supervisor, "STOP_MARGIN_S", 0.5)
    timeout_s = supervisor.stop_timeout_s(Settings(drain_timeout=1.0))
    draining = "import signal, sys, time\n" + (
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(0)))\ntime.sleep(60)\n"
    )
    stuck = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    children = [subprocess.Popen([sys.executable, "-c", code]) for code in (draining, stuck)]
    time.sleep(0.5)  # their handlers are installed
    started = time.monotonic()
    supervisor._stop_all(children, timeout_s)
    stopped_after = time.monotonic() - started
    assert children[0].returncode == 0  # drained in time, not killed
    assert children[1].wait(5) == -signal.SIGKILL
    assert timeout_s <= stopped_after < timeout_s + 1


def test_group_runs_mlx_launch_over_mlxq_worker_with_this_interpreter() -> None:
    from mlxq_cli.group import launcher_argv

    local = launcher_argv(None, None, ["--starting-port", "40000"])
    assert local[:3] == [sys.executable, "-m", "mlxq_cli.launcher"]  # mlx.launch, blocking
    assert local[3:] == [
        "--backend", "ring", "-n", "2", "--starting-port", "40000",
        "--python", sys.executable, "-m", "mlxq_cli", "worker",
    ]  # fmt: skip
    across = launcher_argv(None, "hosts.json", [])
    assert across[3:5] == ["--hostfile", "hosts.json"]
    assert "-n" not in across


def test_mlxq_group_finds_the_output_loop_it_replaces_in_this_mlx() -> None:
    """mlxq_cli/launcher.py swaps MLX's private ``_launch_with_io``: an MLX upgrade that
    renames it fails here rather than letting mlxq group poll again unnoticed."""
    from mlx._distributed_utils import launch

    assert callable(launch._launch_with_io)


def test_a_worker_groups_stats_reach_fleet_and_status() -> None:
    from mlxq_cli.commands import _host_text
    from shared.fleet_view import _worker_row
    from shared.protocol import WorkerStats

    stats = WorkerStats(
        model="m", host="a", group_ranks=2, group_hosts=["a", "b"], group_split="pipeline"
    )
    fields = {k.encode(): str(v).encode() for k, v in stats.to_hash().items()}
    again = WorkerStats.from_hash(fields)
    row = _worker_row("w", 0.0, again)
    assert row["group"] == {"ranks": 2, "hosts": ["a", "b"], "split": "pipeline"}
    assert _host_text(row) == "a,b (2 ranks, pipeline)"
    assert _worker_row("w", 0.0, WorkerStats(model="m", host="a"))["group"] is None
