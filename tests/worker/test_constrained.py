"""Structured output with the real demo model through mlx-lm (no mocks of MLX or llguidance).

Schemas use enums, booleans, bounded integers and short strings so that outputs stay short:
the demo model decodes ~10 tokens/s on a 2-core CPU. The prepared model is cached (see
tests/conftest.py: ``cache_dir``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "London", "Rome"]},
        "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
        "rating": {"type": "number", "minimum": 0, "maximum": 5},
        "facts": {
            "type": "object",
            "properties": {
                "capital": {"type": "boolean"},
                "river": {"enum": ["Seine", "Thames", "Tiber"]},
            },
            "required": ["capital"],
            "additionalProperties": False,
        },
        "languages": {
            "type": "array",
            "items": {"enum": ["fr", "en", "it"]},
            "minItems": 1,
            "maxItems": 2,
        },
        "nickname": {"type": "string", "maxLength": 12},
    },
    "required": ["city", "population", "facts", "languages"],
    "additionalProperties": False,
}
SCHEMA_PROMPT = "Describe Paris as JSON."
OBJECT_PROMPT = 'Give the capital of France as a JSON object like {"capital": "..."}.'
MAX_TOKENS = 60


def check(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """The JSON Schema subset SCHEMA uses (the project does not depend on jsonschema)."""
    if "enum" in schema:
        assert value in schema["enum"], path
        return
    kind = schema["type"]
    if kind == "object":
        assert isinstance(value, dict), path
        assert set(schema["required"]) <= set(value), path
        assert set(value) <= set(schema["properties"]), path
        for key, item in value.items():
            check(item, schema["properties"][key], f"{path}.{key}")
    elif kind == "array":
        assert isinstance(value, list), path
        assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1 << 30), path
        for i, item in enumerate(value):
            check(item, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        assert isinstance(value, str) and len(value) <= schema.get("maxLength", 1 << 30), path
    elif kind == "boolean":
        assert isinstance(value, bool), path
    else:
        assert isinstance(value, int if kind == "integer" else int | float), path
        assert not isinstance(value, bool), path
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), path


@pytest.fixture(scope="module")
def loaded(demo_model: Any) -> tuple[Any, Any]:
    """The session's demo model, loaded as the workers load it (float32 on the CPU)."""
    return demo_model.model, demo_model.tokenizer


@pytest.fixture(scope="module")
def compiler(loaded: tuple[Any, Any]) -> Any:
    from worker.constrained import GrammarCompiler

    return GrammarCompiler(loaded[1])


def chat(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True
    )


def generate(loaded: tuple[Any, Any], prompt: str, constraint: Any, temp: float, seed: int) -> str:
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = loaded
    mx.random.seed(seed)
    steps = generate_step(
        mx.array(chat(tokenizer, prompt)),
        model,
        max_tokens=MAX_TOKENS,
        sampler=make_sampler(temp),
        logits_processors=[constraint],
    )
    out = []
    for token, _ in steps:
        if token in tokenizer.eos_token_ids:
            break
        out.append(token)
    assert len(out) < MAX_TOKENS, "the model did not finish its JSON"
    assert constraint.is_accepting and constraint.is_finished and constraint.error is None
    return tokenizer.decode(out)


SAMPLING = [pytest.param(0.0, 0, id="greedy"), pytest.param(1.0, 1, id="temp1-seed1")]


@pytest.mark.parametrize(("temp", "seed"), SAMPLING)
def test_json_object(loaded: Any, compiler: Any, temp: float, seed: int) -> None:
    value = json.loads(generate(loaded, OBJECT_PROMPT, compiler.json_object(), temp, seed))
    assert isinstance(value, dict)


@pytest.mark.parametrize(("temp", "seed"), SAMPLING)
def test_json_schema(loaded: Any, compiler: Any, temp: float, seed: int) -> None:
    check(
        json.loads(generate(loaded, SCHEMA_PROMPT, compiler.json_schema(SCHEMA), temp, seed)),
        SCHEMA,
    )


def run_batch(loaded: Any, constraints: list[Any], max_tokens: list[int]) -> list[list[int]]:
    from mlx_lm.generate import BatchGenerator

    model, tokenizer = loaded
    generator = BatchGenerator(model, stop_tokens=[[t] for t in tokenizer.eos_token_ids])
    uids = generator.insert(
        [chat(tokenizer, SCHEMA_PROMPT)] * len(constraints),
        max_tokens=max_tokens,
        logits_processors=[[c] if c else [] for c in constraints],
    )
    out: dict[int, list[int]] = {uid: [] for uid in uids}
    while responses := generator.next_generated():
        for r in responses:
            if r.token not in tokenizer.eos_token_ids:
                out[r.uid].append(r.token)
    generator.close()
    return [out[uid] for uid in uids]


def test_batch_generator_constrains_one_sequence_only(loaded: Any, compiler: Any) -> None:
    """Same prompt twice in one batch, one constrained: the other one's tokens are exactly
    those it gets next to an unconstrained neighbour."""
    tokenizer = loaded[1]
    constraint = compiler.json_schema(SCHEMA)
    constrained, free = run_batch(loaded, [constraint, None], [MAX_TOKENS, 20])
    _, reference = run_batch(loaded, [None, None], [20, 20])
    check(json.loads(tokenizer.decode(constrained)), SCHEMA)
    assert constraint.is_finished and constraint.error is None
    assert free == reference
    assert not tokenizer.decode(free).startswith("{")


def test_moved_from_generate_step_into_batch(loaded: Any, compiler: Any) -> None:
    """The scheduler's hand-over (worker/scheduler.py): generate_step has already fed its last
    token to the processor; the batch gets that token again as a one-token prompt."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator, generate_step
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    model, tokenizer = loaded
    prompt = chat(tokenizer, SCHEMA_PROMPT)
    constraint = compiler.json_schema(SCHEMA)
    cache = make_prompt_cache(model)
    steps = generate_step(
        mx.array(prompt), model, prompt_cache=cache, logits_processors=[constraint]
    )
    tokens = [next(steps)[0] for _ in range(6)]
    trim_prompt_cache(cache, 1)
    generator = BatchGenerator(model, stop_tokens=[[t] for t in tokenizer.eos_token_ids])
    generator.insert(
        [[tokens[-1]]],
        max_tokens=[MAX_TOKENS],
        caches=[cache],
        all_tokens=[prompt + tokens[:-1]],
        logits_processors=[[constraint]],
    )
    while responses := generator.next_generated():
        tokens += [r.token for r in responses if r.token not in tokenizer.eos_token_ids]
    generator.close()
    check(json.loads(tokenizer.decode(tokens)), SCHEMA)
    assert constraint.error is None


def test_eos_only_when_complete_then_only_eos(loaded: Any, compiler: Any) -> None:
    import mlx.core as mx
    import numpy as np

    tokenizer = loaded[1]
    (eos,) = tokenizer.eos_token_ids
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    constraint = compiler.json_schema(schema)
    context = chat(tokenizer, "x")
    logits = mx.zeros((1, compiler.vocab_size))

    def allowed(tokens: list[int]) -> set[int]:
        masked = np.array(constraint(mx.array(tokens), logits)[0])
        return set(np.flatnonzero(masked > -np.inf).tolist())

    assert eos not in allowed(context)
    for token in tokenizer.encode('{"n":12}', add_special_tokens=False):
        assert token in allowed(context), tokenizer.decode([token])
        context.append(token)
    assert allowed(context) == {eos} and constraint.is_accepting and constraint.is_finished
    assert allowed(context) == {eos}  # the same context again (a stream moved into a batch)
    assert allowed(context + [eos]) == {eos}  # one step ahead of the sampled EOS
    assert eos not in allowed(context[:-2]) and not constraint.is_accepting  # rolled back


def test_unsupported_schemas_are_refused(compiler: Any) -> None:
    from worker.constrained import SchemaError

    with pytest.raises(SchemaError, match="uniqueItems") as caught:
        compiler.json_schema({"type": "array", "uniqueItems": True})
    assert isinstance(caught.value, ValueError) and caught.value.param == "response_format"
    with pytest.raises(SchemaError, match="missing"):
        compiler.json_schema({"properties": {"a": {"$ref": "#/$defs/missing"}}})
    with pytest.raises(SchemaError):
        compiler.json_schema(["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="required"):
        compiler.for_response_format({"type": "json_schema", "json_schema": {"name": "x"}})
    assert compiler.for_response_format({"type": "text"}) is None
    assert compiler.for_response_format(None) is None


# -- forced tool calls (worker/tool_schemas.py) -------------------------------------------------

WEATHER = {  # as LangChain, smolagents and Ollama's clients write it: nothing said of other keys
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "get_time"}}  # no parameters


def accepted(compiler: Any, tokenizer: Any, schema: dict[str, Any], text: str) -> bool:
    """Whether the constraint lets ``text`` be generated, token by token, and end there."""
    import mlx.core as mx
    import numpy as np

    constraint = compiler.json_schema(schema)
    context = chat(tokenizer, "x")
    logits = mx.zeros((1, compiler.vocab_size))
    for token in tokenizer.encode(text, add_special_tokens=False):
        masked = np.array(constraint(mx.array(context), logits)[0])
        if masked[token] == -np.inf:
            return False
        context.append(token)
    constraint(mx.array(context), logits)
    return constraint.is_accepting


def test_required_with_parallel_calls_admits_several(loaded: Any, compiler: Any) -> None:
    from worker.forced_calls import ForcedCalls
    from worker.tool_schemas import tool_call_schema

    two = '[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","arguments":{}}]'
    several = tool_call_schema([WEATHER, NOW], "required", parallel=True)
    one = tool_call_schema([WEATHER, NOW], "required", parallel=False)
    assert accepted(compiler, loaded[1], several, two)
    assert accepted(compiler, loaded[1], several, two[: two.index(",{")] + "]")
    assert not accepted(compiler, loaded[1], several, "[]")
    assert not accepted(compiler, loaded[1], one, two)
    assert accepted(compiler, loaded[1], one, two[1 : two.index(",{")])
    reader = ForcedCalls()
    reader.feed(two)
    assert [call.function.name for call in reader.calls()] == ["get_weather", "get_time"]


def test_forced_arguments_hold_the_declared_properties_only(loaded: Any, compiler: Any) -> None:
    from worker.tool_schemas import tool_call_schema

    named = {"type": "function", "function": {"name": "get_weather"}}
    schema = tool_call_schema([WEATHER], named)
    invented = '{"name":"get_weather","arguments":{"city":"Paris","temperature":"25.5"}}'
    assert not accepted(compiler, loaded[1], schema, invented)
    answer = generate(loaded, "What is the weather in Paris?", compiler.json_schema(schema), 0, 0)
    assert list(json.loads(answer)["arguments"]) == ["city"]
    no_parameters = tool_call_schema([NOW], {"type": "function", "function": {"name": "get_time"}})
    assert accepted(compiler, loaded[1], no_parameters, '{"name":"get_time","arguments":{}}')
    assert not accepted(
        compiler, loaded[1], no_parameters, '{"name":"get_time","arguments":{"a":1}}'
    )


# -- vLLM's guided decoding: regex, choice, grammar --------------------------------------------


def format_constraint(compiler: Any, **spec: Any) -> Any:
    return compiler.for_response_format({"field": "guided_x", **spec})


def test_regex_choice_and_grammar_allow_what_they_say(loaded: Any, compiler: Any) -> None:
    tokenizer = loaded[1]
    regex = {"type": "regex", "pattern": r"[0-9]{3}-[0-9]{4}"}
    choice = {"type": "choice", "choices": ["yes", 'no "way"', "été 🙂"]}
    lark = {"type": "grammar", "grammar": 'start: "Answer: " NUMBER\nNUMBER: /[0-9]+/'}
    gbnf = {"type": "grammar", "grammar": 'root ::= "yes" | "no"'}
    for spec, good, bad in [
        (regex, "555-1234", "5555-123"),
        (choice, 'no "way"', "maybe"),
        (choice, "été 🙂", "été"),
        (lark, "Answer: 42", "Answer: x"),
        (gbnf, "no", "nope"),
    ]:
        schema_free = format_constraint(compiler, **spec)
        assert schema_free is not None
        assert accepted_by(schema_free, compiler, tokenizer, good), (spec, good)
        assert not accepted_by(format_constraint(compiler, **spec), compiler, tokenizer, bad)


def accepted_by(constraint: Any, compiler: Any, tokenizer: Any, text: str) -> bool:
    import mlx.core as mx
    import numpy as np

    context = chat(tokenizer, "x")
    logits = mx.zeros((1, compiler.vocab_size))
    for token in tokenizer.encode(text, add_special_tokens=False):
        if np.array(constraint(mx.array(context), logits)[0])[token] == -np.inf:
            return False
        context.append(token)
    constraint(mx.array(context), logits)
    return constraint.is_accepting


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"type": "regex", "pattern": "(abc"}, "regex cannot be compiled: .*unclosed group"),
        ({"type": "grammar", "grammar": "start: (("}, "grammar cannot be compiled"),
        ({"type": "grammar", "grammar": "root ::= ((("}, "grammar is not valid"),
        ({"type": "choice", "choices": []}, "at least one choice"),
    ],
)
def test_what_cannot_be_compiled_is_refused_naming_the_field(
    compiler: Any, spec: dict, says: str
) -> None:
    from worker.constrained import SchemaError

    with pytest.raises(SchemaError, match=says) as caught:
        format_constraint(compiler, **spec)
    assert caught.value.param == "guided_x"
