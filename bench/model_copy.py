"""A float32 copy of the demo model, so every system in the benchmark loads the same weights.

mlxq's CPU workers expand quantized weights to float32 at load (worker/cpu_backend.py);
the baselines (direct mlx-lm, mlx_lm.server) would otherwise run MLX's slow CPU quantized
kernels. Saving what the worker has in memory and pointing everyone at it compares the
serving paths, not the weight formats. Run as a script (in a subprocess with the bench's
LD_PRELOAD) because MLX must be imported after OpenBLAS is loaded.
"""

import json
import shutil
import sys
from pathlib import Path

MARKER = ".bench-complete"
FORMAT = 1  # bump when the copy changes, so stale copies are redone
CHECK_PROMPT = "Write a long story about a dragon."
CHECK_TOKENS = 48


def _greedy(model, tokenizer, prompt: str) -> str:
    from mlx_lm import generate

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return generate(model, tokenizer, text, max_tokens=CHECK_TOKENS)


def make_copy(source: Path, target: Path) -> str:
    """Write the float32 copy and check it answers the same greedy text; returns that text."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from worker.cpu_backend import dequantize_to_float32

    model, tokenizer = load(str(source))
    dequantize_to_float32(model)
    expected = _greedy(model, tokenizer, CHECK_PROMPT)

    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and not item.name.startswith("."):
            shutil.copy2(item, staging / item.name)
    config = json.loads((source / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})

    copy_model, copy_tokenizer = load(str(staging))
    got = _greedy(copy_model, copy_tokenizer, CHECK_PROMPT)
    if got != expected:
        raise SystemExit(f"float32 copy answers differently:\n{expected!r}\n{got!r}")
    (staging / MARKER).write_text(json.dumps({"format": FORMAT, "source": str(source)}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return got


def is_ready(target: Path, source: Path) -> bool:
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"format": FORMAT, "source": str(source)}


if __name__ == "__main__":
    print(json.dumps({"check_text": make_copy(Path(sys.argv[1]), Path(sys.argv[2]))}))
