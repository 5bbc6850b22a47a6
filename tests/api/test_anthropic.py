"""Anthropic's Messages API (/v1/messages), through the official ``anthropic`` client: against
a real API and worker with the demo model (e2e), and against the API in this process for
what needs no worker (refusals, errors, the API key)."""

import json
from collections.abc import AsyncIterator

import anthropic
import httpx
import httpx2
import pytest

from api.core.frames import JobStream, frames
from api.core.runner import KEEPALIVE
from api.dialects.anthropic.render import MessageStream
from shared.errors import JobTimedOut
from shared.schemas import Choice, DoneEvent, FunctionCall, StartedEvent, TokenEvent, ToolCall
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


# -- against the demo model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def client(model_service: Service) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=model_service.base_url, api_key="unused", max_retries=0)


GREEDY = {"temperature": 0}
"""anthropic 2.x has no sampling arguments (Anthropic's newest models refuse them): mlxq
still honours temperature, top_p and top_k, sent in ``extra_body``."""


def create(client: anthropic.Anthropic, **options):
    options.setdefault("messages", QUESTION)
    options.setdefault("max_tokens", 12)
    return client.messages.create(model=DEMO_MODEL_ID, extra_body=GREEDY, **options)


def text(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.e2e
def test_a_message_and_its_stream_agree(client) -> None:
    message = create(client, system=SYSTEM)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == DEMO_MODEL_ID
    assert [block.type for block in message.content] == ["text"] and text(message)
    assert message.stop_reason in ("end_turn", "max_tokens") and message.stop_sequence is None
    assert 0 < message.usage.output_tokens <= 12
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 0

    with client.messages.stream(
        model=DEMO_MODEL_ID, system=SYSTEM, messages=QUESTION, max_tokens=12, extra_body=GREEDY
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text(message) == text(final)
    assert final.stop_reason == message.stop_reason
    assert final.usage.output_tokens == message.usage.output_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == (
        message.usage.input_tokens + message.usage.cache_read_input_tokens
    )


@pytest.mark.e2e
def test_a_tool_conversation_round_trips(client) -> None:
    first = create(
        client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=24
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id
    assert set(call.input) == {"city"} and isinstance(call.input["city"], str)
    assert len(call.input["city"]) <= 12

    history = [
        *ASK_WEATHER,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}],
        },
    ]
    final = create(client, messages=history, tools=[WEATHER], max_tokens=16)
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert final.content and final.usage.output_tokens > 0
    prompt = final.usage.input_tokens + final.usage.cache_read_input_tokens
    assert prompt > first.usage.input_tokens + first.usage.cache_read_input_tokens


@pytest.mark.e2e
def test_count_tokens_is_the_prompt_a_message_reports(client) -> None:
    messages = [{"role": "user", "content": "Count the tokens of this question, please."}]
    counted = client.messages.count_tokens(model=DEMO_MODEL_ID, system=SYSTEM, messages=messages)
    assert counted.input_tokens > 0
    message = create(client, system=SYSTEM, messages=messages, max_tokens=2)
    usage = message.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == counted.input_tokens
    assert usage.cache_read_input_tokens > 0  # counting prefilled it into the prefix cache


@pytest.mark.e2e
def test_an_unknown_model_is_anthropics_not_found(client) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no/such-model", messages=QUESTION, max_tokens=5)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": missing.value.body["error"]["message"]},
    }
    assert "no/such-model" in missing.value.message


# -- the API in this process, no worker -------------------------------------------------------

BODY = {"model": DEMO_MODEL_ID, "max_tokens": 5, "messages": QUESTION}


def sdk(api, key: str = "unused") -> anthropic.AsyncAnthropic:
    """The client on the app in this process (anthropic 2.x speaks httpx2, not httpx). Use it
    in ``async with``: a client left to the garbage collector closes its connections in
    whichever test's event loop runs then ("Event loop is closed")."""
    transport = httpx2.ASGITransport(app=api.app)
    return anthropic.AsyncAnthropic(
        base_url="http://127.0.0.1",
        api_key=key,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"top_k": True}, "top_k"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"tool_choice": {"type": "tool", "name": "x"}, "tools": [WEATHER]}, "tool_choice"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}
                ]
            },
            "messages.0.content",
        ),
        ({"messages": [*QUESTION, {"role": "assistant", "content": "The"}]}, "prefill"),
        ({"messages": [{"role": "system", "content": "no"}]}, "messages.0.role"),
        ({"output_config": {"effort": "high"}}, "output_config.effort"),
        ({"output_config": {"format": {"type": "text"}}}, "output_config.format.type"),
        (
            {
                "output_config": {"format": {"type": "json_schema", "schema": {}}},
                "tools": [WEATHER],
                "tool_choice": {"type": "any"},
            },
            "output_config.format cannot be combined",
        ),
    ],
)
async def test_refusals_are_anthropic_400s_that_name_the_field(
    api_client: httpx.AsyncClient, change: dict, named: str
) -> None:
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    response = await api_client.post("/v1/messages", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]


@pytest.mark.anyio
async def test_the_client_raises_anthropics_errors(make_api) -> None:
    async with make_api() as api, sdk(api) as client:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(**BODY, extra_body={"temperature": 2})
        assert bad.value.body["error"]["type"] == "invalid_request_error"
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(**{**BODY, "model": "no/such-model"})
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.count_tokens(model="no/such-model", messages=QUESTION)


@pytest.mark.anyio
async def test_the_api_key_comes_in_x_api_key(make_api) -> None:
    invalid = {"model": DEMO_MODEL_ID, "messages": QUESTION}  # no max_tokens: a 400
    async with make_api(api_key="k") as api:
        missing = await api.client.post("/v1/messages", json=invalid)
        wrong = await api.client.post("/v1/messages", json=invalid, headers={"x-api-key": "x"})
        right = await api.client.post("/v1/messages", json=invalid, headers={"x-api-key": "k"})
        for refused in (missing, wrong):
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
        assert right.status_code == 400, right.text
        async with sdk(api, key="x") as wrong_key, sdk(api, key="k") as right_key:
            with pytest.raises(anthropic.AuthenticationError):
                await wrong_key.messages.create(**BODY)
            with pytest.raises(anthropic.BadRequestError):
                await right_key.messages.create(**BODY, extra_body={"top_k": -1})


# -- the stream's events, from made-up job events -------------------------------------------


def events_of(frames: list[str]) -> list[tuple[str, dict]]:
    parsed = []
    for frame in frames:
        lines = frame.strip().split("\n")
        assert lines[0].startswith("event: ")
        data = json.loads("".join(line.removeprefix("data: ") for line in lines[1:]))
        assert data["type"] == lines[0].removeprefix("event: ")
        parsed.append((data["type"], data))
    return parsed


async def frames_for(*items, error: Exception | None = None) -> list[str]:
    async def rest() -> AsyncIterator:
        for item in items[1:]:
            yield item
        if error is not None:
            raise error

    stream = JobStream(items[0], rest())
    return [frame async for frame in frames(stream, MessageStream("msg_1", "m"))]


CALL = ToolCall(
    id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Rome"}')
)


@pytest.mark.anyio
async def test_text_then_a_tool_call_stream_as_anthropic_blocks() -> None:
    done = DoneEvent(
        seq=4,
        choices=[
            Choice(
                index=0,
                text="Let me see.",
                finish_reason="tool_calls",
                completion_tokens=9,
                tool_calls=[CALL],
            )
        ],
        prompt_tokens=20,
        cached_tokens=5,
    )
    frames = await frames_for(
        KEEPALIVE,
        TokenEvent(seq=1, text="Let me"),
        TokenEvent(seq=2, text=" see."),
        TokenEvent(seq=3, text="", tool_calls=[CALL]),
        done,
    )
    events = events_of(frames)
    assert [name for name, _ in events] == [
        "message_start",  # a keep-alive before the job started: message_start comes first
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    tool_start, tool_delta = events[6][1], events[7][1]
    assert tool_start["index"] == tool_delta["index"] == 1
    assert tool_start["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    assert json.loads(tool_delta["delta"]["partial_json"]) == {"city": "Rome"}
    assert events[0][1]["message"]["usage"]["input_tokens"] == 0  # not known yet
    delta = events[9][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 15,
        "output_tokens": 9,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.anyio
async def test_message_start_waits_for_the_worker_and_counts_the_prompt() -> None:
    done = DoneEvent(
        seq=2,
        choices=[Choice(index=0, text="Hi", finish_reason="stop", completion_tokens=1)],
        prompt_tokens=20,
    )
    frames = await frames_for(
        StartedEvent(seq=0, worker="w", prompt_tokens=20), TokenEvent(seq=1, text="Hi"), done
    )
    events = events_of(frames)
    assert [name for name, _ in events][:3] == ["message_start", "ping", "content_block_start"]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 20, "output_tokens": 0}


@pytest.mark.anyio
async def test_an_error_after_the_stream_began_is_anthropics_error_event() -> None:
    frames = await frames_for(TokenEvent(seq=1, text="Hi"), error=JobTimedOut("too late"))
    name, error = events_of(frames)[-1]
    assert name == "error"
    assert error == {"type": "error", "error": {"type": "timeout_error", "message": "too late"}}
