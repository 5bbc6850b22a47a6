"""Structured output: ``response_format`` (and every dialect's way to say it) enforced by
constrained decoding.

Each constrained sequence gets a grammar matcher that, before every sampling step, computes
which tokens may come next and sets every other logit to -inf, so the text can only be JSON
that matches the schema (or a match of a regular expression, one of some strings, a sentence
of a Lark grammar: vLLM's guided decoding), and EOS is allowed only once it is complete. The matcher
runs as an mlx-lm logits processor, so the same object works in ``generate_step`` and in
``BatchGenerator`` (per-sequence processors), next to unconstrained sequences.

The engine is llguidance (docs/structured-output.md has the measurements that chose it):
wheels for Linux and macOS arm64 without torch, ~10-200 us per mask on the demo tokenizer,
no compile step that scales with the vocabulary, and it rejects JSON Schema keywords it
cannot enforce instead of silently ignoring them, which is what a 400 needs.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from copy import copy
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.numpy as llg_numpy
import mlx.core as mx
import numpy as np
from llguidance.gbnf_to_lark import GbnfToLarkError, any_to_lark

if TYPE_CHECKING:  # only in llguidance's type stubs
    from llguidance._lib import JsonCompileOptions

# Compact JSON, no free whitespace: small models otherwise loop on spaces and newlines until
# max_tokens. Overrides (not defaults) so a schema's "x-guidance" cannot turn them back on.
JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "lenient": False}

# Any JSON object: what OpenAI's {"type": "json_object"} promises.
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


class SchemaError(ValueError):
    """A format the engine cannot enforce; the API answers 400 naming ``param``, the request
    field it came from."""

    def __init__(self, message: str, param: str = "response_format") -> None:
        super().__init__(message)
        self.param = param


def _first_line(message: str) -> str:
    """llguidance errors append a multi-line parser state dump (and a regex error a picture
    of where it is); clients need the cause: the first line, and any ``error:`` line."""
    if not message:
        return ""
    lines = message.strip().split("\n<state>")[0].strip().splitlines()
    causes = [line.strip() for line in lines[1:] if line.strip().startswith("error:")]
    return "; ".join([lines[0].rstrip(":"), *causes])


def _llg_tokenizer(tokenizer: Any) -> llguidance.LLTokenizer:
    """Wrap the model's fast tokenizer (mlx-lm ``TokenizerWrapper``, a Hugging Face fast
    tokenizer, or a ``tokenizers.Tokenizer``) without importing transformers."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    backend = getattr(hf, "backend_tokenizer", hf)
    if not hasattr(backend, "to_str"):
        raise TypeError("constrained decoding needs a fast (Rust `tokenizers`) tokenizer")
    backend = copy(backend)  # padding/truncation settings must not leak into the mask
    backend.no_padding()
    backend.no_truncation()
    eos = getattr(tokenizer, "eos_token_ids", None) or [hf.eos_token_id]
    return llguidance.LLTokenizer(backend.to_str(), eos_token=sorted(int(t) for t in eos))


class GrammarCompiler:
    """Built once per worker from its tokenizer (~0.3 s for a 49k vocabulary).

    Compiled schemas are kept in a bounded LRU keyed by the schema's canonical JSON; each
    entry is a template matcher that requests deep-copy, which shares its lazily built lexer
    states, so repeated schemas neither recompile nor rebuild those (measured: the first
    request for a schema costs ~2x the later ones). Thread-safe: the API side may validate
    schemas while the engine thread generates.
    """

    def __init__(self, tokenizer: Any, *, cache_size: int = 64) -> None:
        self._tokenizer = _llg_tokenizer(tokenizer)
        self._cache: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.vocab_size)

    def json_object(self) -> JsonConstraint:
        """A constraint for ``{"type": "json_object"}``: any JSON object."""
        return self.json_schema(JSON_OBJECT_SCHEMA)

    def json_schema(
        self, schema: Mapping[str, Any], param: str = "response_format"
    ) -> JsonConstraint:
        """A fresh per-request constraint; raises SchemaError for schemas it cannot enforce."""
        if not isinstance(schema, Mapping):
            raise SchemaError("the JSON schema must be a JSON object", param)
        try:
            text = json.dumps(schema, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"the JSON schema is not JSON: {exc}", param) from exc
        return self._constraint("json_schema", text, param)

    def regex(self, pattern: str, param: str) -> JsonConstraint:
        """Text that matches ``pattern`` (Rust regex syntax, as llguidance reads it) whole."""
        return self._constraint("regex", pattern, param)

    def choice(self, choices: list[str], param: str) -> JsonConstraint:
        """Exactly one of ``choices``."""
        if not choices:
            raise SchemaError("give at least one choice", param)
        alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)
        return self._constraint("lark", f"start: {alternatives}", param)

    def grammar(self, grammar: str, param: str) -> JsonConstraint:
        """A sentence of ``grammar``: Lark, as llguidance reads it, or GBNF/EBNF (llama.cpp's
        and xgrammar's ``root ::= ...``), converted to Lark first."""
        try:
            lark = any_to_lark(grammar)
        except GbnfToLarkError as exc:
            raise SchemaError(f"the grammar is not valid: {_first_line(str(exc))}", param) from exc
        return self._constraint("lark", lark, param)

    def _constraint(self, kind: str, text: str, param: str) -> JsonConstraint:
        key = f"{kind}:{text}"
        with self._lock:
            template = self._cache.get(key)
            if template is not None:
                self._cache.move_to_end(key)
        if template is None:
            template = self._compile(kind, text, param)  # outside the lock: no GIL held
            with self._lock:
                self._cache[key] = template
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return JsonConstraint(template.deep_copy(), self.vocab_size)

    def for_response_format(
        self, response_format: Mapping[str, Any] | None
    ) -> JsonConstraint | None:
        """The constraint for a job's ``response_format`` (shared/schemas.py:ResponseFormat;
        None for text/absent)."""
        spec = response_format or {}
        kind, param = spec.get("type", "text"), spec.get("field") or "response_format"
        if kind == "text":
            return None
        if kind == "json_object":
            return self.json_schema(JSON_OBJECT_SCHEMA, param)
        if kind == "json_schema":
            schema = spec.get("json_schema")
            if not isinstance(schema, Mapping) or "schema" not in schema:
                raise SchemaError("json_schema.schema is required", param)
            return self.json_schema(schema["schema"], param)
        if kind == "regex":
            return self.regex(str(spec.get("pattern")), param)
        if kind == "choice":
            return self.choice(list(spec.get("choices") or []), param)
        if kind == "grammar":
            return self.grammar(str(spec.get("grammar")), param)
        raise SchemaError(f"type {kind!r} is not supported", param)

    def _compile(self, kind: str, text: str, param: str) -> llguidance.LLMatcher:
        what = "JSON schema" if kind == "json_schema" else kind if kind == "regex" else "grammar"
        try:
            if kind == "json_schema":
                grammar = llguidance.LLMatcher.grammar_from_json_schema(
                    text, overrides=JSON_OPTIONS
                )
            elif kind == "regex":
                grammar = llguidance.LLMatcher.grammar_from_regex(text)
            else:
                grammar = llguidance.LLMatcher.grammar_from_lark(text)
        except ValueError as exc:
            raise SchemaError(f"the {what} is not valid: {_first_line(str(exc))}", param) from exc
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            problem = "is not supported" if kind == "json_schema" else "cannot be compiled"
            raise SchemaError(f"the {what} {problem}: {_first_line(matcher.get_error())}", param)
        return matcher


def _apply_mask(bitmask: np.ndarray, logits: mx.array) -> mx.array:
    """-inf where the bit is 0. numpy unpacks the bits (no MLX JIT, so it is equally fast on
    Linux images without a C++ compiler, where mx.compile's CPU fusion falls back)."""
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=-1, bitorder="little")
    vocab = logits.shape[-1]
    if allowed.shape[-1] < vocab:  # the model pads its embedding beyond the tokenizer
        allowed = np.pad(allowed, ((0, 0), (0, vocab - allowed.shape[-1])))
    allowed = allowed[:, :vocab].view(np.bool_)
    return mx.where(mx.array(allowed), logits, -mx.inf)


class JsonConstraint:
    """One sequence's grammar state, called by mlx-lm as a logits processor.

    mlx-lm calls ``processor(tokens, logits)`` before sampling each token. ``tokens`` is the
    sequence's whole context (prompt + generated so far) as a 1-D array: its first call holds
    only the prompt, each later call one more token, the one sampled at the previous step.
    ``generate_step`` and ``BatchGenerator`` both sample one step ahead, so after the EOS
    token is sampled the processor is called once more; the matcher then only allows EOS.
    The state is tied to the context length it has seen, not to the number of calls, so
    a stream moved from ``generate_step`` into the batch (same context again) or a cache
    trimmed back by a few tokens (shorter context: rollback) stays exact.
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._bitmask = llg_numpy.allocate_token_bitmask(1, vocab_size)
        self._prompt_len: int | None = None
        self._seen = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        # Read the new token first: its sampling was queued a step ago, while any MLX work
        # asked for after the forward pass is queued (a stream runs in order) would wait for
        # it. Then start the forward pass, which runs while the mask is computed here.
        self._sync(tokens)
        mx.async_eval(logits)
        llg_numpy.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        return _apply_mask(self._bitmask, logits)

    def _sync(self, tokens: mx.array | np.ndarray) -> None:
        """Bring the matcher to the end of ``tokens`` (one new token in the usual case)."""
        ids = np.asarray(tokens).reshape(-1)  # numpy view: no new MLX op to wait for
        n = int(ids.size)
        if self._prompt_len is None or n < self._prompt_len:
            self._matcher.reset()  # first call (or rewound into the prompt): nothing generated
            self._prompt_len = self._seen = n
        elif n > self._seen:
            for token in ids[self._seen :].tolist():
                # One by one: consume_tokens([EOS]) errs once the JSON is complete, while
                # consume_token(EOS) is accepted. A disallowed token puts the matcher in
                # its error state, where the mask allows only EOS.
                if not self._matcher.consume_token(token):
                    break
            self._seen = n
        elif n < self._seen:
            self._matcher.rollback(self._seen - n)
            self._seen = n

    def allowed_prefix(self, context: list[int], draft: list[int]) -> int:
        """How many of ``draft``'s first tokens the grammar allows after ``context`` (a
        speculative step never lets the matcher consume a token it forbids)."""
        self._sync(np.asarray(context))
        return int(self._matcher.validate_tokens(draft))

    def rewind_to(self, length: int) -> None:
        """Forget the tokens consumed beyond the first ``length`` of the context (a
        speculative step's rejected draft tokens)."""
        if self._prompt_len is not None and length < self._seen:
            self._matcher.rollback(self._seen - max(length, self._prompt_len))
            self._seen = max(length, self._prompt_len)

    @property
    def generated(self) -> int:
        """Tokens consumed since the prompt."""
        return 0 if self._prompt_len is None else self._seen - self._prompt_len

    @property
    def is_accepting(self) -> bool:
        """The text so far is complete, schema-valid JSON: EOS is allowed now."""
        return self._matcher.is_accepting() and not self._matcher.is_error()

    @property
    def is_finished(self) -> bool:
        """Nothing but EOS can follow (JSON complete, EOS consumed, or an error)."""
        return self._matcher.is_stopped()

    @property
    def error(self) -> str | None:
        """Why the matcher stopped on a token it did not allow (None when all is well)."""
        return _first_line(self._matcher.get_error()) if self._matcher.is_error() else None
