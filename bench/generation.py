"""Sections (b) and (c): real generation through mlxq against direct mlx-lm and mlx_lm.server."""

import asyncio
from dataclasses import dataclass, field

import httpx
from tqdm import trange

from bench.clients import (
    Answer,
    DirectMLX,
    TokenCounter,
    ask_mlx_server_async,
    ask_mlxq,
    ask_mlxq_async,
    fire_together,
)
from bench.cpu import cpu_seconds
from bench.stats import median, spread, table, verdict

SINGLE_PROMPT = "Write a long story about a dragon."
SUBJECTS = ["dragon", "robot", "pirate", "wizard", "mermaid", "knight", "unicorn", "astronaut"]
SINGLE_TARGET = 0.95
AT_8_TARGET = 1.0
AT_8_GOAL = 1.25


@dataclass
class SingleResult:
    max_tokens: int
    mlxq_tps: list[float] = field(default_factory=list)
    direct_tps: list[float] = field(default_factory=list)
    mlxq_tokens: list[int] = field(default_factory=list)
    direct_tokens: list[int] = field(default_factory=list)
    direct_recounted: list[int] = field(default_factory=list)
    texts_match: list[bool] = field(default_factory=list)
    mlxq_cpu_ms: list[float] = field(default_factory=list)  # CPU ms per token, own processes
    direct_cpu_ms: list[float] = field(default_factory=list)
    default_blas_tps: float | None = None  # context: direct mlx-lm with MLX's bundled BLAS


@dataclass
class LevelResult:
    mlxq_tps: list[float] = field(default_factory=list)
    server_tps: list[float] = field(default_factory=list)
    mlxq_tokens: list[int] = field(default_factory=list)
    server_tokens: list[int] = field(default_factory=list)
    server_recounted: list[int] = field(default_factory=list)
    same_texts: list[int] = field(default_factory=list)
    mlxq_cpu_ms: list[float] = field(default_factory=list)  # CPU ms per token, own processes
    server_cpu_ms: list[float] = field(default_factory=list)


@dataclass
class ConcurrentResult:
    max_tokens: int
    levels: dict[int, LevelResult]
    mlxq_peak_batch: int | None = None


@dataclass
class Pids:
    """The processes whose CPU time counts for each system (mlxq: API, worker and Redis)."""

    mlxq: list[int]
    baseline: list[int]


def run_single(
    mlxq_url: str,
    direct: DirectMLX,
    counter: TokenCounter,
    rounds: int,
    max_tokens: int,
    pids: Pids,
) -> SingleResult:
    """One request at a time, same prompt, greedy; mlxq and direct mlx-lm alternate first."""
    result = SingleResult(max_tokens)
    cpu: dict[str, float] = {}
    with httpx.Client(base_url=mlxq_url, timeout=300) as client:
        ask_mlxq(client, SINGLE_PROMPT, 8, counter)  # warm-up: first-call allocations
        direct.ask(SINGLE_PROMPT, 8)
        for round_index in trange(rounds, desc="generation", unit="round", leave=False):
            answers: dict[str, Answer] = {}
            order = ["mlxq", "direct"] if round_index % 2 == 0 else ["direct", "mlxq"]
            for system in order:
                own = pids.mlxq if system == "mlxq" else pids.baseline
                before = cpu_seconds(own)
                if system == "mlxq":
                    answers[system] = ask_mlxq(client, SINGLE_PROMPT, max_tokens, counter)
                else:
                    answers[system] = direct.ask(SINGLE_PROMPT, max_tokens)
                cpu[system] = cpu_seconds(own) - before
            mlxq, base = answers["mlxq"], answers["direct"]
            result.mlxq_cpu_ms.append(cpu["mlxq"] * 1000 / mlxq.completion_tokens)
            result.direct_cpu_ms.append(cpu["direct"] * 1000 / base.completion_tokens)
            result.mlxq_tps.append(mlxq.completion_tokens / mlxq.seconds)
            result.direct_tps.append(base.completion_tokens / base.seconds)
            result.mlxq_tokens.append(mlxq.completion_tokens)
            result.direct_tokens.append(base.completion_tokens)
            result.direct_recounted.append(counter.count(base.text))
            result.texts_match.append(mlxq.text == base.text)
    return result


def _questions(round_index: int, level: int) -> list[str]:
    # Unique per round and level: mlx_lm.server caches prompt KV; a repeated prompt would
    # skip its prefill there (mlxq has no prompt cache), which is not what is measured here.
    return [
        f"Write a long story about a {SUBJECTS[i % len(SUBJECTS)]} "
        f"(story {round_index}.{level}.{i})."
        for i in range(level)
    ]


def run_concurrent(
    mlxq_url: str,
    server_url: str,
    counter: TokenCounter,
    rounds: int,
    levels: list[int],
    max_tokens: int,
    pids: Pids,
) -> ConcurrentResult:
    result = ConcurrentResult(max_tokens, {level: LevelResult() for level in levels})
    systems = {
        "mlxq": (mlxq_url, ask_mlxq_async, pids.mlxq),
        "server": (server_url, ask_mlx_server_async, pids.baseline),
    }
    for url, ask, _ in systems.values():  # warm-up: the single path and a full batch
        asyncio.run(fire_together(url, ask, _questions(-1, 1), 8, counter))
        asyncio.run(fire_together(url, ask, _questions(-1, max(levels)), 8, counter))
    for round_index in trange(rounds, desc="generation", unit="round", leave=False):
        for level in levels:
            questions = _questions(round_index, level)
            order = ["mlxq", "server"] if (round_index + level) % 2 == 0 else ["server", "mlxq"]
            runs: dict[str, tuple[list[Answer], float, float]] = {}
            for name in order:
                url, ask, own = systems[name]
                before = cpu_seconds(own)
                answers, wall = asyncio.run(fire_together(url, ask, questions, max_tokens, counter))
                runs[name] = (answers, wall, cpu_seconds(own) - before)
            _record(result.levels[level], runs, counter)
    return result


def _record(
    level: LevelResult,
    runs: dict[str, tuple[list[Answer], float, float]],
    counter: TokenCounter,
) -> None:
    mlxq_answers, mlxq_wall, mlxq_cpu = runs["mlxq"]
    server_answers, server_wall, server_cpu = runs["server"]
    mlxq_tokens = sum(a.completion_tokens for a in mlxq_answers)
    server_tokens = sum(a.completion_tokens for a in server_answers)
    level.mlxq_tps.append(mlxq_tokens / mlxq_wall)
    level.server_tps.append(server_tokens / server_wall)
    level.mlxq_cpu_ms.append(mlxq_cpu * 1000 / mlxq_tokens)
    level.server_cpu_ms.append(server_cpu * 1000 / server_tokens)
    level.mlxq_tokens.append(mlxq_tokens)
    level.server_tokens.append(server_tokens)
    level.server_recounted.append(sum(counter.count(a.text) for a in server_answers))
    level.same_texts.append(
        sum(a.text == b.text for a, b in zip(mlxq_answers, server_answers, strict=True))
    )


def render_single(result: SingleResult, rounds: int) -> tuple[str, list[list[str]]]:
    """The section's text, and its row for the summary table."""
    ratios = [m / d for m, d in zip(result.mlxq_tps, result.direct_tps, strict=True)]
    ratio = median(ratios)
    summary = [
        [
            "(b) single-request tokens/s, mlxq / direct mlx-lm",
            f">= {SINGLE_TARGET}x",
            f"{ratio:.2f}x",
            verdict(ratio, SINGLE_TARGET, higher_is_better=True),
        ]
    ]
    matched = sum(result.texts_match)
    rows = [
        [
            "mlxq /ask (HTTP, Redis, worker)",
            spread(result.mlxq_tps),
            spread(result.mlxq_cpu_ms, 0),
            _tokens(result.mlxq_tokens),
        ],
        [
            "direct mlx-lm `stream_generate`",
            spread(result.direct_tps),
            spread(result.direct_cpu_ms, 0),
            _tokens(result.direct_tokens),
        ],
    ]
    if result.default_blas_tps is not None:
        context = "(context) direct mlx-lm, MLX's bundled BLAS"
        rows.append([context, f"{result.default_blas_tps:.1f}", "", "1 run"])
    parts = [
        "## (b) Single-request tokens/s",
        "",
        f"Prompt {SINGLE_PROMPT!r} (chat template), greedy, max_tokens {result.max_tokens}, "
        f"{rounds} rounds; tokens/s = completion tokens / wall time of the whole request "
        "(prefill included; HTTP included for mlxq). Median (min-max) over rounds.",
        "",
        table(["system", "tokens/s", "CPU ms per token", "completion tokens per request"], rows),
        "",
        f"**mlxq / direct mlx-lm = {ratio:.2f}x** (median of the rounds' ratios, "
        f"{spread(ratios, 2)}): target >= {SINGLE_TARGET}x: "
        + verdict(ratio, SINGLE_TARGET, higher_is_better=True),
        "",
        f"Same greedy text from both in {matched} of {len(result.texts_match)} rounds. "
        "mlxq's completion tokens are counted by encoding its answer again with the model's "
        "tokenizer (/ask returns text only); encoding direct mlx-lm's text the same way gives "
        f"{_tokens(result.direct_recounted)} tokens against the {_tokens(result.direct_tokens)} "
        "it generated.",
        "",
        ABOUT_B,
        "",
    ]
    return "\n".join(parts), summary


def render_concurrent(result: ConcurrentResult, rounds: int) -> tuple[str, list[list[str]]]:
    """The section's text, and its rows for the summary table."""
    rows = []
    summary = []
    ratios: dict[int, float] = {}
    for level, data in result.levels.items():
        paired = [m / v for m, v in zip(data.mlxq_tps, data.server_tps, strict=True)]
        ratios[level] = median(paired)
        rows.append(
            [
                level,
                spread(data.mlxq_tps),
                spread(data.server_tps),
                spread(paired, 2, prefix="**", suffix="x**"),
                f"{median(data.mlxq_cpu_ms):.0f} / {median(data.server_cpu_ms):.0f}",
                _tokens(data.mlxq_tokens),
                f"{_tokens(data.server_tokens)} ({_tokens(data.server_recounted)})",
                f"{sum(data.same_texts)}/{level * len(data.same_texts)}",
            ]
        )
    parts = [
        "## (c) Aggregate tokens/s under concurrency",
        "",
        f"N clients send different prompts at once (greedy, max_tokens {result.max_tokens}); "
        "aggregate = total completion tokens / wall time from the first send to the last answer. "
        f"{rounds} rounds; median (min-max) over rounds; mlxq / server is the median of the "
        "rounds' ratios (each round runs both back to back).",
        "",
        table(
            [
                "concurrent",
                "mlxq tok/s",
                "mlx_lm.server tok/s",
                "mlxq / server",
                "CPU ms per token, mlxq / server",
                "mlxq tokens per round",
                "server tokens (re-encoded)",
                "same text",
            ],
            rows,
        ),
        "",
    ]
    top = max(ratios)
    if top >= 8:
        goal = "reached" if ratios[top] >= AT_8_GOAL else "not reached"
        line = (
            verdict(ratios[top], AT_8_TARGET, higher_is_better=True) + f"; goal {AT_8_GOAL}x {goal}"
        )
        parts.append(f"- at {top}: target >= {AT_8_TARGET}x: {line}")
        summary.append(
            [
                f"(c) aggregate tokens/s at {top}, mlxq / mlx_lm.server",
                f">= {AT_8_TARGET}x (goal {AT_8_GOAL}x)",
                f"{ratios[top]:.2f}x",
                line,
            ]
        )
    if 1 in ratios:
        faster = "**met**" if ratios[1] > 1 else "**missed**"
        parts.append(f"- at 1: target faster than mlx_lm.server: {faster} ({ratios[1]:.2f}x)")
        summary.append(
            ["(c) tokens/s at 1, mlxq / mlx_lm.server", "> 1x", f"{ratios[1]:.2f}x", faster]
        )
    for level in ratios:
        if level not in (1, top):
            summary.append(
                [
                    f"(c) aggregate tokens/s at {level}, mlxq / mlx_lm.server",
                    "(no target)",
                    f"{ratios[level]:.2f}x",
                    "",
                ]
            )
    if result.mlxq_peak_batch is not None:
        parts.append(
            f"- mlxq worker's peak batch size (its stats in Redis): {result.mlxq_peak_batch}"
        )
    parts += ["", ABOUT_C, ""]
    return "\n".join(parts), summary


def _tokens(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


ABOUT_B = """\
**What this shows.** What a single request pays for going through mlxq (HTTP, Redis, RQ
bookkeeping, the worker's engine and reporter threads) compared with calling mlx-lm's
`stream_generate` in-process on the same prompt: same float32 weights, same OpenBLAS, same
chat template, same greedy decoding. Direct mlx-lm runs in its own process
(`bench/direct_mlx.py`), started once and timed inside (template, tokenization, prefill,
decoding, detokenization). "CPU ms per token" is the user + system CPU time of each
system's own processes (mlxq: API, worker and Redis; direct: its one process) over the
request, divided by its tokens: it moves much less than wall time when other work shares
the machine, though OpenBLAS threads spinning while they wait for work count in it too.

**What is missed, and why.** The direct baseline has no HTTP and no queue, so any gap is
mlxq's cost, and on 2 cores that includes the API, Redis and the reporter thread competing
with the two BLAS threads. One prompt and one length only; a longer answer amortizes the
per-request overhead further, a shorter one less."""

ABOUT_C = """\
**What this shows.** Throughput from continuous batching: mlxq's one worker
(`MLXQ_WORKER_CONCURRENCY=8`) against `python -m mlx_lm server --decode-concurrency 8`, both
on the same float32 weights with the same OpenBLAS, reached through HTTP from the same client.
mlx_lm.server reports `usage.completion_tokens`; mlxq's /ask returns text, so its tokens
are counted by encoding each answer again with the model's tokenizer (the server's own
texts, encoded the same way, give the count in brackets: the two methods agree when they
are equal). "same text" counts answers identical between the two systems (greedy; batched
float arithmetic may legitimately differ in the last bits and so diverge after a while).
"CPU ms per token" (median over rounds) is user + system CPU time of each system's own
processes (mlxq: API, worker and Redis; mlx_lm.server: its process) per completion token:
less sensitive than wall time to other load on the machine.

**What is missed, and why.** Prompts are short (about 40-50 tokens) and unique per round, so
prefill is small and mlx_lm.server's prompt cache does not help it (it would on repeated
prompts, as mlxq's prefix cache would). Only one worker and one machine here: section (d)
adds a second worker. With 2 cores, the API, Redis and the client compete with the
BLAS threads of whichever system is measured; when other work shares the machine (see the
load averages under Runs), single rounds swing by a third either way. Profiled during
8-concurrent rounds (py-spy on both processes, and a trace of the engine's steps), both
generation threads spend about three quarters of their time in the same call, the
`mx.eval` of a decode step in mlx-lm's `GenerationBatch._step` (110-200 ms for 8 sequences
of float32 weights here); mlxq's own per-token Python (detokenizing, stop strings, posting
to the reporter) does not show, and its other threads are idle while it decodes. Both
systems thus run the same kernels at the same CPU time per token, so mlxq's scheduling
cannot add throughput they do not have: the 1.25x goal is out of reach on this machine,
and at 8 the ratio is within the spread between rounds. In both, the first request of a
burst is prefilled alone (about 0.3 s) while the others, which reach the engine some
milliseconds later, wait for it. Where decode steps are cheap (a GPU, section e) the
engine's batching does add throughput."""
