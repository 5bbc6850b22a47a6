"""Forced tool calls with the real demo model, through the official clients of each dialect:
a call cut short by the token limit comes back as a call (OpenAI's partial call with
finish_reason "length", Anthropic's tool_use block with stop_reason "max_tokens", an
incomplete function_call item), a forced call's arguments stream while they are decoded,
and "required" with parallel calls allowed answers one or more calls."""

import json

import anthropic
import openai
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

pytestmark = pytest.mark.e2e

WEATHER = {  # one parameter, nothing said of other keys (LangChain's and Ollama's way)
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    },
}
ASK = "What is the weather in Paris, Tokyo and Lima?"
CUT = 8
"""Tokens: the call's name is written, its arguments are not finished."""


@pytest.fixture(scope="module")
def client(model_service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def claude(model_service: Service) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=model_service.base_url, api_key="x", max_retries=0)


def forced_chat(client: openai.OpenAI, **options):
    return client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=[{"role": "user", "content": ASK}],
        tools=[{"type": "function", "function": WEATHER}],
        temperature=0,
        **{"tool_choice": "required", **options},
    )


def test_a_forced_call_cut_short_is_a_partial_call(client: openai.OpenAI) -> None:
    choice = forced_chat(client, max_tokens=CUT).choices[0]
    assert choice.finish_reason == "length" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    arguments = call.function.arguments  # the arguments as far as they went, not mlxq's wrapper
    assert '{"city":"'.startswith(arguments) or arguments.startswith('{"city":"')

    deltas, reasons = [], []
    for chunk in forced_chat(client, max_tokens=CUT, stream=True):
        for streamed in chunk.choices:
            deltas += streamed.delta.tool_calls or []
            reasons.append(streamed.finish_reason)
    assert reasons[-1] == "length"
    assert deltas and deltas[0].function.name == "get_weather" and deltas[0].id
    assert "".join(d.function.arguments for d in deltas) == arguments


def test_required_with_parallel_calls_answers_calls_that_parse(client: openai.OpenAI) -> None:
    """Whether the tiny model calls once or thrice is its choice; the grammar allows both
    (tests/worker/test_constrained.py), and every call it makes parses. Without parallel
    calls, exactly one."""
    several = forced_chat(client, max_tokens=120, parallel_tool_calls=True).choices[0]
    assert several.finish_reason == "tool_calls" and several.message.tool_calls
    for call in several.message.tool_calls:
        assert call.function.name == "get_weather"
        assert list(json.loads(call.function.arguments)) == ["city"]
    one = forced_chat(client, max_tokens=120, parallel_tool_calls=False).choices[0]
    assert one.finish_reason == "tool_calls" and len(one.message.tool_calls) == 1


def test_anthropic_streams_a_forced_input_and_keeps_a_cut_one(claude: anthropic.Anthropic) -> None:
    tools = [{"name": WEATHER["name"], "input_schema": WEATHER["parameters"]}]
    request = {
        "model": DEMO_MODEL_ID,
        "messages": [{"role": "user", "content": ASK}],
        "tools": tools,
        "tool_choice": {"type": "any"},
        "extra_body": {"temperature": 0},
    }
    cut = claude.messages.create(max_tokens=CUT, **request)
    assert cut.stop_reason == "max_tokens"
    (block,) = cut.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert set(block.input) <= {"city"}

    with claude.messages.stream(max_tokens=60, **request) as stream:
        pieces = [e.delta.partial_json for e in stream if e.type == "content_block_delta"]
        message = stream.get_final_message()
    assert len(pieces) > 1  # the input arrived while it was decoded, not in one piece
    (block,) = message.content
    assert message.stop_reason == "tool_use" and list(block.input) == ["city"]
    assert json.loads("".join(pieces)) == block.input


def test_responses_streams_a_forced_calls_arguments(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model=DEMO_MODEL_ID,
            input=ASK,
            tools=[{"type": "function", **WEATHER}],
            tool_choice="required",
            temperature=0,
            max_output_tokens=60,
            stream=True,
        )
    )
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(deltas) > 1 and "".join(deltas) == done.arguments
    assert list(json.loads(done.arguments)) == ["city"]
    assert events[-1].type == "response.completed"
