"""Section (d): scale-out: aggregate tokens/s with two workers against one, each worker pinned
to a core of its own, through the real API."""

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field

import redis

from bench.clients import Answer, TokenCounter, ask_mlxq_async, fire_together
from bench.cpu import cpu_seconds, machine_busy_seconds
from bench.generation import SUBJECTS
from bench.procs import Processes
from bench.stats import median, spread, table, verdict

TARGET = 1.7
WARMUP_TOKENS = 8
# One BLAS thread per worker, so that a worker uses the one core it is pinned to.
ONE_CORE = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
CORES = ["0", "1"]
SETTLE_S = 0.5  # RQ counts a job just after its answer is sent: let the counts catch up
CLIENT = "load generator (bench client)"
OTHERS = "anything else on the machine"


@dataclass
class ScaleResult:
    requests: int
    max_tokens: int
    tps: dict[int, list[float]] = field(default_factory=lambda: {1: [], 2: []})
    tokens: dict[int, list[int]] = field(default_factory=lambda: {1: [], 2: []})
    # cores used (CPU seconds / wall seconds) per process, one value per round
    cores: dict[int, dict[str, list[float]]] = field(default_factory=lambda: {1: {}, 2: {}})
    others: dict[int, list[float]] = field(default_factory=lambda: {1: [], 2: []})
    jobs_per_worker: list[str] = field(default_factory=list)  # the 2-worker runs' split
    same_texts: list[int] = field(default_factory=list)  # 1 worker vs 2 workers, per round


def _questions(round_index: int, n: int) -> list[str]:
    return [
        f"Write a long story about a {SUBJECTS[i % len(SUBJECTS)]} (story {round_index}.{i})."
        for i in range(n)
    ]


def run_scale_out(
    procs: Processes,
    env: dict[str, str],
    counter: TokenCounter,
    rounds: int,
    requests: int,
    max_tokens: int,
) -> ScaleResult:
    """One API; worker 1 (core 0) runs throughout, worker 2 (core 1) is started for the
    2-worker run of each round and stopped after it; the order alternates between rounds."""
    result = ScaleResult(requests, max_tokens)
    url, api = procs.mlxq_api(env)
    first = procs.mlxq_worker(env | ONE_CORE, timeout=300, cpus=CORES[0])
    assert procs.redis_process is not None
    pids = {"API": api.pid, "Redis": procs.redis_process.pid, "worker, core 0": first.pid}
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    try:
        for n in (1, requests):  # warm-up: the single path and full batches
            warm = _questions(-1, n)
            asyncio.run(fire_together(url, ask_mlxq_async, warm, WARMUP_TOKENS, counter))
        for round_index in range(rounds):
            questions = _questions(round_index, requests)
            answers: dict[int, list[Answer]] = {}
            for workers in [1, 2] if round_index % 2 == 0 else [2, 1]:
                second = None
                if workers == 2:
                    second = procs.mlxq_worker(env | ONE_CORE, timeout=300, cpus=CORES[1])
                try:
                    own = pids | ({"worker, core 1": second.pid} if second else {})
                    own[CLIENT] = os.getpid()
                    if second is not None:  # its first-call allocations, outside the timing
                        warm = _questions(-2, requests)
                        asyncio.run(
                            fire_together(url, ask_mlxq_async, warm, WARMUP_TOKENS, counter)
                        )
                    jobs = _jobs_by_pid(connection)
                    answers[workers] = _measure(url, questions, result, workers, own, counter)
                    if second is not None:
                        result.jobs_per_worker.append(_split(connection, jobs, first, second))
                finally:
                    if second is not None:
                        procs.stop(second)
            result.same_texts.append(
                sum(a.text == b.text for a, b in zip(answers[1], answers[2], strict=True))
            )
    finally:
        for process in (first, api):
            procs.stop(process)
    return result


def _measure(
    url: str,
    questions: list[str],
    result: ScaleResult,
    workers: int,
    pids: dict[str, int],
    counter: TokenCounter,
) -> list[Answer]:
    before = {name: cpu_seconds([pid]) for name, pid in pids.items()}
    busy = machine_busy_seconds()
    answers, wall = asyncio.run(
        fire_together(url, ask_mlxq_async, questions, result.max_tokens, counter)
    )
    busy = machine_busy_seconds() - busy
    ours = 0.0
    for name, pid in pids.items():
        used = (cpu_seconds([pid]) - before[name]) / wall
        result.cores[workers].setdefault(name, []).append(used)
        ours += used
    result.others[workers].append(max(0.0, busy / wall - ours))
    tokens = sum(a.completion_tokens for a in answers)
    result.tps[workers].append(tokens / wall)
    result.tokens[workers].append(tokens)
    return answers


def _jobs_by_pid(connection: redis.Redis) -> dict[int, int]:
    """Jobs each live worker has finished so far (RQ's own count), by process id."""
    time.sleep(SETTLE_S)
    done = {}
    for key in connection.smembers("rq:workers"):
        pid, count = connection.hmget(key, "pid", "successful_job_count")
        if pid is not None:
            done[int(pid)] = int(count or 0)
    return done


def _split(
    connection: redis.Redis,
    before: dict[int, int],
    first: subprocess.Popen,
    second: subprocess.Popen,
) -> str:
    after = _jobs_by_pid(connection)
    return "/".join(str(after.get(p.pid, 0) - before.get(p.pid, 0)) for p in (first, second))


def render(result: ScaleResult, rounds: int) -> tuple[str, list[list[str]]]:
    """The section's text, and its row for the summary table."""
    ratios = [two / one for one, two in zip(result.tps[1], result.tps[2], strict=True)]
    ratio = median(ratios)
    line = verdict(ratio, TARGET, higher_is_better=True)
    summary = [
        [
            "(d) aggregate tokens/s, 2 workers / 1 worker (1 core each)",
            f">= {TARGET}x",
            f"{ratio:.2f}x",
            line,
        ]
    ]
    rows = [
        [
            "1 worker (core 0)",
            spread(result.tps[1]),
            _tokens(result.tokens[1]),
        ],
        [
            "2 workers (cores 0 and 1)",
            spread(result.tps[2]),
            _tokens(result.tokens[2]),
        ],
    ]
    names = list(result.cores[2])
    cpu_rows = [
        [
            name,
            f"{median(result.cores[1][name]):.2f}" if name in result.cores[1] else "-",
            f"{median(result.cores[2][name]):.2f}",
        ]
        for name in names
    ]
    cpu_rows.append(
        [
            "all of the above",
            f"{median(_totals(result.cores[1])):.2f}",
            f"{median(_totals(result.cores[2])):.2f}",
        ]
    )
    cpu_rows.append(
        [
            f"({OTHERS}: all cores' busy time less the above)",
            f"{median(result.others[1]):.2f}",
            f"{median(result.others[2]):.2f}",
        ]
    )
    parts = [
        "## (d) Scale-out: 2 workers against 1",
        "",
        f"{result.requests} clients send different prompts at once (greedy, max_tokens "
        f"{result.max_tokens}) through one mlxq API; each worker is pinned to a core of its own "
        "(`taskset -c 0`, `taskset -c 1`) with `OPENBLAS_NUM_THREADS=1` and `OMP_NUM_THREADS=1`, "
        "`MLXQ_WORKER_CONCURRENCY=8`, the same float32 model copy as (b) and (c). Aggregate = "
        "total completion tokens (counted as in (c): each answer encoded again with the model's "
        "tokenizer) / wall time from the first send to the last answer. "
        f"{rounds} rounds, 1 and 2 workers back to back in each (order alternating); median "
        "(min-max) over rounds; the ratio is the median of the rounds' ratios.",
        "",
        table(["workers", "aggregate tok/s", "completion tokens per round"], rows),
        "",
        f"**2 workers / 1 worker = {ratio:.2f}x** ({spread(ratios, 2)}): target >= {TARGET}x: "
        + line,
        "",
        "Cores used by each process during the timed runs (its CPU seconds / wall seconds, "
        "median over rounds; the machine has 2):",
        "",
        table(["process", "1 worker", "2 workers"], cpu_rows),
        "",
        _limits(result),
        "",
        "Jobs taken by worker 1 / worker 2 in the 2-worker runs: "
        + ", ".join(result.jobs_per_worker)
        + f". Same text from 1 and 2 workers: {sum(result.same_texts)}/"
        f"{result.requests * len(result.same_texts)} answers.",
        "",
        ABOUT_D,
        "",
    ]
    return "\n".join(parts), summary


def _limits(result: ScaleResult) -> str:
    """Where the missing part of 2x went, in this run's numbers."""
    two = result.cores[2]
    helpers = median(_totals({n: v for n, v in two.items() if not n.startswith("worker")}))
    workers = _totals({n: v for n, v in two.items() if n.startswith("worker")})
    solo = result.cores[1]["worker, core 0"]
    alone = [tps / cores for tps, cores in zip(result.tps[1], solo, strict=True)]
    beside = [tps / cores for tps, cores in zip(result.tps[2], workers, strict=True)]
    return (
        f"With 2 workers, the API, Redis and the load generator used {helpers:.2f} cores "
        f"together, and the workers {median(workers):.2f}. Each worker made "
        f"{median(result.tps[2]) / 2:.1f} tok/s beside the other against "
        f"{median(result.tps[1]):.1f} alone; per CPU second of worker time, "
        f"{median(beside):.1f} tokens beside the other against {median(alone):.1f} alone "
        f"({median(beside) / median(alone):.0%})."
    )


def _totals(cores: dict[str, list[float]]) -> list[float]:
    return [sum(values) for values in zip(*cores.values(), strict=True)]


def _tokens(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


ABOUT_D = """\
**What this shows.** Whether adding a worker process adds throughput, as adding a machine
would: two workers pointed at the same Redis take jobs from the same queue, each with its own
batch of up to 8. Worker 1 runs throughout; worker 2 is started (and warmed by one short
burst) for each 2-worker run and stopped after it, so its start-up is not timed.

**What is missed, and why.** This machine has 2 cores, so the workers do not have them to
themselves: the API, Redis and the load generator (this script, which also re-encodes the
answers to count tokens) are not pinned and share the same 2 cores. With 1 worker they run
on the idle second core; with 2 workers every CPU second they use is taken from a worker (the
"all of the above" row cannot exceed 2), though at this load they need little. The larger loss is
each worker getting less done per CPU second when the other runs: the two cores are KVM
vCPUs sharing one L3 cache and memory bus (and perhaps, on the host, more than that: it is
not visible from inside), and each worker streams the 0.5 GB of float32 weights once per
decode step. The last worker to finish sets the wall time, so an uneven split or an
earlier start on one side also costs. Across machines, each worker would have its own
cores, cache and memory, and the API and Redis could run elsewhere."""
