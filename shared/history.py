"""The fleet's recent past, for charts: one Redis hash per time step, kept HISTORY_WINDOW_S.

Written by what already beats, in the same pipeline or loop: each worker's heartbeat records
its tokens/s and busy slots; each API process's alive-beat records the queue depths, the
requests it accepted and the times to first token it saw (as histogram counts, so that the
counts of several API processes add up). Read by ``GET /fleet/history`` (the web page's
charts) and ``mlxq status --watch``.

Bounded in time (each step's hash expires when it leaves the window) and in size (one hash
per step, each with a few fields per worker and queue seen in that step plus the histogram's
buckets), however long the fleet runs. Like shared/protocol/, this module is the only one
that writes or reads these records.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.protocol import PREFIX, WorkerStats

HISTORY_STEP_S = 2
"""Seconds per sample: fine enough to see a request arrive, coarse enough to stay small."""
HISTORY_WINDOW_S = 900
"""How far back the history goes (15 minutes)."""
STEPS = HISTORY_WINDOW_S // HISTORY_STEP_S

FIRST_TOKEN_BOUNDS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the time-to-first-token buckets; one more bucket holds what is slower."""

_SEP = "|"
"""Between a field's kind, figure and name; a name (last) may itself hold the separator."""


def step_key(step: int) -> str:
    return f"{PREFIX}:history:{step}"


def step_of(at: float) -> int:
    return int(at // HISTORY_STEP_S)


def _keep(pipeline: Any, key: str) -> None:
    # The hash lives while its step is in the window, plus one step for a reader's rounding.
    pipeline.expire(key, HISTORY_WINDOW_S + 2 * HISTORY_STEP_S)


# -- writing --------------------------------------------------------------------------------


def add_worker_sample(pipeline: Any, name: str, stats: WorkerStats, at: float) -> None:
    """Queue a worker's figures for the step of ``at`` (a later beat in the step overwrites)."""
    key = step_key(step_of(at))
    label = f"{stats.host or '?'}:{stats.pid} {stats.model or '?'}"
    pipeline.hset(
        key,
        mapping={
            f"w{_SEP}tps{_SEP}{name}": round(stats.tokens_per_s, 2),
            f"w{_SEP}running{_SEP}{name}": stats.running,
            f"w{_SEP}slots{_SEP}{name}": stats.slots,
            f"w{_SEP}label{_SEP}{name}": label,
        },
    )
    _keep(pipeline, key)


@dataclass
class ApiTally:
    """What one API process saw since its last beat: requests accepted, times to first token.
    Touched from the event loop only (no lock)."""

    requests: int = 0
    first_token_counts: list[int] = field(
        default_factory=lambda: [0] * (len(FIRST_TOKEN_BOUNDS_S) + 1)
    )

    def count_request(self) -> None:
        self.requests += 1

    def observe_first_token(self, seconds: float) -> None:
        self.first_token_counts[bisect.bisect_left(FIRST_TOKEN_BOUNDS_S, seconds)] += 1

    def take(self) -> ApiTally:
        """This tally, and a fresh one in its place."""
        taken = ApiTally(self.requests, self.first_token_counts)
        self.requests, self.first_token_counts = 0, [0] * len(self.first_token_counts)
        return taken


def record_api_beat(
    connection: redis.Redis, tally: ApiTally, queue_depths: dict[str, int], at: float
) -> None:
    """Add an API process's tally to the step of ``at`` and set the queue depths it read."""
    key = step_key(step_of(at))
    with connection.pipeline(transaction=False) as pipeline:
        # Always written, so that a step with an API beat but no request reads as 0, not gap.
        pipeline.hincrby(key, "requests", tally.requests)
        for bucket, count in enumerate(tally.first_token_counts):
            if count:
                pipeline.hincrby(key, f"ttft{_SEP}{bucket}", count)
        if queue_depths:
            pipeline.hset(
                key, mapping={f"q{_SEP}queued{_SEP}{q}": n for q, n in queue_depths.items()}
            )
        _keep(pipeline, key)
        pipeline.execute()


# -- reading --------------------------------------------------------------------------------


def read_history(connection: redis.Redis, now: float | None = None) -> dict:
    """The window's completed steps as aligned series (``None`` where nothing was recorded):
    ``times`` (each step's start, Unix seconds), per worker ``tokens_per_s``, ``running`` and
    ``slots``, per queue ``queued``, and fleet-wide ``requests_per_s`` and ``ttft_p50_s``."""
    last = step_of(time.time() if now is None else now) - 1  # the current step is not done
    steps = range(last - STEPS + 1, last + 1)
    with connection.pipeline(transaction=False) as pipeline:
        for step in steps:
            pipeline.hgetall(step_key(step))
        hashes = [{_text(k): _text(v) for k, v in h.items()} for h in pipeline.execute()]
    workers: dict[str, dict[str, Any]] = {}
    queues: dict[str, dict[str, Any]] = {}
    requests_per_s: list[float | None] = []
    ttft_p50_s: list[float | None] = []
    for index, fields in enumerate(hashes):
        requests = fields.get("requests")
        requests_per_s.append(None if requests is None else int(requests) / HISTORY_STEP_S)
        ttft_p50_s.append(_median_of_buckets(fields))
        for name, value in fields.items():
            kind, _, rest = name.partition(_SEP)
            figure, _, owner = rest.partition(_SEP)
            if kind == "w":
                _put(workers, owner, figure, index, value, ("tps", "running", "slots"))
            elif kind == "q":
                _put(queues, owner, figure, index, value, ("queued",))
    return {
        "step_s": HISTORY_STEP_S,
        "window_s": HISTORY_WINDOW_S,
        "times": [step * HISTORY_STEP_S for step in steps],
        "workers": [
            {
                "name": name,
                "label": series.pop("label", name),
                "tokens_per_s": series["tps"],
                "running": series["running"],
                "slots": series["slots"],
            }
            for name, series in sorted(workers.items())
        ],
        "queues": [{"queue": name, "queued": s["queued"]} for name, s in sorted(queues.items())],
        "requests_per_s": requests_per_s,
        "ttft_p50_s": ttft_p50_s,
    }


def _put(
    table: dict[str, dict[str, Any]],
    owner: str,
    figure: str,
    index: int,
    value: str,
    series: tuple[str, ...],
) -> None:
    entry = table.setdefault(owner, {name: [None] * STEPS for name in series})
    if figure == "label":
        entry["label"] = value
    elif figure in series:
        entry[figure][index] = float(value) if figure == "tps" else int(value)


def _median_of_buckets(fields: dict[str, str]) -> float | None:
    """The median time to first token of a step, interpolated inside its bucket."""
    counts = [int(fields.get(f"ttft{_SEP}{b}", 0)) for b in range(len(FIRST_TOKEN_BOUNDS_S) + 1)]
    total = sum(counts)
    if total == 0:
        return None
    half, below = total / 2, 0
    for bucket, count in enumerate(counts):
        if count and below + count >= half:
            low = FIRST_TOKEN_BOUNDS_S[bucket - 1] if bucket else 0.0
            if bucket == len(FIRST_TOKEN_BOUNDS_S):
                return low  # slower than the last bound: say at least that
            high = FIRST_TOKEN_BOUNDS_S[bucket]
            return round(low + (high - low) * (half - below) / count, 4)
        below += count
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
