"""Sizes and durations as people write them: ``6GB``, ``512MiB``, ``5m``, ``1h30m``, ``-1``.

Read by the settings (``MLXQ_MEMORY_BUDGET``, ``MLXQ_KEEP_ALIVE``) and by Ollama's
``keep_alive`` (a Go duration string or a number of seconds), so that both accept the same.
"""

import math
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

FOREVER = math.inf
"""A keep-alive that never expires (Ollama's negative keep_alive)."""


def parse_bytes(text: str | int) -> int:
    """``6GB`` (10^9), ``6GiB`` (2^30), ``500mb``, ``1.5G`` or a plain number of bytes;
    ValueError naming what was not understood."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text}: a size cannot be negative")
        return text
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a size: write bytes (6000000000) or a number with a unit "
            "(6GB, 6GiB, 512MB)"
        )
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "").lower()])


def parse_duration(value: str | int | float) -> float:
    """Seconds, from a number of seconds or a Go duration ("5m", "1h30m", "300ms", "-1s",
    "0"); a negative duration means forever (``FOREVER``), as Ollama reads it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    seconds = float(value) if isinstance(value, int | float) else _go_duration(value.strip())
    if math.isnan(seconds):
        raise ValueError(f"{value!r} is not a duration")
    return FOREVER if seconds < 0 else seconds


def _go_duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)  # a plain number: seconds
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(
            f"{text!r} is not a duration: write seconds (300), or a number with units "
            "(5m, 1h30m, 10s, 500ms); negative keeps the model loaded"
        )
    return sign * total


def human_bytes(count: int | float) -> str:
    """``1.2 GB``, ``538 MB``, ``12 kB`` (powers of ten, as disk sizes are shown)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= scale:
            value = count / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(count)} B"
