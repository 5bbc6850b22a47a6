"""A draft model made offline: the first layers of a model, with its embedding, final norm,
head and tokenizer (an early exit). No smaller model with the demo model's tokenizer can be
downloaded here; this one shares it by construction, which is what a draft model needs, though
an untrained early exit guesses worse than a small model trained for it would.

``python -m bench.draft_model SOURCE TARGET LAYERS``
"""

import json
import re
import shutil
import sys
from pathlib import Path

LAYER = re.compile(r"\.layers\.(\d+)\.")


def make_layer_draft(source: Path, target: Path, layers: int) -> Path:
    """``target``: ``source``'s model cut to its first ``layers`` layers (made once)."""
    import mlx.core as mx

    if (target / "config.json").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    config = json.loads((source / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            weights = mx.load(str(path))
            kept = {
                name: array
                for name, array in weights.items()
                if (match := LAYER.search(name)) is None or int(match.group(1)) < layers
            }
            mx.save_safetensors(str(partial / path.name), kept, metadata={"format": "mlx"})
        elif path.name != "config.json" and path.is_file() and not path.name.startswith("."):
            shutil.copy(path, partial / path.name)
    if (partial / "model.safetensors.index.json").exists():
        (partial / "model.safetensors.index.json").unlink()  # the cut weights fit one file
    partial.rename(target)
    return target


if __name__ == "__main__":
    print(make_layer_draft(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
