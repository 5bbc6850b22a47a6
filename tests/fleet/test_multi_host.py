"""Several hosts, one queue: Redis and the API on one host, a worker on each of two others,
all in network namespaces on this machine, connected through Redis's password.

Requests are served by both workers, and killing one host's worker under load loses none.
"""

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.keys import queue_name_for_model
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import ROOT, free_port, wait_until
from tests.support.redis_server import RedisServer

PASSWORD = "fleet-test-password"
API_KEY = "fleet-test-key"
SUBNET = "10.231"
"""Addresses of this test's own hosts, inside namespaces it creates (never routed out)."""


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


class Hosts:
    """A hub namespace joined to the test's own namespace and to two worker namespaces by
    veth pairs: hub 10.231.0.2 (seen from here), 10.231.1.1 and 10.231.2.1 (seen by the
    workers on 10.231.1.2 and 10.231.2.2)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.hub, self.workers = f"mlxq-hub-{tag}", [f"mlxq-w1-{tag}", f"mlxq-w2-{tag}"]
        self._links = [f"mq{tag}{i}" for i in range(3)]

    def create(self) -> None:
        for namespace in (self.hub, *self.workers):
            _run("ip", "netns", "add", namespace)
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
        self._link(self._links[0], None, f"{SUBNET}.0.1", self.hub, f"{SUBNET}.0.2")
        for i, namespace in enumerate(self.workers, start=1):
            self._link(self._links[i], self.hub, f"{SUBNET}.{i}.1", namespace, f"{SUBNET}.{i}.2")

    def _link(self, name: str, left_ns: str | None, left_ip: str, right_ns: str, right_ip: str):
        _run("ip", "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
        if left_ns is not None:
            _run("ip", "link", "set", f"{name}a", "netns", left_ns)
        _run("ip", "link", "set", f"{name}b", "netns", right_ns)
        left = ["ip", "-n", left_ns] if left_ns else ["ip"]
        _run(*left, "addr", "add", f"{left_ip}/24", "dev", f"{name}a")
        _run(*left, "link", "set", f"{name}a", "up")
        _run("ip", "-n", right_ns, "addr", "add", f"{right_ip}/24", "dev", f"{name}b")
        _run("ip", "-n", right_ns, "link", "set", f"{name}b", "up")

    def destroy(self) -> None:
        for namespace in (self.hub, *self.workers):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{self._links[0]}a"], capture_output=True)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip command")
    created = Hosts()
    try:
        created.create()
    except subprocess.CalledProcessError as exc:
        created.destroy()
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
    yield created
    created.destroy()


class Launcher:
    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []

    def start(self, namespace: str, name: str, command: list[str], env: dict[str, str]):
        log = open(self._tmp_path / f"{name}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_two_worker_hosts_serve_one_queue_and_survive_losing_one(
    hosts: Hosts, tmp_path: Path
) -> None:
    launcher = Launcher(tmp_path)
    api_port = free_port()
    hub_redis_server = RedisServer(
        tmp_path,
        password=PASSWORD,
        appendonly=True,
        bind=("127.0.0.1", f"{SUBNET}.1.1", f"{SUBNET}.2.1"),
        prefix=("ip", "netns", "exec", hosts.hub),  # reachable from the hub only: no wait
        log_path=tmp_path / "redis.log",
    )
    redis_port, hub_redis = hub_redis_server.port, hub_redis_server.url
    try:
        hub_redis_server.start(wait=False)
        common = {
            "MLXQ_ENGINE": "tests.support.engines:SlowEngine",
            "MLXQ_TEST_STEP_S": "0.05",
            "MLXQ_WORKER_CONCURRENCY": "4",
        }
        launcher.start(
            hosts.hub,
            "api",
            [sys.executable, "-m", "mlxq_cli", "api"],
            {
                **common,
                "MLXQ_REDIS_URL": hub_redis,
                "MLXQ_HOST": f"{SUBNET}.0.2",
                "MLXQ_PORT": str(api_port),
                "MLXQ_API_KEY": API_KEY,
                "MLXQ_QUEUE_TIMEOUT": "60",
            },
        )
        workers = [
            launcher.start(
                namespace,
                f"worker-{i}",
                [sys.executable, "-m", "mlxq_cli", "worker"],
                {
                    **common,
                    "MLXQ_REDIS_URL": hub_redis_server.url_at(f"{SUBNET}.{i}.1"),
                },
            )
            for i, namespace in enumerate(hosts.workers, start=1)
        ]
        api = f"http://{SUBNET}.0.2:{api_port}"
        headers = {"Authorization": f"Bearer {API_KEY}"}

        def both_ready() -> bool:
            try:
                response = httpx.get(f"{api}/ready", headers=headers, timeout=1)
                return response.status_code == 200 and response.json()["workers"] == 2
            except httpx.HTTPError:
                return False

        wait_until(both_ready, 60, "the API and both workers")

        def ask(i: int) -> httpx.Response:
            body = {"question": f"q{i}", "max_tokens": 10}  # 0.5 s of generation each
            return httpx.post(f"{api}/ask", json=body, headers=headers, timeout=60)

        # 48 requests, 8 slots in all: six rounds of 0.5 s; the kill lands in the middle.
        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            futures = [pool.submit(ask, i) for i in range(48)]
            time.sleep(1.5)
            workers[0].send_signal(signal.SIGKILL)
            responses = [f.result() for f in futures]

        assert [r.status_code for r in responses] == [200] * 48
        assert {r.json()["answer"] for r in responses} == {" ".join(f"w{i}" for i in range(10))}
        served = _workers_that_finished_jobs(redis_port, hosts.hub)
        assert len(served) == 2  # both hosts answered requests
    finally:
        launcher.stop_all()
        hub_redis_server.stop()


def _workers_that_finished_jobs(redis_port: int, hub: str) -> set[str]:
    """Read RQ's finished registry from inside the hub (Redis listens there only)."""
    queue = queue_name_for_model(DEMO_MODEL_ID)
    script = f"""
import redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer as S
c = redis.Redis(port={redis_port}, password={PASSWORD!r})
ids = Queue({queue!r}, connection=c, serializer=S).finished_job_registry.get_job_ids()
print(" ".join({{Job.fetch(i, connection=c, serializer=S).worker_name for i in ids}}))
"""
    result = subprocess.run(
        ["ip", "netns", "exec", hub, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return set(result.stdout.split())
