"""Section (e): mlxq's engine on a GPU, rendered from a committed run of bench/gpu_engine.py.

No GPU is needed to render it (and the bench process never imports MLX): the numbers were
measured elsewhere and saved as JSON; this only summarizes them.
"""

import json
from pathlib import Path

from bench.procs import ROOT
from bench.stats import median, spread, table, verdict

DATA = ROOT / "docs" / "data" / "gpu_engine_h100.json"
DEVICE = "one NVIDIA H100"
MLX_BUILD = "MLX's CUDA build (`mlx-cuda-13` 0.32.4)"
LEVELS = [1, 8, 32, 64]
SINGLE_TARGET = 0.95


def _values(rounds: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in rounds]


def _ratios(rounds: list[dict], top: str, bottom: str) -> list[float]:
    return [entry[top] / entry[bottom] for entry in rounds]


def _swing(rounds: list[dict]) -> float:
    """The largest max / min - 1 over rounds of the single-stream numbers."""
    keys = ("generate_step", "mlxq_1")
    return max(max(_values(rounds, k)) / min(_values(rounds, k)) - 1 for k in keys)


def render(path: Path = DATA) -> tuple[str, list[list[str]]]:
    """The section's text, and its rows for the summary table."""
    data = json.loads(path.read_text())
    rounds = data["rounds"]
    new_tokens = data["new_tokens"]
    single = _ratios(rounds, "mlxq_1", "generate_step")
    batch_single = _ratios(rounds, "batchgen_1", "generate_step")
    at_8 = _ratios(rounds, "mlxq_8", "batchgen_8")
    single_line = verdict(median(single), SINGLE_TARGET, higher_is_better=True)
    rows = [["plain `generate_step` (one stream)", "1", spread(_values(rounds, "generate_step"))]]
    for level in LEVELS:
        rows.append(["`BatchGenerator`", str(level), spread(_values(rounds, f"batchgen_{level}"))])
    for level in LEVELS:
        rows.append(["mlxq engine", str(level), spread(_values(rounds, f"mlxq_{level}"))])
    ratio_rows = [
        ["mlxq engine (1) / plain `generate_step`", spread(single, 2, prefix="**", suffix="x**")],
        ["`BatchGenerator` (1) / plain `generate_step`", spread(batch_single, 2, suffix="x")],
    ]
    for level in LEVELS:
        ratios = _ratios(rounds, f"mlxq_{level}", f"batchgen_{level}")
        ratio_rows.append(
            [f"mlxq engine ({level}) / `BatchGenerator` ({level})", spread(ratios, 2, suffix="x")]
        )
    complete = all(
        entry[f"mlxq_{level}_tokens"] == new_tokens * level for entry in rounds for level in LEVELS
    )
    summary = [
        [
            "(e) GPU, engine only: lone request, mlxq / plain `generate_step`",
            f">= {SINGLE_TARGET}x",
            f"{median(single):.2f}x",
            single_line,
        ],
        [
            "(e) GPU, engine only: 8 concurrent, mlxq / `BatchGenerator` at 8",
            "(no target)",
            f"{median(at_8):.2f}x",
            "",
        ],
    ]
    parts = [
        "## (e) GPU: mlxq's engine against mlx-lm (engine only)",
        "",
        f"Not measured by this run: rendered from `{path.relative_to(ROOT)}`, the output of "
        f"`bench/gpu_engine.py` run on {DEVICE} with {MLX_BUILD}; MLX named its device "
        f"`{data['device']}`. It drives "
        "`worker/mlx_engine.MLXEngine` directly, without Redis, RQ or HTTP, next to mlx-lm's "
        "`generate_step` and `BatchGenerator`, on a random-weight llama of about 0.8B "
        "parameters in bf16 (hidden size 2048, 16 layers, vocabulary 49152; no download). "
        f"Each request has a 32-token prompt and generates {new_tokens} tokens; tokens/s = "
        "generated tokens / wall time from submitting to the last token (prefill included). "
        f"{len(rounds)} rounds; median (min-max) over rounds; ratios are the median of the "
        "rounds' ratios.",
        "",
        table(["system", "concurrent requests", "tokens/s"], rows),
        "",
        table(["ratio", "median (min-max)"], ratio_rows),
        "",
        f"- lone request: target >= {SINGLE_TARGET}x plain single-stream generation: "
        + single_line,
        "- every mlxq request generated all its tokens: " + ("yes" if complete else "**no**"),
        "",
        "Reproduce on a machine with an NVIDIA GPU (the script's docstring): install MLX's "
        "CUDA wheel with `pip install --target <dir> mlx-cuda-13==0.32.4` (that folder ahead "
        "of the venv on `PYTHONPATH`), then "
        "`python bench/gpu_engine.py --tokenizer <folder with tokenizer.json> --out file.json` "
        "(`--tiny` checks the script on a CPU).",
        "",
        ABOUT_E.format(rounds=len(rounds), swing=_swing(rounds)),
        "",
    ]
    return "\n".join(parts), summary


ABOUT_E = """\
**What this shows.** On a GPU a decode step costs little compute, so what the engine adds
per step (Python bookkeeping, detokenizing, the outputs it hands to the reporter) shows more
than on the CPU. A lone request runs through mlx-lm's single-stream `generate_step`, as the
engine does for it: `BatchGenerator` at batch size 1 is much slower than `generate_step`
(the second ratio), which is why the engine switches paths. With several requests both
run `BatchGenerator`.

**What is missed, and why.** {rounds} rounds, with the systems in a fixed order inside each
round (the script does not alternate them): the single-stream numbers moved by up to
{swing:.0%} between rounds (max / min), for mlx-lm as for mlxq, so the lone-request ratio is
only known to within that spread. The plain `BatchGenerator` runs build a new generator for
each measurement while the engine keeps one, which may explain part of the differences
between them at 8-64 (not verified). Engine only: no Redis, RQ or HTTP, random weights,
synthetic prompts, one model size."""
