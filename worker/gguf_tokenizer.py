"""A Hugging Face tokenizer (tokenizer.json and the transformers config files) built from a
GGUF file's metadata: byte-level BPE, with llama.cpp's "smollm" pre-tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from worker.gguf_meta import GGUFError, meta_value, write_json

logger = logging.getLogger(__name__)

# GGUF token types (llama.cpp's llama_token_type): 3 = control, 4 = user-defined.
_CONTROL = 3
_USER_DEFINED = 4


def special_tokens(meta: dict[str, Any]) -> dict[str, Any]:
    tokens = meta["tokenizer.ggml.tokens"]
    bos = int(meta_value(meta, "tokenizer.ggml.bos_token_id"))
    eos = int(meta_value(meta, "tokenizer.ggml.eos_token_id"))
    pad = meta_value(meta, "tokenizer.ggml.padding_token_id")
    unk = meta_value(meta, "tokenizer.ggml.unknown_token_id")
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


def write_tokenizer(
    meta: dict[str, Any], special: dict[str, Any], out: Path, context_length: int
) -> None:
    """Write tokenizer.json and the transformers config files from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise GGUFError("Only byte-level BPE (gguf 'gpt2') tokenizers are supported.")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise GGUFError("The GGUF vocabulary has duplicate tokens.")
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
    write_json(out / "special_tokens_map.json", {**names, "additional_special_tokens": extra})
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **names,
            "additional_special_tokens": extra,
            "chat_template": meta.get("tokenizer.chat_template"),
            "add_bos_token": bool(meta_value(meta, "tokenizer.ggml.add_bos_token")),
            "add_eos_token": bool(meta_value(meta, "tokenizer.ggml.add_eos_token")),
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": context_length,
        },
    )
    logger.debug(
        "Tokenizer: %d tokens, %d merges, %d special", len(tokens), len(merges), len(special_ids)
    )
