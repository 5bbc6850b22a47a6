"""What per-request sampling settings cost a batch: 8 sequences with 8 different settings
against 8 with the same settings, in mlxq's engine, in this process (no HTTP, no Redis).

    .venv/bin/python bench/sampling_cost.py            # about 3 minutes on 2 cores
    .venv/bin/python bench/sampling_cost.py --rounds 3

Prints a table, writes docs/data/sampling_cost.json and re-renders docs/benchmarks.md from
the stored sections (bench/run.py --render-only). Not part of bench/run.py's sections.
"""

import argparse
import json
import queue
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/sampling_cost.py`

from bench.stats import by_hand, median, spread, table  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "docs" / "data" / "sampling_cost.json"
BATCH = 8
MAX_TOKENS = 48
ROUNDS = 5
SUBJECTS = ["dragon", "robot", "pirate", "wizard", "mermaid", "knight", "unicorn", "astronaut"]
GREEDY: dict = {}
SAMPLED = {  # every kind of setting at once: filters, penalties, bias, a seed
    "temperature": 0.8,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.3,
    "repetition_penalty": 1.1,
    "logit_bias": {30: -5.0, 216: 2.0},
    "seed": 7,
}
MIXED = [  # one per sequence: greedy, plain temperature, each filter, penalties, bias, seeds
    {},
    {"temperature": 0.7, "seed": 1},
    {"temperature": 1.0, "top_p": 0.9, "seed": 2},
    {"temperature": 0.8, "top_k": 40, "seed": 3},
    {"temperature": 0.9, "min_p": 0.05, "seed": 4},
    {"temperature": 0.7, "presence_penalty": 0.6, "frequency_penalty": 0.4, "seed": 5},
    {"repetition_penalty": 1.2},
    {
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 50,
        "min_p": 0.02,
        "logit_bias": {30: -5.0, 216: 2.0},
        "seed": 7,
    },
]
CONFIGS = {
    "identical, greedy (the defaults)": [GREEDY] * BATCH,
    "identical, sampled (every setting, the same values)": [SAMPLED] * BATCH,
    "8 different settings": MIXED,
}
BASELINE = "identical, greedy (the defaults)"
SAME_SAMPLED = "identical, sampled (every setting, the same values)"
DIFFERENT = "8 different settings"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = parser.parse_args(argv)

    from worker.cpu_backend import load_fast_blas

    blas = load_fast_blas("auto")  # before MLX is imported, as the workers do
    from bench.machine import describe, openblas_path
    from shared.schemas import ChatMessage, GenerationRequest, SamplingParams
    from shared.settings import Settings
    from worker.engine_api import Failed, Finished
    from worker.mlx_engine import MLXEngine

    # No prefix cache: every round prefills its prompts as the first did.
    settings = Settings(worker_concurrency=BATCH, prefix_cache_bytes=0)
    outputs: queue.Queue = queue.Queue()
    engine = MLXEngine(settings, outputs.put)
    engine.start()

    def batch(configs: list[dict]) -> tuple[float, int]:
        """All 8 submitted at once; wall time to the last answer, and its tokens."""
        prepared = []
        for i, params in enumerate(configs):
            request = GenerationRequest(
                request_id=uuid.uuid4().hex,
                model=settings.model,
                messages=[
                    ChatMessage(role="user", content=f"Write a long story about a {SUBJECTS[i]}.")
                ],
                max_tokens=args.max_tokens,
                sampling=SamplingParams.model_validate(params),
                deadline=time.time() + 600,
            )
            prepared.append(engine.prepare(request.request_id, request, 600))
        waiting = {p.job_id for p in prepared}
        tokens = 0
        started = time.perf_counter()
        for request in prepared:
            engine.submit(request)
        while waiting:
            output = outputs.get(timeout=600)
            if isinstance(output, Failed):
                raise RuntimeError(f"generation failed: {output.error}")
            if isinstance(output, Finished):
                waiting.discard(output.job_id)
                tokens += sum(choice.completion_tokens for choice in output.choices)
        return time.perf_counter() - started, tokens

    try:
        for configs in CONFIGS.values():  # warm-up: first-call allocations of each path
            batch(configs)
        results: dict[str, dict[str, list[float]]] = {
            name: {"tps": [], "tokens": [], "wall_s": []} for name in CONFIGS
        }
        names = list(CONFIGS)
        for round_index in range(args.rounds):
            shift = round_index % len(names)  # rotate the order between rounds
            for name in names[shift:] + names[:shift]:
                wall, tokens = batch(CONFIGS[name])
                results[name]["tps"].append(tokens / wall)
                results[name]["tokens"].append(tokens)
                results[name]["wall_s"].append(wall)
                print(f"round {round_index}: {name}: {tokens} tokens, {tokens / wall:.1f} tok/s")
    finally:
        engine.stop()
    machine = describe(openblas_path())
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join([".venv/bin/python bench/sampling_cost.py", *sys.argv[1:]]),
        "machine": {k: machine[k] for k in ("CPU", "nproc", "MLX", "mlx-lm", "mlxq commit")},
        "blas": str(blas),
        "model": settings.model,
        "batch": BATCH,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "configs": {name: {"settings": CONFIGS[name], **results[name]} for name in CONFIGS},
    }
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    text, _ = render(data)
    print(text)
    from bench import run

    run.main(["--render-only"])
    return 0


def render(data: dict) -> tuple[str, list[list[str]]]:
    """The section's text and its summary row (bench/run.py renders it into the document)."""
    configs = data["configs"]
    base = configs[BASELINE]["tps"]
    rows = []
    for name, result in configs.items():
        ratios = [a / b for a, b in zip(result["tps"], base, strict=True)]
        rows.append(
            [
                name,
                spread(result["tps"]),
                spread(ratios, 2, suffix="x"),
                _span(result["tokens"]),
            ]
        )
    different = [a / b for a, b in zip(configs[DIFFERENT]["tps"], base, strict=True)]
    versus_same = [
        a / b for a, b in zip(configs[DIFFERENT]["tps"], configs[SAME_SAMPLED]["tps"], strict=True)
    ]
    settings = "; ".join(
        ", ".join(f"{k}={v}" for k, v in params.items()) or "greedy defaults"
        for params in configs[DIFFERENT]["settings"]
    )
    same = ", ".join(f"{k}={v}" for k, v in configs[SAME_SAMPLED]["settings"][0].items())
    parts = [
        *by_hand(
            "## Per-request sampling settings in one batch (bench/sampling_cost.py)",
            data["command"],
        ),
        f"Run of {data['date']} (mlxq commit {data['machine']['mlxq commit']}). mlxq's engine "
        f"(`worker.mlx_engine.MLXEngine`) in one process, the demo model expanded to float32 "
        f"at load as the workers do, OpenBLAS, prefix cache off; a batch of {data['batch']} "
        f"short prompts (one story request each) submitted at once, max_tokens "
        f"{data['max_tokens']}; tokens/s = completion tokens of the batch / wall time from the "
        "submission to the last answer (prefill included). "
        f"{data['rounds']} rounds, the three batches in a rotating order; median (min-max) "
        "over rounds; each ratio is the median of the rounds' ratios.",
        "",
        table(
            ["batch of 8", "tokens/s", "/ identical greedy", "completion tokens per batch"], rows
        ),
        "",
        "8 different settings / the same sampled settings for all 8: "
        f"{spread(versus_same, 2, suffix='x')}.",
        "",
        f"The 8 different settings: {settings}. The identical sampled settings: {same}. "
        "Greedy sequences share the batch's argmax; any other sequence has its own sampler "
        "and logits processors, applied row by row (worker/sampling.py), so their cost grows "
        "with the rows that have them, identical or not. Sampled answers may end before "
        "max_tokens (the token counts column), which shortens their batch's last steps.",
        "",
    ]
    summary = [
        [
            "(sampling) batch of 8: 8 different sampling settings / 8 identical greedy, tokens/s",
            "(no target)",
            f"{median(different):.2f}x (vs identical sampled: {median(versus_same):.2f}x)",
            "",
        ]
    ]
    return "\n".join(parts), summary


def _span(values: list) -> str:
    values = [int(v) for v in values]
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


if __name__ == "__main__":
    sys.exit(main())
