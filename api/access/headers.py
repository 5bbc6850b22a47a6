"""The rate-limit headers each dialect's clients read, on answers and on 429s.

OpenAI announces ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (the reset as a
duration: ``"1s"``, ``"6m0s"``, ``"20ms"``); Anthropic
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` (the reset as an RFC 3339
time). Ollama has none: its paths get OpenAI's. A 429 adds ``Retry-After`` in seconds
(api/core/error_handlers.py).
"""

import datetime as dt
import time

from api.access.limits import Figures

ANTHROPIC = "anthropic"


def rate_limit_headers(figures: Figures, dialect: str) -> dict[str, str]:
    """The headers announcing ``figures`` in ``dialect``'s words (none for a key without
    requests or tokens limits)."""
    headers: dict[str, str] = {}
    for kind, limit, left, reset_s in (
        ("requests", figures.rpm, figures.requests_left, figures.requests_reset_s),
        ("tokens", figures.tpm, figures.tokens_left, figures.tokens_reset_s),
    ):
        if not limit:
            continue
        if dialect == ANTHROPIC:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(left)
            headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(time.time() + reset_s)
        else:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(left)
            headers[f"x-ratelimit-reset-{kind}"] = duration(reset_s)
    return headers


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def _rfc3339(at: float) -> str:
    return (
        dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
