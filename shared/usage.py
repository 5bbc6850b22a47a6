"""Usage per key and day: answered requests and their tokens, kept in Redis.

Written by the API when each answer's usage is known (api/access/accounting.py), read by
``mlxq usage`` and ``GET /usage`` (the web page). One hash per UTC day, expiring after
RETENTION_DAYS:

    mlxq:usage:<YYYY-MM-DD>   hash  "<key name>:<figure>" -> count
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import redis

FIGURES = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens")
RETENTION_DAYS = 400
"""A year of usage and a little more, for year-on-year questions; a day's hash is tiny."""
MAX_DAYS = 400
"""The longest span one reading covers."""


def day_key(day: dt.date) -> str:
    return f"mlxq:usage:{day.isoformat()}"


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class Usage:
    """One key's usage on one day (or over several, summed)."""

    key: str
    day: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_usage(pipeline: Any, name: str, figures: dict[str, int], at: float) -> None:
    """Queue the counts on ``pipeline`` (synchronous or asyncio: only commands are queued)."""
    key = day_key(dt.datetime.fromtimestamp(at, dt.UTC).date())
    for figure, count in figures.items():
        if count:
            pipeline.hincrby(key, f"{name}:{figure}", count)
    pipeline.expire(key, RETENTION_DAYS * 86400)


def read_usage(
    connection: redis.Redis, since: dt.date, until: dt.date | None = None
) -> list[Usage]:
    """Every key's usage on each day from ``since`` to ``until`` (default today), by day
    and key name."""
    until = until or today()
    days = [since + dt.timedelta(days=n) for n in range((until - since).days + 1)][-MAX_DAYS:]
    with connection.pipeline(transaction=False) as pipeline:
        for day in days:
            pipeline.hgetall(day_key(day))
        hashes = pipeline.execute()
    rows = []
    for day, raw in zip(days, hashes, strict=True):
        per_key: dict[str, dict[str, int]] = {}
        for field, count in raw.items():
            name, _, figure = _text(field).rpartition(":")
            if figure in FIGURES:
                per_key.setdefault(name, {})[figure] = int(count)
        rows += [Usage(name, day.isoformat(), **per_key[name]) for name in sorted(per_key)]
    return rows


def totals(rows: list[Usage]) -> list[Usage]:
    """The rows summed per key (``day`` is the span: "first..last")."""
    summed: dict[str, dict[str, int]] = {}
    days: dict[str, list[str]] = {}
    for row in rows:
        figures = summed.setdefault(row.key, dict.fromkeys(FIGURES, 0))
        for figure in FIGURES:
            figures[figure] += getattr(row, figure)
        days.setdefault(row.key, []).append(row.day)
    return [
        Usage(name, f"{min(days[name])}..{max(days[name])}", **summed[name])
        for name in sorted(summed)
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
