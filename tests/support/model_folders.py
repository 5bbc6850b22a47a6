"""More models than the demo one, made in a test from it with no download: a copy under
another name, LoRA adapters with random weights, a model that cannot load, one too large.

Copies hard-link the demo model's files (instant, no disk): a worker reads them as another
model, with its own id, queue and engine.
"""

import json
import os
import shutil
from pathlib import Path

ADAPTER_LAYERS = 4
ADAPTER_RANK = 8


def copy_model(source: Path, target: Path) -> Path:
    """``source``'s files under ``target`` (hard links where the filesystem allows)."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and not file.name.startswith("."):
            try:
                os.link(file, target / file.name)
            except OSError:
                shutil.copy2(file, target / file.name)
    return target


def broken_model(source: Path, target: Path) -> Path:
    """A copy whose config names an architecture mlx-lm does not know: it fails to load."""
    copy_model(source, target)
    config = json.loads((source / "config.json").read_text())
    (target / "config.json").unlink()
    (target / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    return target


def oversized_model(source: Path, target: Path) -> Path:
    """A model whose weights take twice the demo model's (its file, twice): larger than a
    budget that holds one demo model. Never loaded: a worker refuses it from its files."""
    copy_model(source, target)
    weights = target / "model.safetensors"
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        os.link(weights, target / shard)
    weights.unlink()
    return target


def random_adapter(base: Path, target: Path, seed: int) -> Path:
    """A LoRA adapter of ``base`` as ``mlx_lm.lora`` writes one (adapter_config.json and
    adapters.safetensors), with random weights: its answers differ from the base's."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    parameters = {"rank": ADAPTER_RANK, "scale": 20.0, "dropout": 0.0}
    model, _ = load_model(base, lazy=True)  # shapes only: no weight is read
    linear_to_lora_layers(model, ADAPTER_LAYERS, parameters)
    mx.random.seed(seed)
    weights = {
        name: mx.random.normal(value.shape) * 0.05
        for name, value in tree_flatten(model.parameters())
        if name.rsplit(".", 1)[-1] in ("lora_a", "lora_b")
    }
    target.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(target / "adapters.safetensors"), weights)
    config = {
        "model": str(base),
        "fine_tune_type": "lora",
        "num_layers": ADAPTER_LAYERS,
        "lora_parameters": parameters,
    }
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return target
