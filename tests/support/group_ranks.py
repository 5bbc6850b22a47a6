"""Run by ``mlx.launch`` in tests/worker/test_group_split.py: each rank loads its share of a
model folder (split as asked) and decodes greedily; rank 0 writes what it computed as JSON.

    mlx.launch --backend ring -n 2 ... group_ranks.py FOLDER SPLIT OUT PROMPT_TOKENS...
"""

import json
import sys
from pathlib import Path

from worker.cpu_backend import load_fast_blas

load_fast_blas("auto")

import mlx.core as mx  # noqa: E402  (after OpenBLAS is loaded)

from worker.group.split import apply_split, choose_split  # noqa: E402

STEPS = 6


def greedy(model, prompt: list[int]) -> tuple[list[int], list[float]]:
    """The first step's logits and STEPS greedy tokens."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt]), cache=cache)[0, -1]
    first = logits.tolist()
    tokens = [int(logits.argmax())]
    for _ in range(STEPS - 1):
        tokens.append(int(model(mx.array([[tokens[-1]]]), cache=cache)[0, -1].argmax()))
    return tokens, first


def main() -> None:
    from mlx_lm.utils import load_model

    folder, asked, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    prompt = [int(t) for t in sys.argv[4:]]
    group = mx.distributed.init()
    model, _ = load_model(folder, lazy=True)
    split = choose_split(model, group.size(), asked)
    apply_split(model, group, split)
    mx.eval(model.parameters())
    tokens, logits = greedy(model, prompt)
    if group.rank() == 0:
        out.write_text(json.dumps({"split": split, "tokens": tokens, "logits": logits}))


if __name__ == "__main__":
    main()
