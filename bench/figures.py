"""The numbers behind each section's figure, in one shape for every section.

A section's figure is a list of charts; a chart has ``groups`` (its x values, or the labels of
its bar groups) and ``series``: name -> one spread per group, ``{"median", "min", "max"}`` over
rounds (``None`` where missing), as the tables print them ("median (min-max)"). They are
stored beside each section's text in docs/data/bench_sections.json, so that
``bench/run.py --render-only`` can draw the figures again (bench/plots.py).

From a run, they are taken from its results, like the tables. A section stored before figures
existed has no numbers: ``from_text`` reads them from its stored table's cells, nothing else.
"""

import re
from collections.abc import Sequence

from bench.stats import median, percentile

Spread = dict[str, float]
Chart = dict


def spread_of(values: Sequence[float], digits: int = 2) -> Spread:
    return {
        "median": round(median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def chart(
    kind: str,
    title: str,
    ylabel: str,
    groups: list,
    series: dict[str, list[Spread | None]],
    xlabel: str = "",
) -> Chart:
    """``kind``: "lines" (groups are numbers on the x axis), "bars" (groups are labels) or
    "cdf" (groups are percentiles; each series is a list of plain values, one per percentile)."""
    return {
        "kind": kind,
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "groups": groups,
        "series": series,
    }


# -- one builder per section, shared by results and stored tables ----------------------------


def overhead(rows: list[tuple[str, Spread | None, Spread | None]]) -> list[Chart]:
    """(a): per system, p50 and p99 latency in ms."""
    series = {label: [p50, p99] for label, p50, p99 in rows}
    return [chart("bars", "Latency per request (echo engine)", "ms", ["p50", "p99"], series)]


def concurrency(
    levels: list[int], mlxq: list[Spread | None], server: list[Spread | None]
) -> list[Chart]:
    """(c): aggregate tokens/s against the number of concurrent clients."""
    series = {"mlxq": mlxq, "mlx_lm.server": server}
    title = "Aggregate tokens/s under concurrency"
    return [chart("lines", title, "tokens/s", levels, series, xlabel="concurrent clients")]


def scale_out(rows: list[tuple[str, Spread | None]]) -> list[Chart]:
    """(d): aggregate tokens/s with 1 and 2 workers."""
    groups = [label for label, _ in rows]
    series = {"mlxq": [value for _, value in rows]}
    return [chart("bars", "Scale-out: aggregate tokens/s", "tokens/s", groups, series)]


def first_token(rows: list[tuple[str, Spread | None, Spread | None]]) -> list[Chart]:
    """(f): p50 time to first token per prompt, mlxq and direct mlx-lm."""
    groups = [label for label, _, _ in rows]
    series = {
        "mlxq": [mlxq for _, mlxq, _ in rows],
        "direct mlx-lm": [direct for _, _, direct in rows],
    }
    return [chart("bars", "Time to first token, p50", "ms", groups, series)]


def chat(
    tps: tuple[Spread | None, Spread | None],
    first_ttft: tuple[Spread | None, Spread | None],
    later_ttft: tuple[Spread | None, Spread | None],
    later_turns: str,
) -> list[Chart]:
    """(g): aggregate tokens/s and p50 times to first token, mlxq and mlx_lm.server."""

    def pair(title: str, unit: str, values: tuple[Spread | None, Spread | None]) -> Chart:
        series = {"mlxq": [values[0]], "mlx_lm.server": [values[1]]}
        return chart("bars", title, unit, [""], series)

    return [
        pair("Aggregate tokens/s", "tokens/s", tps),
        pair("Time to first token, turn 1, p50", "ms", first_ttft),
        pair(f"Time to first token, turns {later_turns}, p50", "ms", later_ttft),
    ]


def single(rows: list[tuple[str, Spread | None]]) -> list[Chart]:
    """(b): one request's tokens/s, per system."""
    groups = [label for label, _ in rows]
    series = {"tokens/s": [value for _, value in rows]}
    return [chart("bars", "Single-request tokens/s", "tokens/s", groups, series)]


def repeat(rows: list[tuple[str, Spread | None, Spread | None]]) -> list[Chart]:
    """(h): time to first token of a long prompt, sent the first and the second time (two
    charts: the second is a hundred times shorter)."""
    groups = [label for label, _, _ in rows]
    return [
        chart("bars", "Long prompt, first time", "ms", groups, {"first": [f for _, f, _ in rows]}),
        chart("bars", "The same prompt again", "ms", groups, {"second": [s for _, _, s in rows]}),
    ]


def routing(rows: list[tuple[str, Spread | None, Spread | None]]) -> list[Chart]:
    """(i): with two workers, routed against not routed (percentages)."""
    groups = [label for label, _, _ in rows]
    series = {"routed": [r for _, r, _ in rows], "not routed": [n for _, _, n in rows]}
    return [chart("bars", "Later turns, two workers", "%", groups, series)]


def batch_throughput(mlxq: Spread | None, reference: Spread | None) -> list[Chart]:
    """(j): a batch's tokens/s, mlxq's Batch API and mlx-lm's batch_generate."""
    series = {"mlxq Batch API": [mlxq], "mlx-lm batch_generate": [reference]}
    return [chart("bars", "Batch throughput", "tokens/s", [""], series)]


QUANTILES = [0, 1, *range(5, 100, 5), 99, 100]
"""Where a distribution is cut: each series keeps its value at these percentiles."""


def models_on_demand(
    cold: Spread | None, warm: Spread | None, mlxq: Spread | None, server: Spread | None
) -> list[Chart]:
    """(l): time to first token, a cold model and a warm one on mlxq; requests alternating
    between two models on mlxq and on mlx_lm.server."""
    groups = ["cold (load included)", "warm", "alternating A, B"]
    series = {"mlxq": [cold, warm, mlxq], "mlx_lm.server": [None, None, server]}
    return [chart("bars", "Models on demand: time to first token", "ms", groups, series)]


def distribution(title: str, unit: str, samples: dict[str, Sequence[float]]) -> Chart:
    """Every request of every round, as an empirical distribution (the value below which
    each percentile of the requests falls), one series per system or condition."""
    series = {
        name: [round(percentile(values, q), 2) for q in QUANTILES]
        for name, values in samples.items()
    }
    return chart("cdf", title, "requests, %", QUANTILES, series, xlabel=unit)


# -- numbers read back from a stored table ---------------------------------------------------

_SPREAD = re.compile(r"^\**(-?[\d.]+)[x%]?\**(?:\s*\((-?[\d.]+)%?-(-?[\d.]+)%?\))?")


def parse_spread(cell: str) -> Spread | None:
    """'15.3 (15.0-16.4)', '**1.51x** (1.50-1.67)' or '1024' as a spread; None if not one."""
    found = _SPREAD.match(cell.strip())
    if found is None:
        return None
    middle = float(found.group(1))
    low = float(found.group(2)) if found.group(2) else middle
    high = float(found.group(3)) if found.group(3) else middle
    return {"median": middle, "min": low, "max": high}


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the first table whose header's first cell is ``first_header``."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for body in lines[index + 2 :]:
                if not body.startswith("|"):
                    break
                rows.append([cell.strip() for cell in body.strip().strip("|").split("|")])
            return rows
    return []


def from_text(key: str, text: str) -> list[Chart] | None:
    """The figure of a stored section, read from its table; None for a section without one
    (or whose table is not there: a failed run)."""
    if key == "(a)":
        rows = table_rows(text, "system")
        if not rows:
            return None
        return overhead([(r[0], parse_spread(r[1]), parse_spread(r[2])) for r in rows])
    if key == "(c)":
        rows = table_rows(text, "concurrent")
        if not rows:
            return None
        return concurrency(
            [int(r[0]) for r in rows],
            [parse_spread(r[1]) for r in rows],
            [parse_spread(r[2]) for r in rows],
        )
    if key == "(d)":
        rows = table_rows(text, "workers")
        return scale_out([(r[0], parse_spread(r[1])) for r in rows]) if rows else None
    if key == "(f)":
        rows = table_rows(text, "prompt")
        if not rows:
            return None
        return first_token([(r[0], parse_spread(r[1]), parse_spread(r[2])) for r in rows])
    if key == "(g)":
        by_label = {r[0]: r for r in table_rows(text, "")}
        later_prefix = "time to first token, turns"
        later = next((label for label in by_label if label.startswith(later_prefix)), None)
        needed = ["aggregate tokens/s", "time to first token, turn 1, p50 ms", later]
        if later is None or any(label not in by_label for label in needed):
            return None
        turns = later.removeprefix(later_prefix).removesuffix(", p50 ms").strip()

        def both(label: str) -> tuple[Spread | None, Spread | None]:
            return parse_spread(by_label[label][1]), parse_spread(by_label[label][2])

        return chat(both(needed[0]), both(needed[1]), both(later), turns)
    if key == "(b)":
        rows = table_rows(text, "system")
        return single([(r[0], parse_spread(r[1])) for r in rows]) if rows else None
    if key == "(h)":
        rows = table_rows(text, "system")
        if not rows:
            return None
        return repeat([(r[0], parse_spread(r[2]), parse_spread(r[3])) for r in rows])
    if key == "(i)":
        rows = [r for r in table_rows(text, "") if r[1].endswith(")") and "%" in r[1]]
        if not rows:
            return None
        return routing([(r[0], parse_spread(r[1]), parse_spread(r[2])) for r in rows])
    if key == "(j)":
        rows = table_rows(text, "mlxq tok/s")
        if not rows:
            return None
        return batch_throughput(parse_spread(rows[0][0]), parse_spread(rows[0][1]))
    return None
