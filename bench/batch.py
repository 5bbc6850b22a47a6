"""Sections (j) and (k): the Batch API.

(j) Batch throughput: the same chat lines through mlxq's Batch API (one worker, all its
    slots open to batch lines) and through mlx-lm's own ``batch_generate`` (the same batch
    size), greedy, in each round back to back.
(k) Interactive latency while a batch runs: the same interactive requests, one after
    another, on an idle service and while a 500-line batch keeps its share of the slots busy
    (the shipped policy of worker/lanes.py).
"""

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import figures
from bench.clients import TokenCounter
from bench.generation import SUBJECTS
from bench.procs import Processes
from bench.stats import median, percentile, spread, table, verdict

THROUGHPUT_TARGET = 0.9
LATENCY_TARGET = 1.5  # interactive p50 while a batch runs, against idle
BATCH_SIZE = 8
INTERACTIVE_TOKENS = 16
POLL_S = 0.2


def questions(n: int, round_: int) -> list[str]:
    """Different questions each line and each round (no line is served from a cache)."""
    return [
        f"In round {round_}, write a short paragraph about {SUBJECTS[i % len(SUBJECTS)]} "
        f"(note {i})."
        for i in range(n)
    ]


def batch_file(model: str, texts: list[str], max_tokens: int) -> bytes:
    rows = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        }
        for i, text in enumerate(texts)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def submit(client: httpx.Client, content: bytes) -> str:
    upload = client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    upload.raise_for_status()
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    return created.json()["id"]


def wait_ended(client: httpx.Client, batch_id: str, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(POLL_S)
    raise TimeoutError(f"batch {batch_id} did not end within {timeout} s")


def output_texts(client: httpx.Client, batch: dict) -> dict[str, str]:
    content = client.get(f"/v1/files/{batch['output_file_id']}/content").text
    rows = [json.loads(line) for line in content.splitlines()]
    return {
        row["custom_id"]: row["response"]["body"]["choices"][0]["message"]["content"]
        for row in rows
    }


class BatchReference:
    """The mlx-lm ``batch_generate`` process (bench/batch_reference.py)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        if not self._read().get("ready"):
            raise RuntimeError("batch_generate reference did not start")

    def run(self, texts: list[str], max_tokens: int) -> dict:
        assert self.process.stdin is not None
        line = json.dumps({"questions": texts, "max_tokens": max_tokens, "batch_size": BATCH_SIZE})
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("batch_generate reference exited")
        return json.loads(line)


def start_reference(procs: Processes, model: Path, env: dict[str, str]) -> BatchReference:
    argv = [sys.executable, "-m", "bench.batch_reference", str(model)]
    process = procs.start("batch-generate", argv, env, stdin=subprocess.PIPE)
    return BatchReference(process)


@dataclass
class ThroughputResult:
    lines: int
    max_tokens: int
    mlxq_tps: list[float] = field(default_factory=list)
    reference_tps: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    same_texts: list[int] = field(default_factory=list)


def run_throughput(
    mlxq_url: str,
    model_id: str,
    reference: BatchReference,
    counter: TokenCounter,
    rounds: int,
    lines: int,
    max_tokens: int,
) -> ThroughputResult:
    result = ThroughputResult(lines, max_tokens)
    with httpx.Client(base_url=mlxq_url, timeout=300) as client:
        for round_ in range(rounds):
            texts = questions(lines, round_)
            order = ("mlxq", "reference") if round_ % 2 == 0 else ("reference", "mlxq")
            tps: dict[str, float] = {}
            answers: dict[str, list[str]] = {}
            for system in order:
                if system == "mlxq":
                    started = time.perf_counter()
                    batch = wait_ended(
                        client, submit(client, batch_file(model_id, texts, max_tokens))
                    )
                    seconds = time.perf_counter() - started
                    by_id = output_texts(client, batch)
                    answers["mlxq"] = [by_id[f"line-{i}"] for i in range(lines)]
                else:
                    reply = reference.run(texts, max_tokens)
                    seconds = reply["seconds"]
                    answers["reference"] = reply["texts"]
                tokens = sum(counter.count(text) for text in answers[system])
                tps[system] = tokens / seconds
            result.mlxq_tps.append(tps["mlxq"])
            result.reference_tps.append(tps["reference"])
            result.ratios.append(tps["mlxq"] / tps["reference"])
            result.same_texts.append(
                sum(a == b for a, b in zip(answers["mlxq"], answers["reference"], strict=True))
            )
            print(f"  round {round_}: mlxq {tps['mlxq']:.1f} tok/s, batch_generate "
                  f"{tps['reference']:.1f} tok/s", flush=True)  # fmt: skip
    return result


def render_throughput(result: ThroughputResult, rounds: int) -> tuple[str, list[list[str]]]:
    ratio = median(result.ratios)
    rows = [
        [
            spread(result.mlxq_tps),
            spread(result.reference_tps),
            f"**{ratio:.2f}x** ({min(result.ratios):.2f}-{max(result.ratios):.2f})",
            f"{sum(result.same_texts)}/{rounds * result.lines}",
        ]
    ]
    line = verdict(ratio, THROUGHPUT_TARGET, True)
    setup = (
        f"{result.lines} chat lines (a different question each, greedy, max_tokens "
        f"{result.max_tokens}) per round. mlxq: the file uploaded, the batch created and "
        f"polled until `completed`, the output file read (the time covers all of it), one "
        f"worker with `MLXQ_WORKER_CONCURRENCY=8` and `MLXQ_BATCH_SLOTS=8` (no interactive "
        f"traffic here, so every slot may take batch lines). mlx-lm: one `batch_generate` call"
        f" on the same prompts with 8 sequences at once (`completion_batch_size=8`, "
        f"`prefill_batch_size=8`), in its own process, the same float32 weights and OpenBLAS. "
        f"Tokens are counted by encoding each answer again with the model's tokenizer, for "
        f"both. {rounds} rounds, both systems back to back in each (order alternating); median"
        f" (min-max)."
    )
    text = f"""## (j) Batch throughput: the Batch API against mlx-lm's batch_generate

{setup}

{table(["mlxq tok/s", "batch_generate tok/s", "mlxq / batch_generate", "same text"], rows)}

- batch throughput: target >= {THROUGHPUT_TARGET:g}x batch_generate's: {line}

**What this shows.** The cost of running a batch as queued jobs (files in Redis, one job per
line through RQ, a driver in the API keeping 64 lines in flight, each answer rendered and
stored) against mlx-lm generating the same lines in one call with nothing around it. With
the shipped default (`MLXQ_BATCH_SLOTS` = half the slots) a lone batch uses 4 of 8 slots,
keeping the rest for interactive requests; section (k) measures what that buys.
"""
    summary = [
        [
            "(j) batch throughput",
            f">= {THROUGHPUT_TARGET:g}x batch_generate",
            f"{ratio:.2f}x",
            line,
        ]
    ]
    return text, summary


@dataclass
class LatencyResult:
    batch_lines: int
    requests: int
    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    batch_done_during: int = 0


def _interactive(client: httpx.Client, model_id: str, n: int, tag: str) -> list[float]:
    seconds = []
    for i in range(n):
        body = {
            "model": model_id,
            "messages": [
                {
                    "role": "user",
                    "content": f"({tag} {i}) Say hello to {SUBJECTS[i % len(SUBJECTS)]}.",
                }
            ],
            "max_tokens": INTERACTIVE_TOKENS,
            "temperature": 0,
        }
        started = time.perf_counter()
        response = client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


def run_latency(
    mlxq_url: str, model_id: str, requests: int, batch_lines: int, batch_tokens: int
) -> LatencyResult:
    result = LatencyResult(batch_lines, requests)
    with httpx.Client(base_url=mlxq_url, timeout=600) as client:
        _interactive(client, model_id, 2, "warm-up")
        result.idle = _interactive(client, model_id, requests, "idle")
        batch_id = submit(client, batch_file(model_id, questions(batch_lines, 99), batch_tokens))
        time.sleep(5.0)  # the batch's lines fill their slots
        result.busy = _interactive(client, model_id, requests, "busy")
        batch = client.get(f"/v1/batches/{batch_id}").json()
        result.batch_done_during = batch["request_counts"]["completed"]
        client.post(f"/v1/batches/{batch_id}/cancel").raise_for_status()
        wait_ended(client, batch_id, timeout=120)
    return result


def render_latency(result: LatencyResult) -> tuple[str, list[list[str]], list[dict]]:
    idle_p50, busy_p50 = median(result.idle), median(result.busy)
    ratio = busy_p50 / idle_p50
    rows = [
        ["idle service", f"{idle_p50 * 1000:.0f}", f"{percentile(result.idle, 99) * 1000:.0f}"],
        [
            f"while a {result.batch_lines}-line batch runs",
            f"{busy_p50 * 1000:.0f}",
            f"{percentile(result.busy, 99) * 1000:.0f}",
        ],
    ]
    line = verdict(ratio, LATENCY_TARGET, False)
    setup = (
        f"{result.requests} interactive chat requests (`/v1/chat/completions`, greedy, "
        f"max_tokens {INTERACTIVE_TOKENS}, one after another, each a different question) on an"
        f" idle service, then the same number while a batch of {result.batch_lines} lines "
        f"(max_tokens 64 each) runs on the same worker; latency = the whole request as the "
        f"client sees it. One worker, `MLXQ_WORKER_CONCURRENCY=8`, the shipped policy: "
        f"interactive queues first at every dequeue, batch lines in at most `MLXQ_BATCH_SLOTS`"
        f" = 4 slots, and new ones into one slot only while interactive requests come "
        f"(docs/batches.md). The batch answered {result.batch_done_during} lines while the "
        f"interactive requests ran (then it was cancelled)."
    )
    text = f"""## (k) Interactive latency while a batch runs

{setup}

{table(["interactive requests", "p50 ms", "p99 ms"], rows)}

- interactive p50 while a batch runs: target <= {LATENCY_TARGET:g}x idle: {line}

**What this shows.** An interactive request never waits in a queue behind batch lines: it
is taken at once into a free slot. While interactive requests come, new batch lines start
into one slot only, and the lines already running finish (worker/lanes.py), so after the
first request or two an interactive request shares each decode step with at most one batch
sequence; on this CPU every sequence in a step slows the others. When interactive traffic
stops for 2 s, batch lines take their full share of the slots again.
"""
    summary = [
        [
            "(k) interactive p50 during a batch",
            f"<= {LATENCY_TARGET:g}x idle",
            f"{ratio:.2f}x",
            line,
        ]
    ]
    figure = [
        figures.distribution(
            "Interactive latency",
            "ms",
            {
                "idle service": [t * 1000 for t in result.idle],
                "during a batch": [t * 1000 for t in result.busy],
            },
        )
    ]
    return text, summary, figure
