"""Draws a section's figure (bench/figures.py's charts) as an SVG file with matplotlib: the
median of the rounds as a line or bar, their min-max as a whisker."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]

# The same numbers give the same file, so a --render-only run leaves unchanged figures alone.
plt.rcParams["svg.hashsalt"] = "mlxq-bench"
plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller files, readable diffs


def draw(charts: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(
        1, len(charts), figsize=(4.2 * len(charts), 3.2), squeeze=False, layout="constrained"
    )
    for chart, ax in zip(charts, axes[0], strict=True):
        {"lines": _lines, "bars": _bars, "cdf": _cdf}[chart["kind"]](ax, chart)
        ax.set_title(chart["title"], fontsize=10)
        ax.set_ylabel(chart["ylabel"])
        if chart["xlabel"]:
            ax.set_xlabel(chart["xlabel"])
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        if len(chart["series"]) > 1:
            ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(figure)


def _whiskers(points: list[dict | None]) -> tuple[list[float], list[list[float]]]:
    """Medians, and matplotlib's yerr (distances below and above) for the min-max."""
    medians = [p["median"] if p else float("nan") for p in points]
    below = [p["median"] - p["min"] if p else 0.0 for p in points]
    above = [p["max"] - p["median"] if p else 0.0 for p in points]
    return medians, [below, above]


def _lines(ax, chart: dict) -> None:
    for index, (name, points) in enumerate(chart["series"].items()):
        medians, errors = _whiskers(points)
        color = COLORS[index % len(COLORS)]
        ax.errorbar(
            chart["groups"], medians, yerr=errors, label=name, color=color, marker="o", capsize=3
        )
    ax.set_xticks(chart["groups"])


def _bars(ax, chart: dict) -> None:
    count = len(chart["series"])
    width = 0.8 / count
    positions = range(len(chart["groups"]))
    for index, (name, points) in enumerate(chart["series"].items()):
        medians, errors = _whiskers(points)
        offsets = [p - 0.4 + width * (index + 0.5) for p in positions]
        color = COLORS[index % len(COLORS)]
        ax.bar(offsets, medians, width, yerr=errors, label=name, color=color, capsize=3)
    ax.set_xticks(list(positions), [_wrap(str(g)) for g in chart["groups"]], fontsize=8)


def _cdf(ax, chart: dict) -> None:
    """Latency on x, the share of requests at most that slow on y: a distribution at a
    glance (a curve further right is slower; a long flat top is a tail)."""
    for index, (name, values) in enumerate(chart["series"].items()):
        color = COLORS[index % len(COLORS)]
        ax.plot(values, chart["groups"], label=name, color=color, drawstyle="steps-post")
    ax.set_xlim(left=0)


def _wrap(label: str, width: int = 22) -> str:
    """Long group labels on several lines."""
    words, lines = label.split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    return "\n".join(lines)
