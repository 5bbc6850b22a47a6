"""Section (a): what mlxq adds per request, with a zero-cost engine, against a bare RQ round trip;
and one API process holding 1,000 concurrent waiting requests."""

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer
from tqdm import trange

from bench.procs import Processes
from bench.rq_baseline import echo
from bench.stats import median, percentile, spread, table, verdict

QUESTION = "hello world"
ECHO_QUEUE = "bench-echo"
RQ_QUEUE = "bench-bare-rq"
BURST_QUEUE = "bench-burst"
TARGET_RATIO = 1.5
WARMUP = 20


@dataclass
class OverheadResult:
    requests_per_round: int
    mlxq_p50_ms: list[float] = field(default_factory=list)
    mlxq_p99_ms: list[float] = field(default_factory=list)
    rq_p50_ms: list[float] = field(default_factory=list)
    rq_p99_ms: list[float] = field(default_factory=list)
    health_p50_ms: list[float] = field(default_factory=list)  # HTTP alone, for reference
    health_p99_ms: list[float] = field(default_factory=list)
    # every request's latency, all rounds together (the figure's distributions)
    mlxq_ms: list[float] = field(default_factory=list)
    rq_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class BurstResult:
    requests: int
    worker_concurrency: int
    warm: bool  # the API answered one request before the burst (its pub/sub was connected)
    ok: int = 0
    queued: int = 0  # in the RQ queue when the worker was started
    errors: dict[str, int] = field(default_factory=dict)
    enqueue_s: float = 0.0  # first send -> all requests in the RQ queue
    drain_s: float = 0.0  # worker process spawned -> last answer (includes its start-up)
    total_s: float = 0.0  # first send -> last answer


def _mlxq_latencies(client: httpx.Client, n: int, errors: list[str]) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post("/ask", json={"question": QUESTION, "max_tokens": 2})
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200 or response.json().get("answer") != QUESTION:
            errors.append(f"mlxq: {response.status_code} {response.text[:200]}")
    return latencies


def _health_latencies(client: httpx.Client, n: int, errors: list[str]) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get("/health")
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            errors.append(f"mlxq /health: {response.status_code}")
    return latencies


def _rq_latencies(queue: Queue, n: int, errors: list[str]) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        job = queue.enqueue(echo, QUESTION)
        result = job.latest_result(timeout=5)  # RQ 3: blocks on the job's result stream (XREAD)
        latencies.append(time.perf_counter() - started)
        if result is None or result.return_value != QUESTION:
            errors.append(f"bare RQ: no or wrong result for job {job.id}: {result!r}")
    return latencies


def run_latency(
    procs: Processes, redis_url: str, env: dict[str, str], rounds: int, n: int
) -> OverheadResult:
    """Sequential requests, mlxq and bare RQ back to back in each round (order alternates)."""
    env = env | {"MLXQ_REDIS_URL": redis_url, "MLXQ_ENGINE": "echo", "MLXQ_QUEUE": ECHO_QUEUE}
    base_url, api = procs.mlxq_api(env)
    worker = procs.mlxq_worker(env)
    rq_worker = procs.rq_worker(redis_url, RQ_QUEUE)
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(RQ_QUEUE, connection=connection, serializer=JSONSerializer)
    result = OverheadResult(n)
    try:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            _mlxq_latencies(client, WARMUP, result.errors)
            _rq_latencies(queue, WARMUP, result.errors)
            for round_index in trange(rounds, desc="(a) overhead", unit="round", leave=False):
                systems = ["mlxq", "rq"] if round_index % 2 == 0 else ["rq", "mlxq"]
                for system in systems:
                    if system == "mlxq":
                        ms = [s * 1000 for s in _mlxq_latencies(client, n, result.errors)]
                        result.mlxq_p50_ms.append(percentile(ms, 50))
                        result.mlxq_p99_ms.append(percentile(ms, 99))
                        result.mlxq_ms.extend(ms)
                        ms = [s * 1000 for s in _health_latencies(client, n, result.errors)]
                        result.health_p50_ms.append(percentile(ms, 50))
                        result.health_p99_ms.append(percentile(ms, 99))
                        result.health_ms.extend(ms)
                    else:
                        ms = [s * 1000 for s in _rq_latencies(queue, n, result.errors)]
                        result.rq_p50_ms.append(percentile(ms, 50))
                        result.rq_p99_ms.append(percentile(ms, 99))
                        result.rq_ms.extend(ms)
    finally:
        for process in (rq_worker, worker, api):
            procs.stop(process)
    return result


def run_burst(
    procs: Processes,
    redis_url: str,
    env: dict[str, str],
    n: int,
    worker_concurrency: int,
    warm: bool,
) -> BurstResult:
    """n concurrent requests wait in one API process with no worker; then a worker drains them.

    warm: the API first answers one request (through a worker that is then stopped), so the
    burst does not land on a just-started API."""
    env = env | {
        "MLXQ_REDIS_URL": redis_url,
        "MLXQ_ENGINE": "echo",
        "MLXQ_QUEUE": BURST_QUEUE,
        "MLXQ_QUEUE_TIMEOUT": "60",
        # The admission limit (429 beyond it) must not be what this check runs into.
        "MLXQ_MAX_QUEUED": str(n),
        "MLXQ_WORKER_CONCURRENCY": str(worker_concurrency),
    }
    base_url, api = procs.mlxq_api(env)
    result = BurstResult(n, worker_concurrency, warm)
    started: list = [api]
    try:
        if warm:
            worker = procs.mlxq_worker(env)
            httpx.post(f"{base_url}/ask", json={"question": QUESTION}, timeout=10)
            procs.stop(worker)
        asyncio.run(_burst(procs, base_url, redis_url, env, result, started))
    finally:
        for process in reversed(started):
            procs.stop(process)
    return result


async def _burst(
    procs: Processes,
    base_url: str,
    redis_url: str,
    env: dict[str, str],
    result: BurstResult,
    started_processes: list,
) -> None:
    import redis.asyncio as aioredis

    n = result.requests
    limits = httpx.Limits(max_connections=n + 100, max_keepalive_connections=n + 100)
    timeout = httpx.Timeout(120, connect=30, pool=60)
    queue_key = Queue(BURST_QUEUE, connection=redis.Redis(), serializer=JSONSerializer).key
    connection = aioredis.Redis.from_url(redis_url)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:

        async def ask(i: int) -> tuple[int, object]:
            try:
                body = {"question": f"burst {i}", "max_tokens": 2}
                return i, await client.post("/ask", json=body)
            except httpx.HTTPError as exc:
                return i, exc

        started = time.perf_counter()
        tasks = [asyncio.create_task(ask(i)) for i in range(n)]
        deadline = started + 90
        while True:  # until every request is either queued or already answered (an error)
            queued = await connection.llen(queue_key)
            settled = queued + sum(t.done() for t in tasks)
            if settled >= n or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
        result.enqueue_s = time.perf_counter() - started
        result.queued = queued
        spawned = time.perf_counter()
        started_processes.append(await asyncio.to_thread(procs.mlxq_worker, env))
        answers = await asyncio.gather(*tasks)
        finished = time.perf_counter()
        result.drain_s = finished - spawned
        result.total_s = finished - started
    await connection.aclose()
    for i, answer in answers:
        if isinstance(answer, httpx.Response) and answer.status_code == 200:
            if answer.json().get("answer") == f"burst {i}":
                result.ok += 1
                continue
            reason = "200 with a wrong answer"
        elif isinstance(answer, httpx.Response):
            reason = f"HTTP {answer.status_code}: {answer.text[:120]}"
        else:
            reason = f"{type(answer).__name__}: {answer}"
        result.errors[reason] = result.errors.get(reason, 0) + 1


def render(latency: OverheadResult, bursts: list[BurstResult]) -> tuple[str, list[list[str]]]:
    """The section's text, and its rows for the summary table."""
    ratios = [m / r for m, r in zip(latency.mlxq_p50_ms, latency.rq_p50_ms, strict=True)]
    ratio = median(ratios)
    summary = [
        [
            "(a) p50 latency, mlxq echo / bare RQ",
            f"<= {TARGET_RATIO}x",
            f"{ratio:.2f}x",
            verdict(ratio, TARGET_RATIO, higher_is_better=False),
        ]
    ]
    rows = [
        ["mlxq /ask (echo engine)", spread(latency.mlxq_p50_ms, 2), spread(latency.mlxq_p99_ms, 2)],
        ["bare RQ round trip", spread(latency.rq_p50_ms, 2), spread(latency.rq_p99_ms, 2)],
        [
            "(reference) mlxq GET /health: HTTP only, no Redis",
            spread(latency.health_p50_ms, 2),
            spread(latency.health_p99_ms, 2),
        ],
    ]
    http_ms = median(latency.health_p50_ms)
    parts = [
        "## (a) Overhead per request (zero-cost engine)",
        "",
        f"{latency.requests_per_round} sequential requests per system per round, "
        f"{len(latency.mlxq_p50_ms)} rounds; latency in ms, median over rounds "
        "(min-max of the rounds in brackets).",
        "",
        table(["system", "p50 ms", "p99 ms"], rows),
        "",
        f"**p50 mlxq / p50 bare RQ = {ratio:.2f}x** (median of the rounds' ratios, "
        f"{spread(ratios, 2)}): target <= {TARGET_RATIO}x: "
        + verdict(ratio, TARGET_RATIO, higher_is_better=False)
        + f". HTTP alone (GET /health) accounts for {http_ms:.2f} ms of mlxq's "
        f"{median(latency.mlxq_p50_ms):.2f} ms.",
        "",
    ]
    if latency.errors:
        parts += [
            f"Errors during the latency rounds: {len(latency.errors)}, first: "
            f"`{latency.errors[0]}`",
            "",
        ]
    if bursts:
        parts += _render_bursts(bursts, summary)
    parts += [ABOUT_A, ""]
    return "\n".join(parts), summary


def _render_bursts(bursts: list[BurstResult], summary: list[list[str]]) -> list[str]:
    headers = [
        "API",
        "requests",
        "queued before the worker",
        "200 with the right answer",
        "errors",
        "all settled after s",
        "worker spawn -> last answer s",
        "total s",
    ]
    rows = []
    notes = []
    for burst in bursts:
        errors = sum(burst.errors.values())
        state = "warmed by one request" if burst.warm else "just started (as specified)"
        rows.append(
            [
                state,
                burst.requests,
                burst.queued,
                burst.ok,
                errors,
                f"{burst.enqueue_s:.1f}",
                f"{burst.drain_s:.1f}",
                f"{burst.total_s:.1f}",
            ]
        )
        if burst.errors:
            listed = "; ".join(f"`{k}` x{v}" for k, v in burst.errors.items())
            notes.append(f"Errors ({state}): {listed}")
        verdict_text = "**met**" if burst.ok == burst.requests and not errors else "**missed**"
        summary.append(
            [
                f"(a) {burst.requests} concurrent waiting requests, one API, {state}",
                "all 200, no errors",
                f"{burst.ok} ok, {errors} errors",
                verdict_text,
            ]
        )
    n = bursts[0].requests
    return [
        f"### {n} concurrent waiting requests, one API process",
        "",
        f"Echo worker with MLXQ_WORKER_CONCURRENCY={bursts[0].worker_concurrency}, started "
        "once every request is queued (or has already failed).",
        "",
        table(headers, rows),
        "",
        *[note + "\n" for note in notes],
    ]


ABOUT_A = """\
**What this shows.** The cost of mlxq's own path with generation taken out: HTTP + FastAPI
validation, enqueueing an RQ job (one MULTI/EXEC), the worker's dequeue, bookkeeping through
RQ's own registries and `handle_job_success`, the events published on the job's stream and
pub/sub channel, and the API's wait on its single pub/sub connection. mlxq's client is a
persistent `httpx.Client` (keep-alive); the bare RQ baseline is the cheapest stock RQ path:
`Queue.enqueue` of a trivial function (`bench.rq_baseline.echo`, JSON serializer, like mlxq)
taken by a stock `rq.worker.SimpleWorker` subprocess (no fork), with the client blocking on
`job.latest_result(timeout=5)`, which in RQ 3 is an `XREAD BLOCK` on the job's result
stream (no polling). Logging is left at each system's default (INFO): mlxq logs one line per
request in the API and one per job in the worker, RQ's SimpleWorker four per job.
The burst check starts the API with no worker, `MLXQ_QUEUE_TIMEOUT=60` and
`MLXQ_MAX_QUEUED` equal to the number of requests (the admission limit), sends every
request at once from one `httpx.AsyncClient` (the bench raises its own open-file limit, which
the API inherits), waits until the RQ queue holds all of them, then starts an echo worker;
the drain time includes that worker's process start-up. The default run repeats the burst on
an API that has first answered one request, to tell a start-up problem from a steady-state one.

**What is missed, and why.** The bare RQ baseline has no HTTP hop at all, so the ratio
charges mlxq for HTTP parsing and FastAPI (the GET /health row shows that part). On this
2-core machine the client, the API, Redis and the worker share 2 cores, so every process hop
costs scheduling time too. Latency is measured one request at a time, the case where
per-request overhead shows most; under load waits overlap. A model's real cost (tens of
milliseconds per token here) makes this overhead small in practice; sections (b) and (c)
show it on real generation. The burst uses the echo engine: it measures holding and draining
1,000 waits, not generating 1,000 answers."""
