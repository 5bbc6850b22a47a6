"""Benchmark mlxq against bare RQ, direct mlx-lm and mlx_lm.server; write docs/benchmarks.md.

    .venv/bin/python bench/run.py            # default: about 10 minutes on 2 cores
    .venv/bin/python bench/run.py --quick    # about 3 minutes, fewer rounds and tokens
    .venv/bin/python bench/run.py --sections df   # some sections only (a-m)
    .venv/bin/python bench/run.py --render-only   # rewrite the document from stored sections

Everything runs on this machine and talks to 127.0.0.1 only: a private redis-server on a
free port, mlxq's API and workers, a bare RQ worker, direct mlx-lm and mlx_lm.server. In each
round the systems under comparison run back to back (their order alternating), so that noise
on a busy machine hits both; tables report medians over rounds. Section (e) is not measured
here: it renders a committed GPU run of bench/gpu_engine.py (bench/gpu.py).

Each section's rendered text is stored in docs/data/bench_sections.json with the run it came
from, and with the numbers of its figure (bench/figures.py), drawn as docs/img/bench-<x>.svg
above its table (bench/plots.py); the document and figures are rendered from all stored
sections, so a run of some sections keeps the others' last results. The sampling-cost
section is rendered from docs/data/sampling_cost.json (bench/sampling_cost.py, run by hand).
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/run.py` works

import redis  # noqa: E402

from bench import (  # noqa: E402
    batch,
    chat,
    figures,
    first_token,
    generation,
    gpu,
    model_switch,
    overhead,
    sampling_cost,
    scaleout,
    speculation,
)
from bench.clients import DirectMLX, TokenCounter  # noqa: E402
from bench.generation import Pids  # noqa: E402
from bench.machine import describe, openblas_path  # noqa: E402
from bench.model_copy import is_ready  # noqa: E402
from bench.procs import ROOT, Processes  # noqa: E402
from bench.stats import table  # noqa: E402

BENCH_CACHE = Path.home() / ".cache" / "mlxq" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
SECTIONS_FILE = "bench_sections.json"  # in docs/data/, beside the document's folder
SAMPLING_FILE = "sampling_cost.json"
FIGURES_DIR = "img"  # in docs/, beside the document
ALL_SECTIONS = "abcdefghijklm"


@dataclass
class Plan:
    rounds: int
    overhead_requests: int
    burst_requests: int
    burst_concurrency: int
    single_tokens: int
    concurrent_tokens: int
    levels: list[int]
    default_blas_context: bool
    warm_burst: bool
    scale_requests: int
    scale_tokens: int
    first_token_repetitions: int
    chat_rounds: int  # sections g, h and i (each round is long: prefill of long prompts)
    batch_lines: int  # section j: lines per batch
    batch_tokens: int  # section j: max_tokens per line
    latency_requests: int  # section k: interactive requests, idle and during a batch


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and tokens (~3 min)")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 5, quick 2)")
    parser.add_argument(
        "--sections",
        default=ALL_SECTIONS,
        help=f"which sections to run (default {ALL_SECTIONS})",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite the document from the stored sections",
    )
    parser.add_argument("--output", type=Path, default=DOC, help=f"default {DOC}")
    parser.add_argument(
        "--time-limit",
        type=int,
        default=1500,
        help="seconds after which the run stops itself (default 1500)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    chat_rounds = args.rounds or (2 if args.quick else 3)
    if args.quick:
        plan = Plan(
            rounds,
            100,
            1000,
            64,
            64,
            32,
            [1, 4, 8],
            False,
            False,
            16,
            16,
            2,
            chat_rounds,
            16,
            16,
            6,
        )
    else:
        plan = Plan(
            rounds,
            200,
            1000,
            64,
            128,
            64,
            [1, 4, 8],
            True,
            True,
            16,
            64,
            3,
            chat_rounds,
            32,
            32,
            20,
        )
    return args, plan


def raise_open_file_limit() -> None:
    # 1,000 concurrent client connections; child processes (the API) inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def float32_model(blas: str | None) -> Path:
    """The demo model with its weights expanded to float32, as mlxq's CPU worker holds them."""
    source = Path(
        subprocess.run(
            [sys.executable, "-m", "mlxq_cli", "prepare-model"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    target = BENCH_CACHE / f"{source.name}-float32"
    if not is_ready(target, source):
        print(f"creating the float32 copy of {source} in {target} ...", flush=True)
        env = {"LD_PRELOAD": blas} if blas else {}
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "model_copy.py"), str(source), str(target)],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"could not make the float32 copy:\n{done.stderr[-3000:]}")
        print("  check:", json.loads(done.stdout.strip().splitlines()[-1]), flush=True)
    return target


class Run:
    """One benchmark run: its processes, its Redis, and the sections' rendered text."""

    def __init__(self, plan: Plan, blas: str | None, procs: Processes) -> None:
        self.plan = plan
        self.blas_env = {"LD_PRELOAD": blas} if blas else {}
        self.procs = procs
        self.redis_url = ""
        self.mlxq_env = {"MLXQ_LOG_LEVEL": "INFO"}
        # (section key "(x)", its text, its rows for the summary table, its figure's numbers)
        self.sections: list[tuple[str, str, list[list[str]], list[dict] | None]] = []
        self.mlxq_pids: list[int] = []

    def start(self) -> None:
        self.redis_url = self.procs.redis_server(self.procs.log_dir)

    def section(self, title: str, body: Callable[[], tuple], flush: bool = True) -> None:
        """``body`` returns the section's text and summary rows, and the numbers of its figure
        when it has one. A failing section is reported in the document; the others still
        run. ``flush``: empty Redis afterwards (not when the next section uses the same
        workers: their registration, which the OpenAI routes look up, would be gone)."""
        started = time.monotonic()
        print(f"== {title}", flush=True)
        figure = None
        try:
            text, summary, *rest = body()
            figure = rest[0] if rest else None
        except Exception as exc:
            traceback.print_exc()
            text = f"## {title}\n\n**Failed**: `{type(exc).__name__}: {exc}`\n"
            summary = [[title, "", "failed", f"`{type(exc).__name__}`"]]
        finally:
            if flush:
                redis.Redis.from_url(self.redis_url).flushdb()
        self.sections.append((title[:3], text, summary, figure))
        print(text, flush=True)
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)

    def overhead(self) -> tuple[str, list[list[str]], list[dict]]:
        plan = self.plan
        latency = overhead.run_latency(
            self.procs, self.redis_url, self.mlxq_env, plan.rounds, plan.overhead_requests
        )
        bursts = []
        for warm in (False, True) if plan.warm_burst else (False,):
            redis.Redis.from_url(self.redis_url).flushdb()
            bursts.append(
                overhead.run_burst(
                    self.procs,
                    self.redis_url,
                    self.mlxq_env,
                    plan.burst_requests,
                    plan.burst_concurrency,
                    warm,
                )
            )
        distribution = figures.distribution(
            "Latency per request, every round",
            "ms",
            {
                "mlxq /ask (echo engine)": latency.mlxq_ms,
                "bare RQ round trip": latency.rq_ms,
                "GET /health (HTTP only)": latency.health_ms,
            },
        )
        bars = figures.overhead(
            [
                (
                    "mlxq /ask (echo engine)",
                    figures.spread_of(latency.mlxq_p50_ms),
                    figures.spread_of(latency.mlxq_p99_ms),
                ),
                (
                    "bare RQ round trip",
                    figures.spread_of(latency.rq_p50_ms),
                    figures.spread_of(latency.rq_p99_ms),
                ),
                (
                    "GET /health (HTTP only)",
                    figures.spread_of(latency.health_p50_ms),
                    figures.spread_of(latency.health_p99_ms),
                ),
            ]
        )
        return (*overhead.render(latency, bursts), [*bars, distribution])

    def _model_env(self, model: Path) -> dict[str, str]:
        return self.mlxq_env | {
            "MLXQ_REDIS_URL": self.redis_url,
            "MLXQ_MODEL": str(model),
            "MLXQ_WORKER_CONCURRENCY": "8",
        }

    def generation(self, model: Path, sections: str) -> None:
        """Sections b, c and f, on one API and one worker as shipped (stopped afterwards)."""
        env = self._model_env(model)
        mlxq_url, api = self.procs.mlxq_api(env)
        worker = self.procs.mlxq_worker(env, timeout=300)
        assert self.procs.redis_process is not None
        # Every process mlxq needs to answer counts towards its CPU time (Redis serves only it).
        self.mlxq_pids = [api.pid, worker.pid, self.procs.redis_process.pid]
        counter = TokenCounter(model)
        try:
            if "b" in sections:
                self.section(
                    "(b) Single-request tokens/s", lambda: self._single(model, mlxq_url, counter)
                )
            if "c" in sections:
                self.section(
                    "(c) Aggregate tokens/s under concurrency",
                    lambda: self._concurrent(model, mlxq_url, counter),
                )
            if "f" in sections:
                self.section(
                    "(f) Time to first token", lambda: self._first_token(model, mlxq_url, counter)
                )
        finally:
            for process in (worker, api):
                self.procs.stop(process)

    def chat(self, model: Path, sections: str) -> None:
        """Sections g and h, on a fresh API and worker (an empty prefix cache) and a fresh
        mlx_lm.server (an empty prompt cache); all stopped afterwards."""
        env = self._model_env(model)
        mlxq_url, api = self.procs.mlxq_api(env)
        worker = self.procs.mlxq_worker(env, timeout=300)
        server_url, server = self.procs.mlx_lm_server(model, self.blas_env, concurrency=8)
        counter = TokenCounter(model)
        rounds = self.plan.chat_rounds
        try:
            if "g" in sections:
                self.section(
                    "(g) Multi-turn chat: mlxq against mlx_lm.server",
                    lambda: self._chat(mlxq_url, server_url, counter, rounds),
                    flush="h" not in sections,
                )
            if "h" in sections:
                self.section(
                    "(h) A long prompt sent twice",
                    lambda: chat.render_repeat(
                        chat.run_repeat(mlxq_url, server_url, counter, rounds), rounds
                    ),
                )
        finally:
            for process in (server, worker, api):
                self.procs.stop(process)

    def batches(self, model: Path, sections: str) -> None:
        """Sections j and k, each on a fresh API and worker: (j) with every slot open to
        batch lines, against mlx-lm's batch_generate; (k) as shipped."""
        plan, model_id = self.plan, str(model)
        if "j" in sections:
            env = self._model_env(model) | {"MLXQ_BATCH_SLOTS": "8"}
            url, api = self.procs.mlxq_api(env)
            worker = self.procs.mlxq_worker(env, timeout=300)
            reference = batch.start_reference(self.procs, model, self.blas_env)
            try:
                self.section(
                    "(j) Batch throughput: the Batch API against mlx-lm's batch_generate",
                    lambda: batch.render_throughput(
                        batch.run_throughput(
                            url,
                            model_id,
                            reference,
                            TokenCounter(model),
                            plan.rounds,
                            plan.batch_lines,
                            plan.batch_tokens,
                        ),
                        plan.rounds,
                    ),
                )
            finally:
                for process in (reference.process, worker, api):
                    self.procs.stop(process)
        if "k" in sections:
            env = self._model_env(model)
            url, api = self.procs.mlxq_api(env)
            worker = self.procs.mlxq_worker(env, timeout=300)
            try:
                self.section(
                    "(k) Interactive latency while a batch runs",
                    lambda: batch.render_latency(
                        batch.run_latency(url, model_id, plan.latency_requests, 500, 64)
                    ),
                )
            finally:
                for process in (worker, api):
                    self.procs.stop(process)

    def models_on_demand(self, model: Path) -> tuple[str, list[list[str]], list[dict]]:
        """Section l: one worker holding two models (the second loaded on demand) against
        mlx_lm.server given the same two; both stopped afterwards."""
        second = model_switch.second_model(model)
        env = self._model_env(model) | {"MLXQ_MODELS": str(second)}
        url, api = self.procs.mlxq_api(env)
        worker = self.procs.mlxq_worker(env, timeout=300)
        server_url, server = self.procs.mlx_lm_server(model, self.blas_env, concurrency=8)
        try:
            result = model_switch.run_switch(url, server_url, (model, second), self.plan.rounds)
        finally:
            for process in (server, worker, api):
                self.procs.stop(process)
        figure = figures.models_on_demand(
            figures.spread_of(result.cold_ttft_ms),
            figures.spread_of(result.warm_ttft_ms),
            figures.spread_of(result.mlxq_alt_ms),
            figures.spread_of(result.server_alt_ms),
        )
        return (*model_switch.render(result, self.plan.rounds), figure)

    def _chat(
        self, mlxq_url: str, server_url: str, counter: TokenCounter, rounds: int
    ) -> tuple[str, list[list[str]], list[dict]]:
        result = chat.run_chat(mlxq_url, server_url, counter, rounds)
        m, s = result.sides["mlxq"], result.sides["server"]
        figure = figures.chat(
            (figures.spread_of(m.tps), figures.spread_of(s.tps)),
            (figures.spread_of(m.first_ttft_ms), figures.spread_of(s.first_ttft_ms)),
            (figures.spread_of(m.later_ttft_ms), figures.spread_of(s.later_ttft_ms)),
            f"2-{chat.TURNS}",
        )
        return (*chat.render_chat(result, rounds), figure)

    def routing(self, model: Path) -> tuple[str, list[list[str]]]:
        rounds = self.plan.chat_rounds
        result = chat.run_routing(self.procs, self._model_env(model), TokenCounter(model), rounds)
        return chat.render_routing(result, rounds)

    def scale_out(self, model: Path) -> tuple[str, list[list[str]], list[dict]]:
        plan = self.plan
        result = scaleout.run_scale_out(
            self.procs,
            self._model_env(model),
            TokenCounter(model),
            plan.rounds,
            plan.scale_requests,
            plan.scale_tokens,
        )
        figure = figures.scale_out(
            [
                ("1 worker (core 0)", figures.spread_of(result.tps[1])),
                ("2 workers (cores 0 and 1)", figures.spread_of(result.tps[2])),
            ]
        )
        return (*scaleout.render(result, plan.rounds), figure)

    def speculative(self, model: Path) -> tuple[str, list[list[str]]]:
        """Section m: an API and a worker as shipped (speculation on by default) against
        direct mlx-lm; then a worker with a draft model against mlx_lm.server with the same
        draft model. Everything stopped afterwards."""
        env = self._model_env(model)
        rounds = self.plan.chat_rounds
        url, api = self.procs.mlxq_api(env)
        worker = self.procs.mlxq_worker(env, timeout=300)
        direct, process = self._direct(model, self.blas_env)
        try:
            result = speculation.run_speculation(url, direct, rounds)
        finally:
            for started in (process, worker):
                self.procs.stop(started)
        draft_folder = BENCH_CACHE / f"{model.name}-draft{speculation.DRAFT_LAYERS}"
        # in its own process, like the float32 copy: this one never imports MLX
        layers = str(speculation.DRAFT_LAYERS)
        argv = [sys.executable, "-m", "bench.draft_model", str(model), str(draft_folder), layers]
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        draft = draft_folder
        worker = self.procs.mlxq_worker(env | {"MLXQ_DRAFT_MODEL": str(draft)}, timeout=300)
        flags = ("--draft-model", str(draft), "--num-draft-tokens", str(speculation.DRAFT_TOKENS))
        server_url, server = self.procs.mlx_lm_server(model, self.blas_env, 8, flags)
        try:
            drafted = speculation.run_draft(url, server_url, rounds, result)
        finally:
            for started in (server, worker, api):
                self.procs.stop(started)
        return speculation.render(result, drafted, rounds)

    def _direct(self, model: Path, env: dict[str, str]) -> tuple[DirectMLX, subprocess.Popen]:
        argv = [sys.executable, "-m", "bench.direct_mlx", str(model)]
        process = self.procs.start("direct-mlx-lm", argv, env, stdin=subprocess.PIPE)
        return DirectMLX(process), process

    def _single(
        self, model: Path, mlxq_url: str, counter: TokenCounter
    ) -> tuple[str, list[list[str]]]:
        plan = self.plan
        direct, process = self._direct(model, self.blas_env)
        try:
            result = generation.run_single(
                mlxq_url,
                direct,
                counter,
                plan.rounds,
                plan.single_tokens,
                Pids(self.mlxq_pids, [process.pid]),
            )
        finally:
            self.procs.stop(process)
        if plan.default_blas_context and self.blas_env:
            # For context only: what MLX's bundled reference BLAS gives, one run.
            slow, process = self._direct(model, {})
            try:
                answer = slow.ask(generation.SINGLE_PROMPT, plan.single_tokens)
                result.default_blas_tps = answer.completion_tokens / answer.seconds
            finally:
                self.procs.stop(process)
        return generation.render_single(result, plan.rounds)

    def _first_token(
        self, model: Path, mlxq_url: str, counter: TokenCounter
    ) -> tuple[str, list[list[str]], list[dict]]:
        plan = self.plan
        direct, process = self._direct(model, self.blas_env)
        try:
            results = first_token.run_first_token(
                mlxq_url, direct, counter, plan.rounds, plan.first_token_repetitions
            )
        finally:
            self.procs.stop(process)
        figure = figures.first_token(
            [
                (
                    f"{r.name} ({r.prompt_tokens} tokens)",
                    figures.spread_of(r.mlxq_p50_ms),
                    figures.spread_of(r.direct_p50_ms),
                )
                for r in results
            ]
        )
        return (*first_token.render(results, plan.rounds, plan.first_token_repetitions), figure)

    def _concurrent(
        self, model: Path, mlxq_url: str, counter: TokenCounter
    ) -> tuple[str, list[list[str]], list[dict]]:
        plan = self.plan
        server_url, server = self.procs.mlx_lm_server(model, self.blas_env, concurrency=8)
        result = generation.run_concurrent(
            mlxq_url,
            server_url,
            counter,
            plan.rounds,
            plan.levels,
            plan.concurrent_tokens,
            Pids(self.mlxq_pids, [server.pid]),
        )
        client = redis.Redis.from_url(self.redis_url)
        peaks = [client.hget(key, "peak_batch") for key in client.keys("mlxq:worker:*:stats")]
        result.mlxq_peak_batch = max((int(p) for p in peaks if p is not None), default=None)
        levels = list(result.levels)
        figure = figures.concurrency(
            levels,
            [figures.spread_of(result.levels[n].mlxq_tps) for n in levels],
            [figures.spread_of(result.levels[n].server_tps) for n in levels],
        )
        return (*generation.render_concurrent(result, plan.rounds), figure)


FAIRNESS = (
    "MLX's Linux CPU wheel links a slow reference BLAS, and its CPU quantized kernels are "
    "slow: mlxq's workers load OpenBLAS before importing MLX and expand quantized weights "
    "to float32 at load (worker/cpu_backend.py). So that the comparisons measure the "
    "serving paths and not those two choices, every system loads the same float32 copy of "
    "the demo model (`{model}`: the demo model loaded with mlx-lm, expanded by "
    "`worker.cpu_backend.dequantize_to_float32`, saved, and checked to give the same greedy "
    "text; bench/model_copy.py), and the baselines run with `LD_PRELOAD` set to the same "
    "OpenBLAS that mlxq's workers find. mlxq runs exactly as shipped (it loads OpenBLAS "
    "itself)."
)
RUN_FIELDS = {"mlxq commit": "commit", "load average, start -> end": "load"}
"""Machine rows that belong to one run, not to the machine: kept with the run."""


# -- stored sections: each section's last text, and the run it came from ----------------------


def stored_path(output: Path) -> Path:
    return output.parent / "data" / SECTIONS_FILE


def load_stored(output: Path) -> dict:
    """The stored sections; the first time, those of the document already at ``output``."""
    path = stored_path(output)
    if path.exists():
        return json.loads(path.read_text())
    if output.exists():
        return import_document(output.read_text())
    return {"machine": {}, "model": None, "sections": {}, "runs": {}}


def import_document(text: str) -> dict:
    """Sections, summary rows, machine and run of a document written before sections were
    stored (its text is kept as it is)."""
    lines = text.splitlines()
    found = re.search(r"^Run of (.+?), ([\d.]+) minutes, (\d+) rounds per comparison", text, re.M)
    command = next(
        (lines[i + 1] for i, line in enumerate(lines[:-1]) if line.strip() == "```sh"), ""
    )
    machine = dict(_table_rows(_block(lines, "## Machine")))
    model = re.search(r"float32 copy of the demo model \(`([^`]+)`", text)
    run_id = found.group(1) if found else "unknown"
    run = {
        "date": run_id,
        "minutes": float(found.group(2)) if found else None,
        "rounds": found.group(3) if found else "",
        "command": command.split("#")[0].strip(),
    }
    for name, key in RUN_FIELDS.items():
        run[key] = machine.pop(name, "")
    summary = [row for row in _table_rows(_block(lines, "## Summary")) if row[0][:1] == "("]
    sections: dict[str, dict] = {}
    starts = [i for i, line in enumerate(lines) if re.match(r"## \([a-z]\) ", line)]
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        key = lines[start][3:6]
        body = "\n".join(lines[start:end]).rstrip() + "\n"
        rows = [row for row in summary if row[0].startswith(key)]
        sections[key] = {"text": body, "summary": rows, "run": run_id}
    return {
        "machine": machine,
        "model": model.group(1) if model else None,
        "sections": sections,
        "runs": {run_id: run},
    }


def _block(lines: list[str], heading: str) -> list[str]:
    """The lines under a heading, up to the next heading of the same level."""
    if heading not in lines:
        return []
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def _table_rows(lines: list[str]) -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
    cells = [[cell.strip() for cell in row] for row in rows[2:]]  # past the header and rule
    return cells


def store_run(
    stored: dict,
    run: "Run",
    machine: dict[str, str],
    model: Path | None,
    record: dict,
) -> None:
    """Put this run's sections over the stored ones; drop runs no section comes from."""
    machine = dict(machine)
    for name, key in RUN_FIELDS.items():
        record[key] = machine.pop(name, "")
    stored["machine"] = machine
    if model is not None:
        stored["model"] = str(model)
    stored["runs"][record["date"]] = record
    for key, text, summary, figure in run.sections:
        section = {"text": text, "summary": summary, "run": record["date"]}
        if figure is not None:
            section |= {"figure": figure, "figure_from": "run"}
        stored["sections"][key] = section
    used = {section["run"] for section in stored["sections"].values()}
    stored["runs"] = {k: v for k, v in stored["runs"].items() if k in used}


def render_document(stored: dict, output: Path, notes: list[str] | None = None) -> str:
    sections = dict(sorted(stored["sections"].items()))
    sampling = _sampling(output)
    group = _worker_group(output)
    runs = sorted(stored["runs"].values(), key=lambda run: run["date"])
    run_rows = []
    for run in runs:
        letters = ", ".join(k[1] for k, v in sections.items() if v["run"] == run["date"])
        minutes = f"{run['minutes']:.1f} min" if run.get("minutes") is not None else ""
        run_rows.append(
            [
                run["date"],
                letters,
                minutes,
                run.get("rounds", ""),
                f"`{run.get('command', '')}`",
                run.get("commit", ""),
                run.get("load", ""),
            ]
        )
    parts = [
        "# Benchmarks",
        "",
        "Written by `bench/run.py`; do not edit by hand. Reproduce every section with:",
        "",
        "```sh",
        "make bench   # = .venv/bin/python bench/run.py",
        "```",
        "",
        "or some of them with `.venv/bin/python bench/run.py --sections <letters>`: each "
        "section keeps the text of the last run that measured it (docs/data/bench_sections.json),"
        " so the sections below may come from different runs, listed here. Each figure is "
        "drawn from numbers stored with its section (`--render-only` draws them again); for a "
        "section measured before figures existed, they are read from its own table. In each "
        "round the "
        "compared systems ran back to back on the same machine, their order alternating between "
        "rounds. All traffic went to 127.0.0.1 (a private redis-server on a free port).",
        "",
        "## Runs",
        "",
        table(
            [
                "run of",
                "sections",
                "length",
                "rounds per comparison",
                "command",
                "mlxq commit",
                "load average, start -> end",
            ],
            run_rows,
        ),
        "",
        "## Machine",
        "",
        table(["", ""], list(stored["machine"].items())),
        "",
        "## Fairness",
        "",
        FAIRNESS.format(model=stored.get("model")),
        "",
    ]
    summary = [row for section in sections.values() for row in section["summary"]]
    if sampling is not None:
        summary += sampling[1]
    if group is not None:
        summary += group[1]
    if summary:
        parts += [
            "## Summary",
            "",
            table(["what", "target", "measured", "verdict"], summary),
            "",
        ]
    parts += [_with_figure(key, section) for key, section in sections.items()]
    if sampling is not None:
        parts.append(sampling[0])
    if group is not None:
        parts.append(group[0])
    parts += notes or []
    return "\n".join(parts).rstrip() + "\n"


def figure_name(key: str) -> str:
    """The file of a section's figure, in docs/img/: "(c)" -> "bench-c.svg"."""
    return f"bench-{key[1]}.svg"


def add_missing_figures(stored: dict) -> None:
    """Sections stored before figures existed get their numbers from their own tables (and
    say so), never from anything else; a section whose table cannot be read gets none."""
    for key, section in stored["sections"].items():
        if "figure" not in section:
            figure = figures.from_text(key, section["text"])
            if figure is not None:
                section |= {"figure": figure, "figure_from": "the stored table"}


def _with_figure(key: str, section: dict) -> str:
    """The section's text with its figure above its first table."""
    text = section["text"]
    if "figure" not in section:
        return text
    kinds = {chart["kind"] for chart in section["figure"]}
    captions = []
    if kinds - {"cdf"}:
        captions.append("Median over rounds; whiskers: the rounds' min-max.")
    if "cdf" in kinds:
        captions.append(
            "Distribution: every request of every round; a point is the share of requests "
            "at most that slow (further right is slower; a tail shows as a late rise to 100%)."
        )
    image = f"![{key} figure]({FIGURES_DIR}/{figure_name(key)})\n\n*{' '.join(captions)}*\n\n"
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    return "".join(lines[:first_table]) + image + "".join(lines[first_table:])


def _sampling(output: Path) -> tuple[str, list[list[str]]] | None:
    """The sampling-cost section (bench/sampling_cost.py, run by hand), if it has been run."""
    path = output.parent / "data" / SAMPLING_FILE
    if not path.exists():
        return None
    return sampling_cost.render(json.loads(path.read_text()))


def _worker_group(output: Path) -> tuple[str, list[list[str]]] | None:
    """The worker-group section (bench/worker_group.py, run by hand), if it has been run."""
    from bench import worker_group

    path = output.parent / "data" / "worker_group.json"
    if not path.exists():
        return None
    return worker_group.render(json.loads(path.read_text()))


def write_document(stored: dict, output: Path, notes: list[str] | None = None) -> None:
    from bench import plots  # matplotlib: only when drawing

    add_missing_figures(stored)
    path = stored_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=1) + "\n")
    for key, section in stored["sections"].items():
        if "figure" in section:
            plots.draw(section["figure"], output.parent / FIGURES_DIR / figure_name(key))
    output.write_text(render_document(stored, output, notes))


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"


def _rounds(plan: Plan, sections: str) -> str:
    """Rounds per comparison of the sections that ran (g, h and i have their own)."""
    parts = []
    if set("abcdfjl") & set(sections):
        parts.append(str(plan.rounds))
    if set("ghi") & set(sections):
        parts.append(str(plan.chat_rounds) if not parts else f"g, h, i: {plan.chat_rounds}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args, plan = parse_args(argv)
    if args.render_only:
        write_document(load_stored(args.output), args.output)
        print(f"wrote {args.output} from {stored_path(args.output)}")
        return 0
    started = time.monotonic()

    def out_of_time(signum, frame):
        raise TimeoutError(f"the benchmark ran past --time-limit {args.time_limit} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.time_limit)
    raise_open_file_limit()
    blas = openblas_path()
    if blas is None:
        print("warning: OpenBLAS not found; every system uses MLX's own BLAS", file=sys.stderr)
    machine = describe(blas)
    load_at_start = _load()
    run_date = time.strftime("%Y-%m-%d %H:%M %Z")
    print(table(["", ""], list(machine.items())), flush=True)
    model = float32_model(blas) if set("bcdfghijklm") & set(args.sections) else None
    log_dir = BENCH_CACHE / "logs"  # the last run's process logs, kept for diagnosis
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    procs = Processes(log_dir)
    run = Run(plan, blas, procs)
    notes = []
    try:
        run.start()
        # Run order a, e, b, c, f, g, h, i, j, k, d (d wants the cores without the others'
        # processes); the document lists the sections in letter order.
        if "a" in args.sections:
            run.section("(a) Overhead per request", run.overhead)
        if "e" in args.sections:
            run.section("(e) GPU: mlxq's engine against mlx-lm", gpu.render)
        if model is not None and set("bcf") & set(args.sections):
            run.generation(model, args.sections)
        if model is not None and set("gh") & set(args.sections):
            run.chat(model, args.sections)
        if model is not None and "i" in args.sections:
            run.section("(i) Routing a conversation back to its worker", lambda: run.routing(model))
        if model is not None and set("jk") & set(args.sections):
            run.batches(model, args.sections)
        if model is not None and "l" in args.sections:
            run.section("(l) Models on demand", lambda: run.models_on_demand(model))
        if model is not None and "m" in args.sections:
            run.section(
                "(m) Speculative decoding: mlxq against direct mlx-lm",
                lambda: run.speculative(model),
            )
        if model is not None and "d" in args.sections:
            run.section("(d) Scale-out: 2 workers against 1", lambda: run.scale_out(model))
    except Exception:
        traceback.print_exc()
        notes.append(f"**Run of {run_date} aborted**: `{traceback.format_exc(limit=1)}`\n")
    finally:
        signal.alarm(0)
        procs.stop_all()
    # Other work on the machine during the run shows here (the spread in the tables too).
    machine["load average, start -> end"] = f"{load_at_start} -> {_load()}"
    command = " ".join(
        ["make bench" if not sys.argv[1:] else ".venv/bin/python bench/run.py"] + sys.argv[1:]
    )
    record = {
        "date": run_date,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "rounds": _rounds(plan, args.sections),
        "command": command,
    }
    stored = load_stored(args.output)
    store_run(stored, run, machine, model, record)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_document(stored, args.output, notes)
    print(f"process logs: {log_dir}")
    print(f"wrote {args.output} ({(time.monotonic() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
