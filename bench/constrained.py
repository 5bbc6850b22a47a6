"""What structured output costs: per-token decode time with and without a JSON constraint.

    python -m bench.constrained                 # demo model, batch 1 and 8 (~8 min on 2 CPUs)
    python -m bench.constrained --tokens 32 --runs 3 --batch 1 8 --json out.json
    python -m bench.constrained engines         # grammar engines: mask cost + schema coverage

``generate`` (the default) runs the demo model as the worker does (OpenBLAS, float32 weights
on the CPU): batch 1 through mlx-lm's ``generate_step``, batch 8 through ``BatchGenerator``
with per-sequence logits processors. Every sequence generates exactly ``--tokens`` tokens
(EOS does not stop it), and the schema asks for at least 10 list items so the grammar is
still live at the end. Each run gives the median step's wall time, process CPU time and the
constraints' own CPU time (main thread, after the sampled token is ready); the table shows
medians over ``--runs`` runs, modes interleaved so that load from other processes hits them
alike. On a shared, busy machine wall time is noisy: the CPU columns are the steadier ones.

``engines`` compares llguidance, xgrammar and outlines-core on the demo tokenizer without
the model: engine time per decode step (mask for every sequence + advancing each matcher) at
batch 1 and 8, the first request's extra cost, and which JSON Schema features each enforces
(valid instances accepted, invalid ones rejected). Engines that are not installed are skipped
(xgrammar needs torch: ``pip install xgrammar`` brings in ~5 GB on Linux).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PEOPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 10,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 30},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "role": {"enum": ["admin", "user", "guest"]},
                    "city": {"type": "string"},
                },
                "required": ["name", "age", "role", "city"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}
PROMPT = "List ten people with their name, age, role and city as JSON."


def _load(model_dir: Path) -> tuple[Any, Any]:
    from worker.cpu_backend import load_fast_blas

    load_fast_blas("auto")
    from mlx_lm import load

    from worker.cpu_backend import dequantize_to_float32, on_cpu

    model, tokenizer = load(str(model_dir))
    if on_cpu():
        dequantize_to_float32(model)
    return model, tokenizer


class _Timed:
    """Wraps a constraint to time its own work: main-thread CPU time (``thread_time``, which
    other processes on a busy machine do not inflate), after the token it needs is ready."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cpu_s = 0.0

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        mx.eval(tokens)  # waiting for the previous step is not the constraint's cost,
        mx.async_eval(logits)  # nor starting the forward pass (unconstrained runs do it too)
        t = time.thread_time()
        out = self.inner(tokens, logits)
        self.cpu_s += time.thread_time() - t
        return out


class _Clock:
    """Per decode step: wall time, process CPU time, and the constraints' own CPU time."""

    def __init__(self, processors: list[Any]) -> None:
        self.processors = [p for p in processors if p is not None]
        self.rows: list[tuple[float, float, float]] = []
        self._last = self._now()

    def _now(self) -> tuple[float, float, float]:
        own = sum(p.cpu_s for p in self.processors)
        return time.perf_counter(), time.process_time(), own

    def tick(self, keep: bool = True) -> None:
        now = self._now()
        if keep:
            self.rows.append(tuple(b - a for a, b in zip(self._last, now, strict=True)))
        self._last = now

    def medians(self) -> dict[str, float]:
        wall, cpu, own = zip(*self.rows[1:], strict=True)  # the first step holds prefill work
        return {
            "wall_ms": statistics.median(wall) * 1e3,
            "cpu_ms": statistics.median(cpu) * 1e3,
            "constraint_us": statistics.median(own) * 1e6,
        }


def _single(model: Any, prompt: list[int], tokens: int, processor: Any) -> dict[str, float]:
    """One generate_step run (the worker's path for a lone request)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    processor = processor and _Timed(processor)
    steps = generate_step(
        mx.array(prompt),
        model,
        max_tokens=tokens,
        logits_processors=[processor] if processor else None,
    )
    next(steps)
    clock = _Clock([processor])
    for _ in steps:
        clock.tick()
    return clock.medians()


def _batched(model: Any, prompt: list[int], tokens: int, batch: int, make: Any) -> dict:
    """One BatchGenerator run with ``batch`` sequences decoding together."""
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(model, completion_batch_size=batch, prefill_batch_size=batch)
    processors = [(p := make(i)) and _Timed(p) for i in range(batch)]
    generator.insert(
        [prompt] * batch,
        max_tokens=[tokens] * batch,
        logits_processors=[[p] if p else [] for p in processors],
    )
    clock = _Clock(processors)
    while responses := generator.next_generated():
        clock.tick(len(responses) == batch and all(r.finish_reason is None for r in responses))
    generator.close()
    return clock.medians()


def generate_bench(args: argparse.Namespace) -> dict[str, Any]:
    from worker.demo_model import prepare_demo_model

    model, tokenizer = _load(prepare_demo_model(args.cache_dir))  # OpenBLAS before MLX
    from worker.constrained import GrammarCompiler

    compiler = GrammarCompiler(tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True
    )

    def schema(i: int) -> Any:
        return compiler.json_schema(PEOPLE_SCHEMA)

    modes: dict[str, Any] = {
        "none": lambda i: None,
        "json_schema": schema,
        "json_object": lambda i: compiler.json_object(),
        "json_schema on 1 of n": lambda i: schema(i) if i == 0 else None,
    }
    results: dict[str, Any] = {"tokens": args.tokens, "runs": args.runs, "settings": {}}
    for batch in args.batch:
        names = [m for m in modes if batch > 1 or not m.endswith("1 of n")]
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in names}
        for _ in range(args.runs):  # modes interleaved, so load drift hits them alike
            for mode in names:
                if batch == 1:
                    runs[mode].append(_single(model, prompt, args.tokens, modes[mode](0)))
                else:
                    runs[mode].append(_batched(model, prompt, args.tokens, batch, modes[mode]))
        for mode in names:
            row = {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]}
            row["best_wall_ms"] = min(r["wall_ms"] for r in runs[mode])
            for key in ("wall", "cpu"):
                pairs = zip(runs[mode], runs["none"], strict=True)
                ratios = [c[f"{key}_ms"] / b[f"{key}_ms"] - 1 for c, b in pairs]
                row[f"{key}_overhead"] = statistics.median(ratios)
            results["settings"][f"batch {batch} {mode}"] = row
            walls = [round(r["wall_ms"], 1) for r in runs[mode]]
            print(f"batch {batch} {mode}: wall {walls} ms", flush=True)
    return results


def _table(results: dict[str, Any]) -> None:
    head = ("ms/step", "best", "overhead", "CPU ms", "overhead", "constraint")
    print(
        f"\n{'setting':28s} {head[0]:>8s} {head[1]:>6s} {head[2]:>9s} "
        f"{head[3]:>7s} {head[4]:>9s} {head[5]:>11s}"
    )
    for key, row in results["settings"].items():
        none = key.endswith(" none")
        wall = "" if none else f"{row['wall_overhead'] * 100:+.1f}%"
        cpu = "" if none else f"{row['cpu_overhead'] * 100:+.1f}%"
        own = "" if none else f"{row['constraint_us']:.0f} us"
        print(
            f"{key:28s} {row['wall_ms']:8.1f} {row['best_wall_ms']:6.1f} {wall:>9s} "
            f"{row['cpu_ms']:7.1f} {cpu:>9s} {own:>11s}"
        )
    print(
        f"(medians of {results['runs']} interleaved runs of {results['tokens']} tokens; best: "
        "fastest run; overhead: median ratio to the 'none' run of the same round; CPU: process "
        "CPU time per step; constraint: the constraints' own main-thread CPU time per step)"
    )


# -- engines ----------------------------------------------------------------------------------

CASES: dict[str, tuple[dict[str, Any], list[Any], list[Any]]] = {
    "nested objects": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "object",
                    "properties": {"b": {"type": "string"}},
                    "required": ["b"],
                    "additionalProperties": False,
                }
            },
            "required": ["a"],
            "additionalProperties": False,
        },
        [{"a": {"b": "x"}}],
        [{"a": {}}, {"a": {"b": 1}}],
    ),
    "array items, minItems/maxItems": (
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        [[1, 2], [7]],
        [[], [1, 2, 3, 4], ["a"]],
    ),
    "enum": ({"enum": ["red", "green", 3]}, ["red", 3], ["blue", 4]),
    "const": ({"const": "x"}, ["x"], ["y"]),
    "integer minimum/maximum": (
        {"type": "integer", "minimum": 1, "maximum": 12},
        [1, 7, 12],
        [0, 13, 100, -3],
    ),
    "number exclusiveMinimum/maximum": (
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1.5},
        [0.5, 1.5, 1],
        [0, -1, 2, 1.6],
    ),
    "integer multipleOf": ({"type": "integer", "multipleOf": 5}, [10, 0], [7]),
    "required vs optional": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
            "required": ["a"],
            "additionalProperties": False,
        },
        [{"a": 1}, {"a": 1, "b": "x"}],
        [{"b": "x"}, {"a": 1, "c": 2}],
    ),
    "additionalProperties: schema": (
        {"type": "object", "additionalProperties": {"type": "integer"}},
        [{"k": 1}, {}],
        [{"k": "s"}],
    ),
    "anyOf": (
        {
            "anyOf": [
                {"type": "integer"},
                {
                    "type": "object",
                    "properties": {"k": {"type": "boolean"}},
                    "required": ["k"],
                    "additionalProperties": False,
                },
            ]
        },
        [5, {"k": True}],
        ["s", {"k": 1}],
    ),
    "oneOf": ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, [1, "a"], [None]),
    "allOf": (
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
        [{"a": 1, "b": 2}],
        [{"a": 1}],
    ),
    "type list (nullable)": ({"type": ["string", "null"]}, [None, "a"], [1]),
    "$ref/$defs": (
        {
            "$defs": {
                "pt": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}},
                    "required": ["x"],
                    "additionalProperties": False,
                }
            },
            "type": "object",
            "properties": {"p": {"$ref": "#/$defs/pt"}},
            "required": ["p"],
            "additionalProperties": False,
        },
        [{"p": {"x": 1}}],
        [{"p": {}}],
    ),
    "recursive $ref (5 levels)": (
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "v": {"type": "integer"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    },
                    "required": ["v"],
                    "additionalProperties": False,
                }
            },
            "$ref": "#/$defs/node",
        },
        [
            {
                "v": 1,
                "children": [
                    {"v": 2, "children": [{"v": 3, "children": [{"v": 4, "children": [{"v": 5}]}]}]}
                ],
            }
        ],
        [{"v": 1, "children": [{}]}],
    ),
    "prefixItems (tuple)": (
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        [[1, "a"]],
        [["a", 1], [1, "a", 2]],
    ),
    "string pattern": (
        {"type": "string", "pattern": "^[A-Z]{3}-\\d{2}$"},
        ["ABC-12"],
        ["abc-12", "ABC-123"],
    ),
    "string minLength/maxLength": (
        {"type": "string", "minLength": 2, "maxLength": 4},
        ["ab", "abcd"],
        ["a", "abcde"],
    ),
    "format date": ({"type": "string", "format": "date"}, ["2024-01-31"], ["Jan 1", "2024-13-01"]),
    "format date-time": (
        {"type": "string", "format": "date-time"},
        ["2024-01-31T10:00:00Z"],
        ["yesterday"],
    ),
    "format email": ({"type": "string", "format": "email"}, ["a@b.co"], ["nope"]),
    "format uuid": (
        {"type": "string", "format": "uuid"},
        ["123e4567-e89b-12d3-a456-426614174000"],
        ["123"],
    ),
    "format uri": ({"type": "string", "format": "uri"}, ["https://a.b/c"], ["not a uri"]),
    "minProperties": ({"type": "object", "minProperties": 1}, [{"a": 1}], [{}]),
    "patternProperties": (
        {
            "type": "object",
            "patternProperties": {"^x_": {"type": "integer"}},
            "additionalProperties": False,
        },
        [{"x_a": 1}],
        [{"y": 1}, {"x_a": "s"}],
    ),
    "uniqueItems": (
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        [[1, 2]],
        [[1, 1]],
    ),
    "not": ({"type": "integer", "not": {"const": 3}}, [1], [3]),
    "json_object ({type: object})": (
        {"type": "object"},
        [{"x": [1, {"y": None}], "s": "t"}],
        [[1], "s"],
    ),
}

BENCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "score": {"type": "number"},
    },
    "required": ["name", "age", "role", "tags", "address"],
    "additionalProperties": False,
}
BENCH_DOC = {
    "name": "Ada Lovelace, the first programmer",
    "age": 36,
    "role": "admin",
    "tags": ["math", "poetry", "engines"],
    "address": {"city": "London", "zip": "12345"},
    "score": 9.75,
}
FREE_DOC = {"title": "A free-form object", "items": [1, 2.5, True, None, {"k": "v w"}], "n": "x"}


class _Engine:
    """One engine behind a common face: compile, new matcher, fill mask row, consume."""

    name = ""
    fill_par: Any = None

    def template(self, compiled: Any) -> Any:
        return None

    def matcher(self, compiled: Any, template: Any) -> Any:
        raise NotImplementedError


class _Llg(_Engine):
    name = "llguidance"

    def __init__(self, hf: Any, vocab: int, eos: int) -> None:
        import llguidance
        import llguidance.numpy as lnp

        self.llg, self.lnp, self.vocab = llguidance, lnp, vocab
        self.tok = llguidance.LLTokenizer(hf.to_str(), n_vocab=vocab, eos_token=eos)
        self.executor = llguidance.LLExecutor()
        self.fill_par = self._fill_par

    def compile(self, schema: dict[str, Any]) -> Any:
        opts = {"whitespace_flexible": False}
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, overrides=opts)
        matcher = self.llg.LLMatcher(self.tok, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def matcher(self, compiled: Any, template: Any = None) -> Any:
        return compiled.deep_copy()

    def alloc(self, batch: int) -> Any:
        return self.lnp.allocate_token_bitmask(batch, self.vocab)

    def fill(self, m: Any, bitmask: Any, i: int) -> None:
        self.lnp.fill_next_token_bitmask(m, bitmask, i)

    def _fill_par(self, ms: list[Any], bitmask: Any) -> None:
        pairs = [(m, i) for i, m in enumerate(ms)]
        self.lnp.fill_next_token_bitmask_par(self.executor, pairs, bitmask)

    def consume(self, m: Any, token: int) -> bool:
        return bool(m.consume_token(token))

    def accepting(self, m: Any, eos: int) -> bool:
        return bool(m.is_accepting())


class _Xgr(_Engine):
    name = "xgrammar"

    def __init__(self, hf: Any, vocab: int, eos: int, tokenizer_file: str) -> None:
        import transformers
        import xgrammar

        self.xgr, self.vocab = xgrammar, vocab
        tk = transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)
        info = xgrammar.TokenizerInfo.from_huggingface(tk, vocab_size=vocab, stop_token_ids=[eos])
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False, max_threads=2)
        self.batch = xgrammar.BatchGrammarMatcher(max_threads=2)
        self.fill_par = self._fill_par

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True
        )

    def matcher(self, compiled: Any, template: Any = None) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def alloc(self, batch: int) -> Any:
        return self.xgr.allocate_token_bitmask(batch, self.vocab)

    def fill(self, m: Any, bitmask: Any, i: int) -> None:
        m.fill_next_token_bitmask(bitmask, i)

    def _fill_par(self, ms: list[Any], bitmask: Any) -> None:
        self.batch.batch_fill_next_token_bitmask(ms, bitmask)

    def consume(self, m: Any, token: int) -> bool:
        return bool(m.accept_token(token))

    def accepting(self, m: Any, eos: int) -> bool:
        return bool(m.accept_token(eos))


class _Outlines(_Engine):
    name = "outlines-core"

    def __init__(self, hf: Any, vocab: int, eos: int) -> None:
        import numpy as np
        import outlines_core

        self.oc, self.np, self.vocab = outlines_core, np, vocab
        # Byte-level BPE stores bytes as printable stand-ins (GPT-2's table): map them back.
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
        stand_in = {chr(b): b for b in printable}
        stand_in.update(
            {chr(256 + n): b for n, b in enumerate(sorted(set(range(256)) - set(printable)))}
        )
        special = {t.content for t in hf.get_added_tokens_decoder().values() if t.special}
        words: dict[bytes, list[int]] = {}
        for word, token in hf.get_vocab().items():
            if token != eos and word not in special:
                words.setdefault(bytes(stand_in[c] for c in word), []).append(token)
        self.vocabulary = outlines_core.Vocabulary(eos, words)

    def compile(self, schema: dict[str, Any]) -> Any:
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled: Any, template: Any = None) -> Any:
        return self.oc.Guide(compiled)

    def alloc(self, batch: int) -> Any:
        return self.np.full((batch, (self.vocab + 31) // 32), -1, dtype=self.np.int32)

    def fill(self, m: Any, bitmask: Any, i: int) -> None:
        row = bitmask[i]
        m.write_mask_into(row.ctypes.data, row.size, 4)

    def consume(self, m: Any, token: int) -> bool:
        try:
            m.advance(token, return_tokens=False)
        except Exception:
            return False
        return True

    def accepting(self, m: Any, eos: int) -> bool:
        return bool(m.is_finished())


def _mask_cost(engine: Any, encode: Any, schema: Any, doc: Any, batch: int, par: bool) -> dict:
    tokens = encode(json.dumps(doc, separators=(",", ":")))
    t0 = time.perf_counter()
    compiled = engine.compile(schema)
    bitmask = engine.alloc(batch)
    engine.fill(engine.matcher(compiled), bitmask, 0)
    cold = time.perf_counter() - t0
    steps: list[float] = []
    first = 0.0
    for rep in range(6):
        matchers = [engine.matcher(compiled) for _ in range(batch)]
        rep_steps = []
        for token in tokens:
            t = time.perf_counter()
            if par:
                engine.fill_par(matchers, bitmask)
            else:
                for i, m in enumerate(matchers):
                    engine.fill(m, bitmask, i)
            ok = all([engine.consume(m, token) for m in matchers])
            rep_steps.append(time.perf_counter() - t)
            assert ok, (engine.name, token)
        if rep == 0:
            first = sum(rep_steps)
        else:
            steps += rep_steps
    steps.sort()
    return {
        "compile_and_first_mask_ms": cold * 1e3,
        "first_request_ms": first * 1e3,
        "median_us": statistics.median(steps) * 1e6,
        "p99_us": steps[int(0.99 * len(steps))] * 1e6,
        "steps": len(tokens),
    }


def _coverage(engine: Any, encode: Any, eos: int) -> dict[str, str]:
    def accepts(compiled: Any, value: Any) -> bool:
        for text in (json.dumps(value, separators=(",", ":")), json.dumps(value)):
            m = engine.matcher(compiled)
            if all(engine.consume(m, t) for t in encode(text)) and engine.accepting(m, eos):
                return True
        return False

    rows = {}
    for name, (schema, good, bad) in CASES.items():
        try:
            compiled = engine.compile(schema)
        except Exception as exc:
            rows[name] = "error: " + str(exc).strip().splitlines()[0][:70]
            continue
        if not all(accepts(compiled, v) for v in good):
            rows[name] = "rejects valid"
        else:
            missed = sum(accepts(compiled, v) for v in bad)
            rows[name] = "ok" if not missed else f"accepts invalid ({missed}/{len(bad)})"
    return rows


def _apply_cost(vocab: int) -> dict[str, float]:
    """Median us to turn one bitmask row into masked logits, and a bare eval for scale."""
    import mlx.core as mx
    import numpy as np

    from worker.constrained import _apply_mask

    rng = np.random.default_rng(0)
    bitmask = rng.integers(-(2**31), 2**31 - 1, size=(1, (vocab + 31) // 32), dtype=np.int32)
    logits = mx.random.normal((1, vocab))
    out = {}
    for label, fn in (
        ("apply", lambda: _apply_mask(bitmask, logits)),
        ("bare eval", lambda: logits + 0),
    ):
        times = []
        for _ in range(300):
            t = time.perf_counter()
            mx.eval(fn())
            times.append(time.perf_counter() - t)
        out[label] = round(statistics.median(times) * 1e6, 1)
    return out


def engines_bench(args: argparse.Namespace) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from worker.demo_model import prepare_demo_model

    tokenizer_file = str(prepare_demo_model(args.cache_dir) / "tokenizer.json")
    hf = Tokenizer.from_file(tokenizer_file)
    vocab, eos = hf.get_vocab_size(), hf.token_to_id("<|im_end|>")

    def encode(text: str) -> list[int]:
        return hf.encode(text, add_special_tokens=False).ids

    makers = {
        "llguidance": lambda: _Llg(hf, vocab, eos),
        "xgrammar": lambda: _Xgr(hf, vocab, eos, tokenizer_file),
        "outlines-core": lambda: _Outlines(hf, vocab, eos),
    }
    results: dict[str, Any] = {"apply_mask_us": _apply_cost(vocab)}
    print(f"applying a mask to one row of logits (worker.constrained): {results['apply_mask_us']}")
    for name, make in makers.items():
        try:
            t = time.perf_counter()
            engine = make()
        except ImportError as exc:
            print(f"== {name}: skipped ({exc})")
            continue
        res: dict[str, Any] = {"tokenizer_init_s": time.perf_counter() - t}
        print(f"== {name} (tokenizer {res['tokenizer_init_s']:.2f} s)", flush=True)
        for label, schema, doc in (
            ("schema", BENCH_SCHEMA, BENCH_DOC),
            ("json_object", {"type": "object"}, FREE_DOC),
        ):
            for batch, par in ((1, False), (8, False), (8, True)):
                if par and engine.fill_par is None:
                    continue
                key = f"{label} batch {batch}{' parallel' if par else ''}"
                res[key] = r = _mask_cost(engine, encode, schema, doc, batch, par)
                print(f"  {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
        res["coverage"] = _coverage(engine, encode, eos)
        for case, verdict in res["coverage"].items():
            print(f"  {case:34s} {verdict}")
        results[name] = res
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("what", nargs="?", choices=["generate", "engines"], default="generate")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per sequence")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "mlxq")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.what == "engines":
        results = engines_bench(args)
    else:
        results = generate_bench(args)
        _table(results)
    print(json.dumps(results, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
