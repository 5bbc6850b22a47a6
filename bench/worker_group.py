"""(n) A worker group: one model split over two ranks of MLX's launcher (ring backend on
127.0.0.1), against one process, and against mlx_lm.server run the same way.

    .venv/bin/python bench/worker_group.py             # about 15 minutes on 2 cores
    .venv/bin/python bench/worker_group.py --rounds 2

Two models, the same weights on every side: a Llama of the demo model's shape with random
weights and 8 attention heads (2 KV heads), which both mlxq and mlx_lm.server split tensor
parallel; and the demo model (9 heads: mlxq splits it pipeline parallel; mlx_lm.server has no
pipeline for Llama, so it is not run on it). Prints a table, writes
docs/data/worker_group.json and re-renders docs/benchmarks.md (bench/run.py --render-only).
"""

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/worker_group.py`

import httpx  # noqa: E402
import redis  # noqa: E402

from bench.cpu import cpu_seconds  # noqa: E402
from bench.procs import Processes, wait_until  # noqa: E402
from bench.stats import by_hand, median, spread, table  # noqa: E402
from tests.support.processes import free_port, free_ports, rank_pids  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "docs" / "data" / "worker_group.json"
ROUNDS = 3
MAX_TOKENS = 48
IDLE_S = 10.0
"""How long each side's processes are watched, idle, for the CPU they use anyway."""
CONCURRENCY = (1, 8)
QUESTIONS = [
    "Write a long story about a dragon.",
    "Explain how rain forms.",
    "Describe a busy market.",
    "Tell me about the moon.",
    "Write a poem about autumn.",
    "Explain what a computer does.",
    "Describe your favourite meal.",
    "Tell a story about a lost key.",
]
SIDES = (
    "mlxq, one worker",
    "mlxq, group of 2",
    "mlx_lm.server, one process",
    "mlx_lm.server, 2 ranks",
)


def idle_cores(pids: list[int]) -> float:
    """The cores these processes keep busy while nothing is asked of them."""
    time.sleep(1.0)  # the warm-up's last bookkeeping
    before = cpu_seconds(pids)
    time.sleep(IDLE_S)
    return (cpu_seconds(pids) - before) / IDLE_S


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def ask(url: str, model: str | None, question: str) -> int:
    """One greedy chat answer; its completion tokens. ``model`` None: the server's own (a
    named model mlx_lm.server would try to load)."""
    body: dict = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    if model is not None:
        body["model"] = model
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


def tokens_per_s(url: str, model: str | None, at_once: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        started = time.perf_counter()
        tokens = sum(pool.map(lambda q: ask(url, model, q), QUESTIONS[:at_once]))
        return tokens / (time.perf_counter() - started)


class Side:
    """One way of serving the model: started, measured, its processes' memory, stopped."""

    def __init__(self, procs: Processes, name: str, model: Path, redis_url: str, blas: dict):
        self.procs, self.name, self.model = procs, name, model
        self.redis_url, self.blas = redis_url, blas
        self.pids: list[int] = []
        """The model's processes (ranks)."""
        self.idle_pids: list[int] = []
        """Every process of the side: launcher, ranks, mlxq's API."""
        self.processes: list = []

    def start(self) -> str:
        env = {
            "MLXQ_REDIS_URL": self.redis_url,
            "MLXQ_MODEL": str(self.model),
            "MLXQ_WORKER_CONCURRENCY": "8",
            "MLXQ_LOG_LEVEL": "INFO",
        }
        # each side's users' launcher: mlxq group runs MLX's with a blocking output loop
        # (mlxq_cli/launcher.py); mlx_lm.server's users run mlx.launch itself
        ring = ["--backend", "ring", "-n", "2", "--starting-port", str(free_ports(2))]
        ring += ["--python", sys.executable]
        if self.name.startswith("mlxq"):
            url, api = self.procs.mlxq_api(env)
            self.processes.append(api)
            if "group" in self.name:
                launch = [sys.executable, "-m", "mlxq_cli.launcher", *ring]
                group = self.procs.start("mlxq-group", [*launch, "-m", "mlxq_cli", "worker"], env)
                self.processes.append(group)
                live = "mlxq:workers:live"
                client = redis.Redis.from_url(self.redis_url)
                wait_until(lambda: client.zcard(live) > 0, 300, "the group", 0.2)
                self.pids = list(rank_pids(group).values())
                self.idle_pids = [group.pid, *self.pids, api.pid]
            else:
                worker = self.procs.mlxq_worker(env, timeout=300)
                self.processes.append(worker)
                self.pids = [worker.pid]
                self.idle_pids = [worker.pid, api.pid]
            return url
        launch = [str(Path(sys.executable).with_name("mlx.launch")), *ring]
        port = free_port()
        server = ["-m", "mlx_lm", "server", "--model", str(self.model), "--host", "127.0.0.1"]
        server += ["--port", str(port), "--decode-concurrency", "8", "--log-level", "WARNING"]
        if "ranks" in self.name:  # one BLAS thread per rank, as mlxq sets for ranks sharing a host
            argv = [*launch, "--", *server]  # its own --host would be read as the launcher's
            env_extra = self.blas | {"OPENBLAS_NUM_THREADS": "1"}
        else:
            argv, env_extra = [sys.executable, *server], self.blas
        process = self.procs.start("mlx_lm-server", argv, env_extra)
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        self.procs.wait_http(process, f"{url}/v1/models", 300, "mlx_lm.server")
        self.pids = list(rank_pids(process).values()) if "ranks" in self.name else [process.pid]
        self.idle_pids = list(dict.fromkeys([process.pid, *self.pids]))
        return url

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in reversed(self.processes):
            self.procs.stop(process)
        redis.Redis.from_url(self.redis_url).flushdb()


def measure(procs: Processes, redis_url: str, blas: dict, model: Path, sides, rounds: int):
    results: dict = {}
    for name in sides:
        side = Side(procs, name, model, redis_url, blas)
        url = side.start()
        served = str(model) if name.startswith("mlxq") else None
        try:
            tokens_per_s(url, served, 1)  # warm up
            memory = [rss_bytes(pid) for pid in side.pids]
            idle = idle_cores(side.idle_pids)
            result = {
                "memory": memory,
                "idle_cores": idle,
                "tps": {str(c): [] for c in CONCURRENCY},
            }
            for _ in range(rounds):
                for c in CONCURRENCY:
                    result["tps"][str(c)].append(tokens_per_s(url, served, c))
            results[name] = result
            tps = {c: round(median(v), 1) for c, v in result["tps"].items()}
            print(name, tps, memory, f"idle {idle:.2f} cores")
        finally:
            side.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)

    from bench.machine import describe, openblas_path
    from tests.support.redis_server import RedisServer  # noqa: F401  (via Processes)
    from tests.support.tiny_models import build_random_llama
    from worker.demo_model import prepare_demo_model

    cache = Path.home() / ".cache" / "mlxq"
    demo = prepare_demo_model(cache)
    blas_path = openblas_path()
    blas = {"LD_PRELOAD": blas_path} if blas_path else {}
    with tempfile.TemporaryDirectory(prefix="mlxq-bench-group-") as tmp:
        tmp_path = Path(tmp)
        shaped = build_random_llama(
            tmp_path / "demo-shaped-8-heads", demo, hidden=576, heads=8, kv_heads=2,
            layers=30, intermediate=1536,
        )  # fmt: skip
        logs = tmp_path / "logs"
        logs.mkdir()
        procs = Processes(logs)
        try:
            redis_url = procs.redis_server(tmp_path / "redis")
            even = measure(procs, redis_url, blas, shaped, SIDES, args.rounds)
            demo_sides = SIDES[:2]
            pipelined = measure(procs, redis_url, blas, demo, demo_sides, args.rounds)
        finally:
            procs.stop_all()
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "  ".join(["python bench/worker_group.py", f"--rounds {args.rounds}"]),
        "machine": describe(blas_path),
        "rounds": args.rounds,
        "max_tokens": MAX_TOKENS,
        "tensor": even,
        "pipeline": pipelined,
    }
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    print(render(data)[0])
    from bench import run

    run.main(["--render-only"])
    return 0


def _rows(results: dict) -> list[list[str]]:
    base = results["mlxq, one worker"]
    rows = []
    for name, result in results.items():
        row = [name]
        for c in CONCURRENCY:
            row.append(spread(result["tps"][str(c)]))
        ratio = [a / b for a, b in zip(result["tps"]["8"], base["tps"]["8"], strict=True)]
        row.append(spread(ratio, 2, suffix="x"))
        row.append(" + ".join(f"{m / 2**20:.0f}" for m in result["memory"]))
        idle = result.get("idle_cores")
        row.append("-" if idle is None else f"{idle:.2f}")
        rows.append(row)
    return rows


def render(data: dict) -> tuple[str, list[list[str]]]:
    headers = [
        "",
        "1 at a time, tok/s",
        "8 at once, tok/s",
        "8 at once / one worker",
        "RSS per process, MiB",
        "idle, cores",
    ]
    tensor, pipeline = data["tensor"], data["pipeline"]
    group_vs_server = [
        a / b
        for a, b in zip(
            tensor["mlxq, group of 2"]["tps"]["8"],
            tensor["mlx_lm.server, 2 ranks"]["tps"]["8"],
            strict=True,
        )
    ]
    parts = [
        *by_hand(
            "## (n) A worker group: one model over two ranks (bench/worker_group.py)",
            data["command"],
        ),
        f"Run of {data['date']} (mlxq commit {data['machine']['mlxq commit']}). Two ranks "
        "started by MLX's launcher code (ring backend, `-n 2`) on this one 2-core machine, against "
        "one process; greedy chat answers of up to "
        f"{data['max_tokens']} tokens over HTTP, 1 request at a time and 8 at once; tokens/s = "
        "completion tokens / wall time; median (min-max) of "
        f"{data['rounds']} rounds. RSS: each process's resident memory after a warm-up answer "
        "(the weights, KV cache, the interpreter and MLX's libraries, which every rank carries "
        "again: two ranks together hold more than one process; the weights themselves split, "
        "e.g. rank 0 of the pipeline group reported 326 MB of the demo model's 540 MB of "
        "float32 weights in `/fleet`'s `memory_used`, in a manual run). mlxq gives each of "
        "two ranks on one host one OpenBLAS thread; mlx_lm.server's ranks were given the same "
        "(`OPENBLAS_NUM_THREADS=1`). Each side is started as its users start it: mlxq's group "
        "by `mlxq group`'s launcher (MLX's, with an output loop that blocks: "
        "`mlxq_cli/launcher.py`), mlx_lm.server's ranks by `mlx.launch`. Idle: the cores all "
        f"of a side's processes (launcher, ranks, mlxq's API) used over {IDLE_S:.0f} s with "
        "nothing asked of them, after the warm-up (`mlx.launch` polls its ranks' pipes, and a "
        "rank waiting in MLX's ring collective polls its socket). On two shared cores that "
        "polling also takes time from the ranks' own work (mlxq's group made 20.6 tok/s, "
        "8 at once, tensor parallel, in this section's run of commit 1fc24ab, started by "
        "`mlx.launch` and with its followers waiting in the collective); mlx_lm.server under "
        "mlxq's launcher was not measured.",
        "",
        "**Tensor parallel**: a Llama of the demo model's shape (30 layers, hidden 576) with "
        "8 attention heads and random weights (float32), so that both split it:",
        "",
        table(headers, _rows(tensor)),
        "",
        "**Pipeline**: the demo model (9 heads do not divide between 2 ranks; mlx-lm has no "
        "pipeline for Llama, so mlx_lm.server cannot split it; mlxq adds one):",
        "",
        table(headers, _rows(pipeline)),
        "",
        f"- mlxq's group against mlx_lm.server's two ranks, 8 at once: "
        f"**{spread(group_vs_server, 2, suffix='x')}**.",
        "- What this machine can show: the split works, answers are the single process's "
        "(pipeline: bit for bit; tests/fleet/test_worker_group.py), and each rank holds only "
        "its share of the weights. What it cannot: speed. Two ranks share the same 2 cores "
        "and memory bus, so every token pays the split's messages and waits without any "
        "extra compute to gain; across Macs each rank has its own cores and memory bandwidth, "
        "which is what a group is for (a model that fits no single Mac).",
        "",
    ]
    summary = [
        [
            "(n) group of 2 / mlx_lm.server 2 ranks, 8 at once",
            spread(group_vs_server, 2, suffix="x"),
        ]
    ]
    return "\n".join(parts), summary


if __name__ == "__main__":
    sys.exit(main())
