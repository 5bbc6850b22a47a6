"""Tiny mlx-lm models built in a test, with no download: their output is known in advance.

``build_counting_model`` writes a one-layer llama whose greedy continuation of token ``t`` is
always ``t + 1``: the embedding is the identity (one-hot rows), every attention ``o_proj``
and MLP ``down_proj`` is zero (so the residual stream stays the embedding), the final norm
is ones, and ``lm_head`` is a shift matrix (row ``t + 1`` reads coordinate ``t``). A prompt
ending in word k therefore continues with words k+1, k+2, ... up to the end of ``words``.

The tokenizer is a ``tokenizers`` WordLevel model over ``words``: text is split on
whitespace only (so ``<think>`` stays one word) and decoded as the words joined by single
spaces. Its chat template renders only the last message's content, with nothing added.
"""

import json
from pathlib import Path

UNK = "<unk>"
"""Added to the vocabulary when missing: a WordLevel model needs it to encode unknown text."""
SCALE = 20.0
"""Weight of the shift matrix: after RMSNorm the winning logit is SCALE * sqrt(hidden size)."""
CHAT_TEMPLATE = "{{ messages[-1]['content'] }}"


def build_counting_model(folder: Path, words: list[str], eos: str = "</s>") -> Path:
    """Write an mlx-lm loadable model folder over ``words`` (plus ``<unk>`` at the end when
    missing); ``eos`` must be one of them. Returns ``folder``."""
    import mlx.core as mx

    vocab = list(words) if UNK in words else [*words, UNK]
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"words must be distinct: {words!r}")
    if eos not in vocab:
        raise ValueError(f"eos {eos!r} is not one of the words")
    size = len(vocab)
    hidden = max(8, size + (-size % 4))  # >= the vocabulary, a multiple of the 2 heads' 4
    folder.mkdir(parents=True, exist_ok=True)

    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": hidden,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": hidden // 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "vocab_size": size,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": vocab.index(eos),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    zeros = mx.zeros((hidden, hidden), dtype=mx.float32)
    ones = mx.ones((hidden,), dtype=mx.float32)
    shift = mx.zeros((size, hidden), dtype=mx.float32)
    rows = mx.arange(1, size)
    shift[rows, rows - 1] = SCALE
    layer = "model.layers.0."
    weights = {
        "model.embed_tokens.weight": mx.eye(size, hidden, dtype=mx.float32),
        "model.norm.weight": ones,
        "lm_head.weight": shift,
        layer + "input_layernorm.weight": ones,
        layer + "post_attention_layernorm.weight": ones,
        **{layer + f"self_attn.{p}_proj.weight": zeros for p in "qkvo"},
        **{layer + f"mlp.{p}_proj.weight": zeros for p in ("gate", "up", "down")},
    }
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})

    _write_tokenizer(folder, vocab, eos)
    return folder


def _write_tokenizer(folder: Path, vocab: list[str], eos: str) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    # No decoder: tokenizers joins the decoded words with single spaces.
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "unk_token": UNK,
        "pad_token": eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": eos, "unk_token": UNK, "pad_token": eos}, indent=2)
    )


def build_random_llama(
    folder: Path,
    tokenizer_from: Path,
    *,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    intermediate: int = 128,
    seed: int = 0,
) -> Path:
    """Write a Llama with random weights (seeded) and the tokenizer of the model folder
    ``tokenizer_from`` (its vocabulary size too). Its text means nothing; its shape is what
    a test or benchmark chooses (heads that divide among ranks, the demo model's size)."""
    import shutil

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    source = json.loads((tokenizer_from / "config.json").read_text())
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": source["vocab_size"],
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": source.get("bos_token_id"),
        "eos_token_id": source.get("eos_token_id"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, folder / name)
    return folder
