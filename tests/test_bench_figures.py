"""The benchmark document's figures: numbers read back from stored tables, placed above their
tables, drawn from stored numbers alone (bench/run.py --render-only)."""

import json
from pathlib import Path

from bench import figures, plots
from bench.run import add_missing_figures, figure_name, render_document

STORED = Path(__file__).resolve().parents[1] / "docs" / "data" / "bench_sections.json"

TABLE_C = """## (c) Aggregate tokens/s under concurrency

Intro.

| concurrent | mlxq tok/s | mlx_lm.server tok/s | mlxq / server |
|---|---|---|---|
| 1 | 15.3 (15.0-16.4) | 15.6 (14.6-16.2) | **1.01x** (0.93-1.06) |
| 8 | 70.4 (63.3-75.0) | 73.7 | **0.91x** (0.86-1.23) |

After.
"""


def test_spreads_are_read_as_printed() -> None:
    assert figures.parse_spread("15.3 (15.0-16.4)") == {"median": 15.3, "min": 15.0, "max": 16.4}
    assert figures.parse_spread("**1.51x** (1.50-1.67)") == {
        "median": 1.51,
        "min": 1.5,
        "max": 1.67,
    }
    assert figures.parse_spread("1024") == {"median": 1024.0, "min": 1024.0, "max": 1024.0}
    assert figures.parse_spread("-") is None


def test_a_stored_table_gives_its_own_numbers_and_nothing_else() -> None:
    (chart,) = figures.from_text("(c)", TABLE_C)
    assert chart["groups"] == [1, 8]
    assert chart["series"]["mlxq"][1] == {"median": 70.4, "min": 63.3, "max": 75.0}
    assert chart["series"]["mlx_lm.server"][1] == {"median": 73.7, "min": 73.7, "max": 73.7}
    assert figures.from_text("(c)", "## (c) ...\n\n**Failed**: `TimeoutError`\n") is None
    assert figures.from_text("(b)", TABLE_C) is None  # a section without a figure


def test_every_plotted_section_of_the_stored_run_has_its_figure(tmp_path: Path) -> None:
    stored = json.loads(STORED.read_text())
    for section in stored["sections"].values():  # as if stored before figures existed
        section.pop("figure", None)
        section.pop("figure_from", None)
    add_missing_figures(stored)
    plotted = {key for key, section in stored["sections"].items() if "figure" in section}
    # (k) draws distributions of single requests, which its table does not keep: none
    assert plotted == {"(a)", "(b)", "(c)", "(d)", "(f)", "(g)", "(h)", "(i)", "(j)"}
    assert {stored["sections"][key]["figure_from"] for key in plotted} == {"the stored table"}

    document = render_document(stored, tmp_path / "benchmarks.md")
    for key in plotted:
        image = f"](img/{figure_name(key)})"
        section = document[document.index(f"## {key}") :]
        assert image in section
        assert section.index(image) < section.index("\n| ")  # above the section's first table
        plots.draw(stored["sections"][key]["figure"], tmp_path / figure_name(key))
        assert (tmp_path / figure_name(key)).read_text().lstrip().startswith("<?xml")


def test_the_document_in_the_repository_is_rendered_from_the_stored_sections() -> None:
    stored = json.loads(STORED.read_text())
    doc = STORED.parents[1] / "benchmarks.md"
    assert render_document(stored, doc) == doc.read_text()
    for key, section in stored["sections"].items():
        if "figure" in section:
            assert (doc.parent / "img" / figure_name(key)).exists()


def test_a_distribution_keeps_every_request_and_is_drawn(tmp_path: Path) -> None:
    fast, slow = [1.0, 2.0, 3.0, 4.0, 100.0], [10.0, 20.0, 30.0, 40.0, 50.0]
    chart = figures.distribution("Latency", "ms", {"fast": fast, "slow": slow})
    assert chart["kind"] == "cdf" and chart["groups"] == figures.QUANTILES
    assert chart["series"]["fast"][0] == 1.0 and chart["series"]["fast"][-1] == 100.0  # the tail
    assert chart["series"]["slow"] == sorted(chart["series"]["slow"])
    path = tmp_path / "cdf.svg"
    plots.draw([chart], path)
    assert "Latency" in path.read_text()
