"""Small statistics and formatting helpers (no numpy: the bench process never imports MLX)."""

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 1, prefix: str = "", suffix: str = "") -> str:
    """'median (min-max)' over rounds, so the reader sees the noise."""
    middle = f"{prefix}{median(values):.{digits}f}{suffix}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    met = ratio >= target if higher_is_better else ratio <= target
    sign = ">=" if higher_is_better else "<="
    if met:
        return f"**met** ({ratio:.2f}x, target {sign} {target:g}x)"
    miss = (target / ratio - 1) if higher_is_better else (ratio / target - 1)
    return f"**missed** by {miss:.0%} ({ratio:.2f}x, target {sign} {target:g}x)"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def by_hand(title: str, command: str) -> list[str]:
    """The opening lines of a section run by hand (not by bench/run.py): its title and the
    command that measured it."""
    return [title, "", "Run by hand, not by `bench/run.py`:", "", "```sh", command, "```", ""]
