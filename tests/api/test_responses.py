"""POST /v1/responses (OpenAI's Responses API), stateless: every request field honoured,
refused with a 400 that names it, or a no-op; the Response object and its stream as the
official ``openai`` client reads them."""

import json

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses import response_create_params as params
from openai.types.responses import response_text_config_param as text_params
from pydantic import TypeAdapter

from api.core.validators import field_policy
from api.dialects.responses.render import ResponseShape
from api.dialects.responses.schemas import (
    ResponseRequest,
    ResponsesStreamOptions,
    ResponsesTextConfig,
)
from api.dialects.responses.stream import ResponseEvents
from shared.errors import JobTimedOut
from shared.schemas import Choice, DoneEvent, FunctionCall, TokenEvent, ToolCall
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

RESPONSES = "/v1/responses"
SLOW_ENGINE = "tests.support.engines:SlowEngine"

# -- the three lists ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "openai_fields"),
    [
        (ResponseRequest, {**params.ResponseCreateParamsBase.__annotations__, "stream": None}),
        (ResponsesTextConfig, text_params.ResponseTextConfigParam.__annotations__),
        (ResponsesStreamOptions, params.StreamOptions.__annotations__),
    ],
)
def test_every_field_is_honoured_refused_or_a_no_op(model, openai_fields) -> None:
    policies = field_policy(model)
    unclassified = set(model.model_fields) - set(policies)
    assert not unclassified, f"fields in none of the three lists: {unclassified}"
    missing = set(openai_fields) - set(model.model_fields)
    assert not missing, f"OpenAI fields mlxq does not know (the openai package grew): {missing}"


# -- refusals, decided before a job (the app in this process, no worker) ----------------------


def body(**fields: object) -> dict:
    return {"model": DEMO_MODEL_ID, "input": "hi", **fields}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "param", "needle"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "nothing is stored"),
        ({"conversation": "conv_1"}, "conversation", "nothing is stored"),
        ({"reasoning": {"effort": "low"}}, "reasoning", "chat_template_kwargs"),
        ({"include": ["message.output_text.logprobs"]}, "include", "include"),
        ({"background": True}, "background", "background"),
        ({"top_logprobs": 3}, "top_logprobs", "logprobs"),
        ({"text": {"verbosity": "low"}}, "text.verbosity", "verbosity"),
        ({"tools": [{"type": "web_search"}]}, "tools", "'web_search'"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice", "'web_search'"),
        ({"tool_choice": "required"}, None, "not in tools"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input", "'item_reference'"),
        ({"input": []}, "input", "empty"),
        ({"input": None}, "input", "a string or a list"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.list.0.message.content",
            "'input_image'",
        ),
        ({"max_output_tokens": 10**9}, None, "max_output_tokens"),
        ({"temperature": "1"}, "temperature", "valid number"),
        ({"frequency_penalty": 1.0}, "frequency_penalty", "Extra inputs"),
    ],
)
async def test_refusals_are_400s_that_name_the_field(api_client, fields, param, needle) -> None:
    response = await api_client.post(RESPONSES, json=body(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert needle in error["message"]


@pytest.mark.anyio
async def test_no_op_and_neutral_fields_are_accepted(api_client) -> None:
    """Accepted: the request waits for a worker (there is none here: 503 after 1 s)."""
    fields = {
        "store": True,
        "metadata": {"team": "a"},
        "user": "u",
        "service_tier": "auto",
        "truncation": "auto",
        "safety_identifier": "s",
        "prompt_cache_key": "k",
        "stream_options": {"include_obfuscation": False},
        "reasoning": {"effort": None},
        "include": [],
        "background": False,
        "previous_response_id": None,
        "text": {"format": {"type": "text"}},
    }
    response = await api_client.post(RESPONSES, json=body(**fields))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "no_worker"


# -- the Response and its events, validated by the openai package's own models ----------------

STREAM_EVENT: TypeAdapter = TypeAdapter(ResponseStreamEvent)
CALL = ToolCall(id="call_1", function=FunctionCall(name="f", arguments='{"a": 1}'))


def replay(pieces: list[TokenEvent], done: DoneEvent) -> tuple[list, dict]:
    """The stream of a job's events as the SDK validates it, and the non-streamed answer."""
    request = ResponseRequest.model_validate(body(tools=[{"type": "function", "name": "f"}]))
    shape = ResponseShape(request, "r1")
    events = ResponseEvents(shape)
    frames = list(events.opening())
    for piece in pieces:
        frames += events.token(piece)
    frames += events.done(done)
    frames += events.error(JobTimedOut("too late"))
    parsed = []
    for frame in frames:
        name, data = frame.rstrip("\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        parsed.append(STREAM_EVENT.validate_python(payload))
    answer = shape.answer(done)
    Response.model_validate(answer)
    return parsed, answer


def test_reasoning_text_and_a_tool_call_stream_as_three_items() -> None:
    pieces = [
        TokenEvent(seq=1, text="Let me", channel="reasoning"),
        TokenEvent(seq=2, text=" think", channel="reasoning"),
        TokenEvent(seq=3, text="Hello"),
        TokenEvent(seq=4, text=" world"),
        TokenEvent(seq=5, text="", tool_calls=[CALL]),
    ]
    choice = Choice(
        index=0,
        text="Hello world",
        reasoning="Let me think",
        tool_calls=[CALL],
        finish_reason="tool_calls",
        completion_tokens=9,
    )
    events, answer = replay(pieces, DoneEvent(seq=6, choices=[choice], prompt_tokens=5))
    item = ["response.output_item.added", "response.content_part.added"]
    close = ["response.content_part.done", "response.output_item.done"]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        *item,
        *["response.reasoning_text.delta"] * 2,
        "response.reasoning_text.done",
        *close,
        *item,
        *["response.output_text.delta"] * 2,
        "response.output_text.done",
        *close,
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
        "error",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-2].response
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output_text == "Hello world" and final.output[2].call_id == "call_1"
    assert [item["type"] for item in answer["output"]] == ["reasoning", "message", "function_call"]
    assert answer["output"][0]["content"] == [{"type": "reasoning_text", "text": "Let me think"}]
    assert events[-1].code == "timeout" and events[-1].message == "too late"


def test_text_decided_only_at_the_end_is_streamed_before_the_response_ends() -> None:
    """A forced tool call cut short by max_output_tokens comes back as text, whole, at the
    end (the worker streams nothing of it)."""
    cut = '{"name": "f", "argu'
    choice = Choice(index=0, text=cut, finish_reason="length", completion_tokens=8)
    events, answer = replay([], DoneEvent(seq=1, choices=[choice], prompt_tokens=5))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == [cut]
    final = events[-2]
    assert final.type == "response.incomplete" and final.response.output[0].status == "incomplete"
    assert final.response.incomplete_details.reason == "max_output_tokens"
    assert answer["status"] == "incomplete" and answer["output"][0]["status"] == "incomplete"


# -- the stream's events, with a test engine (no model) ---------------------------------------


def test_stream_events_in_order_and_an_error_after_the_stream_began(
    make_fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLXQ_TEST_STEP_S", "0.05")  # read by the slow engine
    with make_fleet(engine=SLOW_ENGINE) as fleet:  # the API and a worker on threads
        check_stream_events(openai.OpenAI(base_url=f"{fleet.api}/v1", api_key="-", max_retries=0))


def check_stream_events(client: openai.OpenAI) -> None:

    events = list(
        client.responses.create(model=DEMO_MODEL_ID, input="hi", max_output_tokens=3, stream=True)
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",  # as OpenAI: max_output_tokens cut it short
    ]
    final = events[-1].response
    assert final.output_text == "w0 w1 w2" == events[7].text
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "w0 w1 w2"
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 3 and final.id == events[0].response.id
    assert events[-2].item.id == events[2].item.id == final.output[0].id

    cut = list(
        client.responses.create(
            model=DEMO_MODEL_ID, input="hi", stream=True, extra_body={"timeout": 0.5}
        )
    )
    assert cut[0].type == "response.created" and "response.output_text.delta" in {
        e.type for e in cut
    }
    assert cut[-1].type == "error" and cut[-1].code == "timeout", cut[-1]
    assert cut[-1].sequence_number == len(cut) - 1


# -- the real demo model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(model_service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused", max_retries=0)


def create(client: openai.OpenAI, **options):
    options.setdefault("input", "What is the capital of France?")
    options.setdefault("temperature", 0)
    options.setdefault("max_output_tokens", 12)
    return client.responses.create(model=DEMO_MODEL_ID, **options)


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.mark.e2e
def test_a_response_and_its_stream(client) -> None:
    response = create(client, instructions="Answer in one short sentence.")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text.strip()
    usage = response.usage
    assert usage.input_tokens > 5 and 0 < usage.output_tokens <= 12
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert response.status == ("incomplete" if usage.output_tokens == 12 else "completed")
    assert response.model_extra["store"] is False and response.temperature == 0
    (message,) = response.output
    assert message.type == "message" and message.id.startswith("msg_")

    events = list(create(client, instructions="Answer in one short sentence.", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == response.output_text and len(deltas) > 1
    assert events[-1].type == f"response.{response.status}"
    assert events[-1].response.output_text == response.output_text


@pytest.mark.e2e
def test_a_list_input_with_an_earlier_answer(client) -> None:
    first = create(client, input=[{"role": "user", "content": "Name a colour."}])
    history = [
        {"role": "user", "content": "Name a colour."},
        *first.output,  # sent back as the client gives it (output items)
        {"role": "user", "content": [{"type": "input_text", "text": "And another one?"}]},
    ]
    second = create(client, input=history)
    assert second.output_text.strip()
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens


@pytest.mark.e2e
def test_json_schema_output_parses_and_follows_the_schema(client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "population_millions": {"type": "integer", "minimum": 0, "maximum": 50},
        },
        "required": ["city", "population_millions"],
        "additionalProperties": False,
    }
    response = create(
        client,
        input="Describe Paris.",
        max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    city = json.loads(response.output_text)
    assert set(city) == {"city", "population_millions"} and isinstance(city["city"], str)
    assert 0 <= city["population_millions"] <= 50


@pytest.mark.e2e
def test_a_required_function_call_and_its_output(client) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = create(client, input=ask, tools=[WEATHER], tool_choice="required", max_output_tokens=60)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    arguments = json.loads(call.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
    assert first.status == "completed" and first.tool_choice == "required"

    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}
    second = create(client, input=[*ask, *first.output, result], tools=[WEATHER])
    assert second.status in ("completed", "incomplete") and second.output
    assert second.usage.input_tokens > first.usage.input_tokens


@pytest.mark.e2e
def test_previous_response_id_is_refused_by_name(client, model_service: Service) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        create(client, previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"
    assert "previous_response_id" in refused.value.message
    # and the shape of an ordinary refusal, through plain HTTP
    response = httpx.post(
        f"{model_service.base_url}{RESPONSES}", json=body(tools=[{"type": "file_search"}])
    )
    assert response.status_code == 400 and "file_search" in response.json()["error"]["message"]
