"""Reference vectors for the demo embedding model, computed without MLX.

No torch is installed here (and sentence-transformers needs it), so this is a plain numpy
BERT written from the safetensors independently of worker/bert.py: same semantics as
sentence-transformers' all-MiniLM-L6-v2 (WordPiece from tokenizer.json, [CLS] ... [SEP],
erf GELU, post-norm layers, mean pooling over real tokens, L2 normalisation), computed in
float64. Known check: "This is an example sentence" starts 0.0677, 0.0635, 0.0487, 0.0793, as
published for the model. Writes tests/worker/data/embedding_reference.json.

    .venv/bin/python -m bench.embedding_reference
"""

import json
import math
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from shared.settings import DEMO_EMBEDDING_MODEL_ID
from worker.model import resolve_model_path

SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The capital of France is Paris.",
    "A man is playing a guitar on stage.",
    "Quantum chromodynamics describes the strong interaction.",
    "hi",
    "Café crème, naïve façade — UTF-8 text survives tokenization.",
    "Redis queues jobs; workers batch them on the GPU, one forward pass for many inputs.",
]
OUT = Path(__file__).resolve().parent.parent / "tests/worker/data/embedding_reference.json"
_ERF = np.vectorize(math.erf)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def embed(folder: Path, text: str) -> np.ndarray:
    """One sentence, unbatched: no padding at all, so nothing to mask."""
    config = json.loads((folder / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    ids = np.array(tokenizer.encode(text).ids)
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][: len(ids)]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

    def linear(t: np.ndarray, name: str) -> np.ndarray:
        return t @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (
            linear(x, f"{p}.attention.self.{n}").reshape(len(ids), heads, -1).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        attended = attended.transpose(1, 0, 2).reshape(len(ids), -1)
        x = x + linear(attended, f"{p}.attention.output.dense")
        x = _layer_norm(
            x,
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
            eps,
        )
        h = linear(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + _ERF(h / math.sqrt(2.0)))
        x = x + linear(h, f"{p}.output.dense")
        x = _layer_norm(x, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], eps)
    mean = x.mean(0)
    return mean / np.linalg.norm(mean)


def main() -> None:
    cache = Path(os.environ.get("MLXQ_CACHE_DIR", Path.home() / ".cache" / "mlxq"))
    folder = resolve_model_path(DEMO_EMBEDDING_MODEL_ID, cache)
    vectors = [embed(folder, s) for s in SENTENCES]
    data = {
        "model": DEMO_EMBEDDING_MODEL_ID,
        "how": "bench/embedding_reference.py: numpy float64 BERT, sentence-transformers pooling",
        "sentences": SENTENCES,
        "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}; first: {vectors[0][:4]}")


if __name__ == "__main__":
    main()
