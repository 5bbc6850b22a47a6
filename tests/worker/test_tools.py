"""Tool prompts (the template's own, or the Hermes fallback), call schemas, call parsing."""

import json
from pathlib import Path

import pytest
from mlx_lm.tool_parsers import json_tools

from worker.tool_schemas import closed, tool_call_schema
from worker.tools import parse_tool_call, parse_tool_calls, tool_prompt

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Now."}}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
]


class PlainTemplate:
    """A tokenizer whose template knows nothing of tools."""

    has_tool_calling = False
    chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


class ToolTemplate:
    """A tokenizer whose template renders tools (and mlx-lm knows its parser)."""

    has_tool_calling = True
    chat_template = "{{ tools }}"
    tool_parser = staticmethod(json_tools.parse_tool_call)


@pytest.fixture(scope="module")
def demo_tokenizer(cache_dir: Path):
    folder = cache_dir / "models" / "SmolLM2-135M-Instruct-Q4_1"
    if not (folder / "tokenizer_config.json").exists():
        pytest.skip(f"the demo model is not prepared in {folder}")
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(folder)


def test_hermes_fallback_renders_with_the_real_demo_template(demo_tokenizer) -> None:
    assert not demo_tokenizer.has_tool_calling
    messages, kwargs = tool_prompt(demo_tokenizer, CONVERSATION, [WEATHER, TIME], "auto")
    assert kwargs == {}
    prompt = demo_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **kwargs
    )
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n\n")
    signatures = "<tools>\n" + json.dumps(WEATHER) + "\n" + json.dumps(TIME) + "\n</tools>"
    assert signatures in prompt
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n' in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>\n'
    ) in prompt
    assert (
        '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response>\n'
        "<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    ) in prompt


def test_hermes_fallback_adds_a_system_message_when_there_is_none() -> None:
    messages, _ = tool_prompt(PlainTemplate(), [{"role": "user", "content": "hi"}], [TIME])
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("# Tools")
    assert messages[1] == {"role": "user", "content": "hi"}


def test_assistant_text_comes_before_its_tool_calls() -> None:
    history = [{"role": "assistant", "content": "Checking.", "tool_calls": [CALL, CALL]}]
    messages, _ = tool_prompt(PlainTemplate(), history, None)
    block = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert messages == [{"role": "assistant", "content": f"Checking.\n{block}\n{block}"}]


def test_tool_choice_none_renders_no_tools_but_keeps_the_history() -> None:
    messages, kwargs = tool_prompt(PlainTemplate(), CONVERSATION, [WEATHER], "none")
    assert kwargs == {} and "# Tools" not in json.dumps(messages)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[3]["content"].startswith("<tool_response>")
    assert tool_prompt(ToolTemplate(), CONVERSATION, [WEATHER], "none")[1] == {}


def test_templates_that_know_tools_get_them_and_dict_arguments() -> None:
    original = json.dumps(CONVERSATION)
    messages, kwargs = tool_prompt(ToolTemplate(), CONVERSATION, [WEATHER], "auto")
    assert kwargs == {"tools": [WEATHER]}
    assert messages[2]["content"] == ""
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}
    assert json.dumps(CONVERSATION) == original, "the request's messages are not modified"


QWEN_LIKE = (
    "{% for t in tools %}{{ t.function.name }};{% endfor %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% for c in m.tool_calls or [] %}{{ c.function.arguments.city }}"
    "{{ c.function.arguments | tojson }}{% endfor %}|{% endfor %}"
)


def test_a_template_mentioning_tools_renders_them_itself(demo_tokenizer) -> None:
    class Mentions(PlainTemplate):
        chat_template = QWEN_LIKE

    messages, kwargs = tool_prompt(Mentions(), CONVERSATION, [WEATHER, TIME])
    assert kwargs == {"tools": [WEATHER, TIME]}
    prompt = demo_tokenizer.apply_chat_template(
        messages, tokenize=False, chat_template=QWEN_LIKE, **kwargs
    )
    assert prompt.startswith("get_weather;get_time;system:Be brief.|")
    assert 'assistant:Paris{"city": "Paris"}|tool:{"temp_c": 21}|tool:sunny|' in prompt


def test_required_allows_any_tool_and_named_allows_one() -> None:
    required = tool_call_schema([WEATHER, TIME], "required")
    assert [s["properties"]["name"]["const"] for s in required["anyOf"]] == [
        "get_weather",
        "get_time",
    ]
    named = tool_call_schema(
        [WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}}
    )
    assert named == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": "get_time"},
            "arguments": {"type": "object", "properties": {}, "additionalProperties": False},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    assert required["anyOf"][0]["properties"]["arguments"] == {
        **WEATHER["function"]["parameters"],
        "additionalProperties": False,
    }


def test_required_with_parallel_calls_is_one_or_more_calls() -> None:
    several = tool_call_schema([WEATHER, TIME], "required", parallel=True)
    assert several == {
        "type": "array",
        "items": tool_call_schema([WEATHER, TIME], "required"),
        "minItems": 1,
    }
    named = {"type": "function", "function": {"name": "get_time"}}
    assert tool_call_schema([WEATHER, TIME], named, parallel=True)["type"] == "object"


def test_arguments_hold_the_declared_properties_only() -> None:
    """LangChain, smolagents and Ollama-style schemas never say additionalProperties."""
    given = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "where": {"properties": {"lat": {"type": "number"}}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {}}},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
            "either": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "both": {"allOf": [{"type": "object", "properties": {"a": {}}}]},
        },
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
    }
    schema = closed(given)
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["where"]["additionalProperties"] is False
    assert props["tags"]["items"]["additionalProperties"] is False
    assert props["extra"]["additionalProperties"] == {"type": "string"}  # it allows more
    assert props["either"]["anyOf"][0]["additionalProperties"] is False
    assert props["both"] == given["properties"]["both"]  # allOf members are left as given
    assert schema["$defs"]["Point"]["additionalProperties"] is False
    assert closed({"type": "object", "additionalProperties": True}) == {
        "type": "object",
        "additionalProperties": True,
    }
    assert "additionalProperties" not in given  # the request's own schema is not changed


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "'nope', which is not"),
        ([], "required", "needs at least one tool"),
        ([WEATHER], "auto", "does not constrain"),
        ([{"type": "function"}], "required", "Each tool must be"),
    ],
)
def test_tool_call_schema_refuses_what_it_cannot_constrain(tools, choice, message) -> None:
    with pytest.raises(ValueError, match=message):
        tool_call_schema(tools, choice)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    ],
)
def test_parse_hermes_calls(text: str) -> None:
    call = parse_tool_call(text)
    assert call == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert parse_tool_call(text, PlainTemplate()) == call


def test_missing_arguments_are_an_empty_object() -> None:
    assert parse_tool_call('{"name": "get_time"}') == {"name": "get_time", "arguments": "{}"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "get_weather(city='Paris')",
        '{"name": "get_weather", "arguments": {"city": "Par',
        '{"arguments": {}}',
        '{"name": "", "arguments": {}}',
        '{"name": "f", "arguments": [1]}',
    ],
)
@pytest.mark.parametrize("tokenizer", [None, PlainTemplate(), ToolTemplate()])
def test_parse_refuses_bad_text(text: str, tokenizer) -> None:
    with pytest.raises(ValueError, match="Cannot parse the tool call"):
        parse_tool_call(text, tokenizer)


def test_a_json_list_is_one_call_per_item_only_for_parsers_that_say_so() -> None:
    text = '[{"name": "f", "arguments": {}}, {"name": "g"}]'
    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_tool_calls(text)
    assert [c["name"] for c in parse_tool_calls(text, ToolTemplate())] == ["f", "g"]


def test_the_model_parser_is_used_and_may_return_several_calls() -> None:
    class Several(ToolTemplate):
        @staticmethod
        def tool_parser(text: str, tools: list) -> list[dict]:
            if "{" in text:
                raise ValueError("not this model's format")
            return [{"name": n, "arguments": {"t": tools[0]}} for n in text.split()]

    assert parse_tool_calls("a b", Several(), ["x"]) == [
        {"name": "a", "arguments": '{"t": "x"}'},
        {"name": "b", "arguments": '{"t": "x"}'},
    ]
    with pytest.raises(ValueError, match="Expected one tool call, found 2"):
        parse_tool_call("a b", Several(), ["x"])
    # constrained decoding writes bare JSON whatever the model's own format
    assert parse_tool_call('{"name": "a"}', Several(), ["x"]) == {"name": "a", "arguments": "{}"}
