"""The HTTP edge has limits: head size (431), head and body read time (408), idle
keep-alive time, and open connections; real requests are answered during an attack."""

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from tests.support.processes import Processes

LIMITS = {
    "MLXQ_MAX_HEADER_BYTES": "16384",
    "MLXQ_HEADER_TIMEOUT": "1",
    "MLXQ_BODY_TIMEOUT": "1",
    "MLXQ_KEEPALIVE_TIMEOUT": "1",
    "MLXQ_ENGINE": "echo",
}


DB = 7
"""The Redis database of this module's shared API and worker (other tests flush database 0)."""


@pytest.fixture(scope="module")
def api(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One API process with these limits and an echo worker, for the tests that attack it one
    after another (each closes what it opened)."""
    redis_url = f"{redis_server.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(redis_url).flushdb()
    processes = Processes(tmp_path_factory.mktemp("http-edge"))
    env = {"MLXQ_REDIS_URL": redis_url, **LIMITS}
    processes.worker(env)
    yield processes.api(env)
    processes.stop_all()
    redis.Redis.from_url(redis_url).flushdb()


def _connect(api: str) -> socket.socket:
    url = urlsplit(api)
    sock = socket.create_connection((url.hostname, url.port))
    sock.settimeout(5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_huge_header_is_a_431_and_the_api_stays_responsive(api: str) -> None:
    sock = _connect(api)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000)
    try:
        reply = _read_all(sock)
    except ConnectionResetError:  # closed while we were still sending: also refused
        reply = b"HTTP/1.1 431"
    assert reply.startswith(b"HTTP/1.1 431")
    assert httpx.get(f"{api}/health").status_code == 200


def test_a_head_sent_too_slowly_is_a_408(api: str) -> None:
    sock = _connect(api)
    sock.sendall(b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and then nothing
    started = time.monotonic()
    reply = _read_all(sock)
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3


def test_a_connection_that_sends_nothing_is_closed(api: str) -> None:
    sock = _connect(api)
    started = time.monotonic()
    assert _read_all(sock).startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3


def test_a_body_sent_too_slowly_is_a_408(api: str) -> None:
    sock = _connect(api)
    sock.sendall(
        b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"question": '
    )
    reply = _read_all(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def test_an_idle_kept_alive_connection_is_closed(api: str) -> None:
    sock = _connect(api)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = sock.recv(65536)
    while not first.endswith(b'"ok"}'):  # the head and the body may come apart
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert _read_all(sock) == b""  # closed by the server after MLXQ_KEEPALIVE_TIMEOUT
    assert time.monotonic() - started < 3


def test_real_requests_are_answered_while_many_connections_idle(api: str) -> None:
    idle = [_connect(api) for _ in range(300)]
    try:
        started = time.monotonic()
        response = httpx.post(f"{api}/ask", json={"question": "one two"}, timeout=10)
        assert response.status_code == 200 and response.json()["answer"] == "one two"
        assert time.monotonic() - started < 2
        time.sleep(2.5)  # past MLXQ_HEADER_TIMEOUT: the idle ones were closed
        closed = 0
        for sock in idle:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                closed += _read_all(sock).startswith(b"HTTP/1.1 408")
        assert closed == len(idle)
    finally:
        for sock in idle:
            sock.close()


CONCURRENT = 1200


def _connect_from(api: str, source: str) -> socket.socket:
    """A connection from another loopback address: another client, as the API counts them."""
    url = urlsplit(api)
    sock = socket.create_connection((url.hostname, url.port), source_address=(source, 0))
    sock.settimeout(5)
    return sock


def test_a_head_completed_past_the_limit_in_one_chunk_is_a_431(api: str) -> None:
    """Before: a whole 100 kB head in one chunk was answered 200 (the chunk that completes a
    head was never counted)."""
    sock = _connect(api)
    sock.sendall(
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    )
    with contextlib.suppress(ConnectionResetError):
        reply = _read_all(sock)
        assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
        assert b'"code": "headers_too_large"' in reply


def test_one_client_cannot_take_every_connection(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """A client holding many half-open connections gets the ones past its share refused at
    once (JSON 503 with Retry-After, counted in /metrics); another client is served. Before:
    1,100 half-open connections made every real request a plain-text 503 for 10 s."""
    env = {
        **mlxq_env,
        **LIMITS,
        "MLXQ_HEADER_TIMEOUT": "10",
        "MLXQ_MAX_CONNECTIONS_PER_CLIENT": "50",
    }
    processes.worker(env)
    api = processes.api(env)
    flood = [_connect_from(api, "127.0.0.2") for _ in range(60)]
    try:
        for sock in flood[:50]:
            sock.sendall(b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and no more
        refused = []
        for sock in flood[50:]:
            reply = _read_all(sock)
            head, _, body = reply.partition(b"\r\n\r\n")
            refused.append(head.split(b"\r\n")[0])
            assert b"retry-after: 1" in head.lower()
            assert json.loads(body)["code"] == "overloaded"
        assert refused == [b"HTTP/1.1 503 Service Unavailable"] * 10
        started = time.monotonic()
        response = httpx.post(f"{api}/ask", json={"question": "one two"}, timeout=10)
        assert response.status_code == 200 and time.monotonic() - started < 2
        metrics = httpx.get(f"{api}/metrics").text
        assert 'mlxq_connections_refused_total{reason="per_client"} 10.0' in metrics
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.anyio
async def test_more_concurrent_requests_than_the_old_cap_are_all_answered(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """The default limit comes from the open-file limit. Before (a fixed 1,024): 984 of 2,000
    concurrent requests refused, all 2,000 when they all connected first. 1,200 here (past
    the old cap; the issue's 2,000 passed too, but takes twice as long on two busy cores)."""
    env = {
        **mlxq_env,
        "MLXQ_ENGINE": "echo",
        "MLXQ_WORKER_CONCURRENCY": "64",
        "MLXQ_HEADER_TIMEOUT": "60",  # a loaded machine reads 1,200 heads slowly: not tested here
    }
    processes.worker(env)
    api = processes.api(env)
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=api, limits=limits, timeout=120) as client:
        answers = await asyncio.gather(
            *(client.post("/ask", json={"question": f"q{i}"}) for i in range(CONCURRENT)),
            return_exceptions=True,
        )
    outcomes = Counter(
        a.status_code if isinstance(a, httpx.Response) else type(a).__name__ for a in answers
    )
    if outcomes != {200: CONCURRENT}:
        api_log = [p for p in processes._started if "/api-" in p.log_path][0].log_path  # type: ignore[attr-defined]
        logged = [line for line in Path(api_log).read_text().splitlines() if "-> 200" not in line]
        raise AssertionError(f"{outcomes}; the API's log: {logged[-30:]}")
