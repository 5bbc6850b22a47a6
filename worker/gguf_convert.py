"""Converting a llama GGUF file (the demo model's) into an mlx-lm model folder: its weights,
renamed and kept quantized as they are, its config.json and generation_config.json, and a
tokenizer built from its metadata (worker/gguf_tokenizer.py). MLX reads the GGUF itself.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

from worker.gguf_meta import GGUFError, meta_value, write_json
from worker.gguf_tokenizer import special_tokens, write_tokenizer

logger = logging.getLogger(__name__)

# Fallbacks for hyperparameters the GGUF metadata might lack (values of SmolLM2-135M).
_DEFAULTS: dict[str, Any] = {
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 8192,
    "vocab_size": 49152,
}

# GGUF tensor names (without the ".weight/.scales/.biases" suffix) -> mlx-lm llama names.
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# mlx's GGUF reader unpacks Q4_0/Q4_1/Q8_0 blocks of 32 values into affine groups of 32.
_GGUF_GROUP_SIZE = 32


def convert_gguf(gguf: Path, out: Path, sampling: dict[str, float]) -> None:
    """Write an mlx-lm model folder (weights, config, tokenizer) from a llama GGUF;
    ``sampling`` goes into its generation_config.json (the model card's suggestion)."""
    import mlx.core as mx

    loaded: Any = mx.load(str(gguf), return_metadata=True)  # (weights, metadata)
    weights: dict[str, Any] = loaded[0]
    meta: dict[str, Any] = loaded[1]
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"{gguf.name} has architecture {arch!r}; only llama is supported.")

    hparams = _hyperparameters(meta, weights)
    weights = _mlx_weights(weights, hparams)
    quantization = _quantization_config(weights)
    logger.debug("Quantization: %s", quantization)

    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    special = special_tokens(meta)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        **hparams,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "rope_traditional": False,  # q/k rows are back in Hugging Face order
        "bos_token_id": special["bos_id"],
        "eos_token_id": special["eos_id"],
        "pad_token_id": special["pad_id"],
        "quantization": quantization,
        "quantization_config": quantization,
    }
    write_json(out / "config.json", config)
    write_json(
        out / "generation_config.json",
        {
            "bos_token_id": special["bos_id"],
            "eos_token_id": special["eos_id"],
            "pad_token_id": special["pad_id"],
            **sampling,
        },
    )
    write_tokenizer(meta, special, out, hparams["max_position_embeddings"])


def _hyperparameters(meta: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """Read the llama hyperparameters from GGUF metadata, falling back to known values."""

    def get(key: str, name: str) -> Any:
        value = meta_value(meta, f"llama.{key}")
        if value is None:
            logger.debug("GGUF lacks llama.%s; using %s", key, _DEFAULTS[name])
            return _DEFAULTS[name]
        return value

    hidden = int(get("embedding_length", "hidden_size"))
    heads = int(get("attention.head_count", "num_attention_heads"))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = meta_value(meta, "llama.vocab_size") or (len(tokens) if tokens else None)
    head_dim = (
        meta_value(meta, "llama.attention.key_length")
        or meta_value(meta, "llama.rope.dimension_count")
        or hidden // heads
    )
    return {
        "num_hidden_layers": int(get("block_count", "num_hidden_layers")),
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length", "intermediate_size")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", "num_key_value_heads")),
        "head_dim": int(head_dim),
        # GGUF stores these as float32; round away the float32 noise (1e-5, not 9.99e-6).
        "rope_theta": float(f"{get('rope.freq_base', 'rope_theta'):.7g}"),
        "rms_norm_eps": float(f"{get('attention.layer_norm_rms_epsilon', 'rms_norm_eps'):.7g}"),
        "max_position_embeddings": int(get("context_length", "max_position_embeddings")),
        "vocab_size": int(vocab or _DEFAULTS["vocab_size"]),
        # Without a separate output matrix the head reuses the token embedding.
        "tie_word_embeddings": "output.weight" not in weights,
    }


def _mlx_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")  # suffix: weight, scales or biases
    if base in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{suffix}"
    raise GGUFError(f"Unexpected tensor {gguf_name!r} in the GGUF file.")


def _mlx_weights(weights: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """Rename GGUF tensors to mlx-lm names and undo llama.cpp's q/k row permutation."""
    import mlx.core as mx

    heads = {"attn_q": hparams["num_attention_heads"], "attn_k": hparams["num_key_value_heads"]}
    out = {}
    for name, tensor in weights.items():
        kind = name.split(".")[2] if name.startswith("blk.") else ""
        if kind in heads:
            tensor = _unpermute_rows(tensor, heads[kind])
        elif not name.endswith((".scales", ".biases")) and mx.issubdtype(tensor.dtype, mx.floating):
            # Norm weights set the activation dtype; float16 activations run ~30x slower on
            # the CPU backend than float32 (measured: 0.3 vs 8 tokens/s), so keep float32.
            tensor = tensor.astype(mx.float32)
        out[_mlx_name(name)] = tensor
    return out


def _unpermute_rows(tensor: Any, n_heads: int) -> Any:
    """Invert llama.cpp's rope permutation of q/k output rows.

    llama.cpp's converter views each head's rows as (2, head_dim/2) and transposes them to
    (head_dim/2, 2) (interleaved rope). Only output rows move, so this applies equally to
    packed quantized weights, their scales and their biases.
    """
    rows = tensor.shape[0]
    half = rows // n_heads // 2
    return tensor.reshape(n_heads, half, 2, *tensor.shape[1:]).swapaxes(1, 2).reshape(tensor.shape)


def _quantization_config(weights: dict[str, Any]) -> dict[str, Any]:
    """mlx-lm's ``quantization`` entry: the commonest setting, overrides for the rest."""
    found: dict[str, tuple[int, int]] = {}
    for name, packed in weights.items():
        if not name.endswith(".scales"):
            continue
        module = name[: -len(".scales")]
        groups = packed.shape[-1]
        bits = weights[f"{module}.weight"].shape[-1] * 32 // (groups * _GGUF_GROUP_SIZE)
        found[module] = (bits, _GGUF_GROUP_SIZE)
    if not found:
        raise GGUFError("The GGUF file holds no quantized tensors; unexpected file.")
    counts = collections.Counter(found.values())
    bits, group = counts.most_common(1)[0][0]
    logger.debug("Quantized tensors by (bits, group size): %s", dict(counts))
    config: dict[str, Any] = {"group_size": group, "bits": bits, "mode": "affine"}
    for module, (b, g) in sorted(found.items()):
        if (b, g) != (bits, group):
            config[module] = {"group_size": g, "bits": b, "mode": "affine"}
    return config
