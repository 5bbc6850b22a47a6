"""A small BERT encoder in MLX, for sentence embeddings (all-MiniLM-L6-v2 and its kin).

Why our own rather than mlx-embeddings: its 75 KB wheel pulls in mlx-vlm and
transformers>=5 (with sentencepiece), hundreds of MB of dependencies and a second model
loader, for what is here about 150 lines: BERT's embeddings (word + position + token type),
N post-norm encoder layers (GELU, layer norm eps from config.json), an additive attention
mask for padding, then sentence-transformers' pooling: the mean of the last hidden states
over real (non-padding) tokens, L2-normalised. The weights are read with ``mx.load`` from
model.safetensors as Hugging Face names them; the tokenizer is tokenizer.json, read by the
``tokenizers`` library, with its built-in fixed padding and truncation switched off (we pad
each batch to its longest input, and truncate only when a request asks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from tokenizers import Tokenizer

DEFAULT_MAX_LENGTH = 256
"""sentence-transformers' max_seq_length for MiniLM, when the folder does not say."""


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layer_norm_eps: float
    max_length: int
    """Most tokens per input, special tokens included (sentence_bert_config.json)."""

    @classmethod
    def from_folder(cls, folder: Path) -> BertConfig:
        config = json.loads((folder / "config.json").read_text())
        sbert = folder / "sentence_bert_config.json"
        max_length = (
            json.loads(sbert.read_text()).get("max_seq_length", DEFAULT_MAX_LENGTH)
            if sbert.is_file()
            else DEFAULT_MAX_LENGTH
        )
        return cls(
            hidden_size=config["hidden_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            max_length=min(max_length, config.get("max_position_embeddings", max_length)),
        )


class BertEncoder:
    """BERT's forward pass over a padded batch, with mean pooling and normalisation."""

    def __init__(self, weights: dict[str, mx.array], config: BertConfig) -> None:
        self.config = config
        self._w = weights

    @property
    def nbytes(self) -> int:
        """What its weights take in memory."""
        return sum(int(weight.nbytes) for weight in self._w.values())

    @classmethod
    def load(cls, folder: Path) -> BertEncoder:
        weights = mx.load(str(folder / "model.safetensors"))
        assert isinstance(weights, dict)
        mx.eval(weights)  # read now, on the loading thread, not lazily in the first pass
        return cls(weights, BertConfig.from_folder(folder))

    def _norm(self, x: mx.array, name: str) -> mx.array:
        return mx.fast.layer_norm(
            x, self._w[f"{name}.weight"], self._w[f"{name}.bias"], self.config.layer_norm_eps
        )

    def _linear(self, x: mx.array, name: str) -> mx.array:
        return mx.addmm(self._w[f"{name}.bias"], x, self._w[f"{name}.weight"].T)

    def hidden_states(self, ids: mx.array, mask: mx.array) -> mx.array:
        """The last layer's states, (batch, length, hidden); ``mask`` is 1 for real tokens."""
        batch, length = ids.shape
        w = self._w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]  # one segment: type 0
        )
        x = self._norm(x, "embeddings.LayerNorm")
        heads = self.config.num_attention_heads
        head_dim = self.config.hidden_size // heads
        # Padding keys get -inf-like scores, so no real token attends to them.
        bias = ((1.0 - mask.astype(x.dtype)) * -1e9)[:, None, None, :]
        for i in range(self.config.num_hidden_layers):
            p = f"encoder.layer.{i}"

            def split(t: mx.array) -> mx.array:
                return t.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

            q = split(self._linear(x, f"{p}.attention.self.query"))
            k = split(self._linear(x, f"{p}.attention.self.key"))
            v = split(self._linear(x, f"{p}.attention.self.value"))
            attended = mx.fast.scaled_dot_product_attention(
                q, k, v, scale=head_dim**-0.5, mask=bias
            )
            attended = attended.transpose(0, 2, 1, 3).reshape(batch, length, -1)
            x = self._norm(
                x + self._linear(attended, f"{p}.attention.output.dense"),
                f"{p}.attention.output.LayerNorm",
            )
            inner = nn.gelu(self._linear(x, f"{p}.intermediate.dense"))  # erf GELU, as BERT
            x = self._norm(x + self._linear(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x

    def embed(self, ids: mx.array, mask: mx.array) -> mx.array:
        """Unit vectors, (batch, hidden): the mean over real tokens, L2-normalised."""
        states = self.hidden_states(ids, mask)
        weights = mask.astype(states.dtype)[..., None]
        mean = (states * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)
        norm = mx.sqrt((mean * mean).sum(axis=-1, keepdims=True))
        return mean / mx.maximum(norm, 1e-12)


class BertTokenizer:
    """tokenizer.json without its fixed padding/truncation; token-id inputs get wrapped in the
    model's [CLS] ... [SEP], as a text's tokens are."""

    def __init__(self, folder: Path) -> None:
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.cls_id = self._special("[CLS]")
        self.sep_id = self._special("[SEP]")
        self.pad_id = self._special("[PAD]")
        self.vocab_size: int = self._tokenizer.get_vocab_size()

    def _special(self, token: str) -> int:
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"tokenizer.json has no {token} token: not a BERT tokenizer")
        return int(found)

    def encode(self, inputs: list[str | list[int]]) -> list[list[int]]:
        """Each input's full token ids, special tokens included (never truncated here)."""
        texts = [(i, text) for i, text in enumerate(inputs) if isinstance(text, str)]
        encoded: list[list[int]] = [
            [self.cls_id, *tokens, self.sep_id] if isinstance(tokens, list) else []
            for tokens in inputs
        ]
        if texts:
            for (i, _), enc in zip(
                texts, self._tokenizer.encode_batch([t for _, t in texts]), strict=True
            ):
                encoded[i] = list(enc.ids)
        return encoded

    def truncate(self, ids: list[int], max_length: int) -> list[int]:
        """The first tokens, still ending in [SEP] (as sentence-transformers truncates)."""
        return ids if len(ids) <= max_length else [*ids[: max_length - 1], self.sep_id]


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[mx.array, mx.array]:
    """Token ids padded to the batch's longest, and the mask of real tokens."""
    length = max(len(s) for s in sequences)
    ids = [s + [pad_id] * (length - len(s)) for s in sequences]
    mask = [[1] * len(s) + [0] * (length - len(s)) for s in sequences]
    return mx.array(ids, dtype=mx.int32), mx.array(mask, dtype=mx.int32)
