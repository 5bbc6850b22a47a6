"""Ollama's API (/api/*): the translation onto mlxq's requests, in this process, and the
official ``ollama`` client against a real API and worker with the demo model (e2e)."""

import json
import time
from typing import Literal

import httpx
import ollama
import pytest
import redis
from ollama import _types as ollama_types
from pydantic import BaseModel, ValidationError

from api.core.models import model_id
from api.dialects.ollama.options import (
    HONOURED_OPTIONS,
    NO_OP_OPTIONS,
    NO_OP_TYPES,
    OLLAMA_DEFAULTS,
    OllamaOptions,
)
from api.dialects.ollama.render import ChatShape, Clock, in_ollama_terms
from api.dialects.ollama.schemas import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaMessageIn,
)
from api.dialects.ollama.translate import chat_messages, sampling
from shared import protocol
from shared.schemas import Choice, DoneEvent, FunctionCall, ToolCall
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 12}


# -- every field the official client sends is known --------------------------------------------


def test_every_option_of_the_ollama_client_is_honoured_or_a_documented_no_op() -> None:
    client_options = set(ollama.Options.model_fields)
    assert client_options <= set(HONOURED_OPTIONS) | set(NO_OP_OPTIONS)
    assert not set(HONOURED_OPTIONS) & set(NO_OP_OPTIONS)
    assert all(reason for reason in NO_OP_OPTIONS.values())


def test_every_no_op_option_takes_the_type_the_ollama_client_gives_it() -> None:
    assert set(NO_OP_TYPES) == set(NO_OP_OPTIONS)
    for name, kind in NO_OP_TYPES.items():
        annotation = str(ollama.Options.model_fields[name].annotation)
        assert kind.__name__ in annotation, (name, annotation)


@pytest.mark.parametrize(
    "options",
    [
        {"num_ctx": float("nan")},
        {"num_ctx": float("inf")},
        {"num_ctx": "4096"},
        {"num_ctx": True},
        {"mirostat_tau": float("nan")},
        {"use_mmap": 1},
    ],
)
def test_a_no_op_option_with_a_value_it_cannot_mean_is_refused(options: dict) -> None:
    """Before: ``options.num_ctx: NaN`` or ``Infinity`` was accepted (a 200)."""
    name = next(iter(options))
    with pytest.raises(ValidationError, match=name):
        OllamaOptions.model_validate(options)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (OllamaChatRequest, ollama_types.ChatRequest),
        (OllamaGenerateRequest, ollama_types.GenerateRequest),
        (OllamaMessageIn, ollama_types.Message),
    ],
)
def test_every_request_field_of_the_ollama_client_is_known(ours, theirs) -> None:
    assert set(theirs.model_fields) <= set(ours.model_fields)


# -- the translation -------------------------------------------------------------------------


def test_options_map_onto_sampling_with_ollamas_defaults() -> None:
    defaults = sampling(OllamaOptions())
    assert defaults.temperature == OLLAMA_DEFAULTS["temperature"]
    assert (defaults.top_k, defaults.top_p) == (OLLAMA_DEFAULTS["top_k"], OLLAMA_DEFAULTS["top_p"])
    assert defaults.repetition_penalty == OLLAMA_DEFAULTS["repeat_penalty"]
    assert defaults.seed is None
    options = OllamaOptions.model_validate(
        {
            "temperature": 0,
            "top_k": 5,
            "min_p": 0.1,
            "seed": 7,
            "repeat_penalty": 1.0,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "stop": "\n",
            "num_ctx": 8192,  # a no-op: accepted, dropped
            "mirostat": 2,
        }
    )
    params = sampling(options)
    assert (params.temperature, params.top_k, params.min_p, params.seed) == (0, 5, 0.1, 7)
    assert (params.repetition_penalty, params.presence_penalty) == (1.0, 0.5)
    assert params.frequency_penalty == -0.5 and options.stops == ["\n"]
    assert sampling(OllamaOptions(top_p=0.0, temperature=1.0)).temperature == 0.0  # greedy
    assert sampling(OllamaOptions(seed=-1)).seed is None  # Ollama's "random"
    for unlimited in (None, -1, -2):
        assert OllamaOptions(num_predict=unlimited).max_tokens is None
    assert OllamaOptions(num_predict=12).max_tokens == 12


def test_history_tool_calls_get_stable_ids_that_tool_messages_answer() -> None:
    history = [
        OllamaMessageIn.model_validate(m)
        for m in [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {}}},
                ],
            },
            {"role": "tool", "tool_name": "get_time", "content": "noon"},
            {"role": "tool", "content": "21 C"},  # no name: the next open call
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
                ],
            },
            {"role": "tool", "tool_name": "get_weather", "content": "25 C"},
        ]
    ]
    messages = chat_messages(history)
    calls = messages[1].tool_calls
    assert calls is not None and [c.id for c in calls] == ["call_0", "call_1"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert messages[1].content == ""
    assert [m.tool_call_id for m in messages[2:4]] == ["call_1", "call_0"]
    assert messages[4].tool_calls is not None and messages[4].tool_calls[0].id == "call_2"
    assert messages[5].tool_call_id == "call_2"
    assert chat_messages(history) == messages  # stable: the same ids every turn


def test_tool_calls_come_back_with_arguments_as_objects() -> None:
    call = ToolCall(id="x", function=FunctionCall(name="get_weather", arguments='{"city": "Oslo"}'))
    choice = Choice(
        index=0, text="", finish_reason="tool_calls", completion_tokens=9, tool_calls=[call]
    )
    done = DoneEvent(seq=3, choices=[choice], prompt_tokens=20)
    answer = ChatShape("m:latest").final(done, Clock(time.perf_counter_ns()), whole=True)
    assert answer["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    ]
    assert answer["done"] is True and answer["done_reason"] == "stop"
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (20, 9)
    assert answer["total_duration"] >= answer["eval_duration"] >= 0


def test_worker_refusals_name_fields_in_ollamas_words() -> None:
    refusal = "max_tokens=9000 does not fit, so max_tokens can be at most 8"
    assert (
        in_ollama_terms(refusal) == "num_predict=9000 does not fit, so num_predict can be at most 8"
    )
    untouched = "The prompt fills the context window."
    assert in_ollama_terms(untouched) == untouched


def test_model_names_may_carry_the_latest_tag() -> None:
    assert model_id(f"{DEMO_MODEL_ID}:latest") == DEMO_MODEL_ID
    assert model_id(DEMO_MODEL_ID) == DEMO_MODEL_ID


# -- the edge, in this process (no worker) ---------------------------------------------------


def ollama_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.mark.anyio
async def test_version_tags_and_show_describe_the_default_model(api_client) -> None:
    assert (await api_client.get("/api/version")).json() == {"version": "0.14.0"}
    entry, alias = (await api_client.get("/api/tags")).json()["models"]
    assert entry["name"] == entry["model"] == f"{DEMO_MODEL_ID}:latest"
    assert alias["name"] == f"{DEMO_MODEL_ID.rsplit('/', 1)[1]}:latest"  # the short alias
    assert alias["digest"] == entry["digest"]
    assert entry["details"]["format"] == "mlx" and entry["size"] == 0
    assert entry["details"]["parameter_size"] == "135M"
    assert entry["details"]["quantization_level"] == "Q4_1"
    assert (await api_client.get("/api/ps")).json() == {"models": []}  # no live worker
    shown = await api_client.post("/api/show", json={"model": entry["name"]})
    assert shown.status_code == 200 and "tools" in shown.json()["capabilities"]
    missing = await api_client.post("/api/show", json={"model": "nope:latest"})
    assert "nope" in ollama_error(missing, 404)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "fields", "named"),
    [
        ("/api/chat", {"options": {"num_gqa": 8}}, "num_gqa"),
        ("/api/chat", {"options": {"num_predict": 0}}, "num_predict"),
        ("/api/chat", {"options": {"temperature": 3}}, "temperature"),
        ("/api/chat", {"options": {"stop": ["a", "b", "c", "d", "e"]}}, "stop"),
        ("/api/chat", {"think": True}, "think"),
        ("/api/chat", {"format": "yaml"}, "format"),
        ("/api/chat", {"top_logprobs": 3}, "logprobs"),
        ("/api/chat", {"unknown_field": 1}, "unknown_field"),
        ("/api/generate", {"suffix": "}", "system": "Be brief."}, "system"),
        ("/api/generate", {"images": ["aGk="]}, "images"),
        ("/api/generate", {"context": [1, 2, 3]}, "context"),
        ("/api/generate", {"template": "{{ .Prompt }}"}, "template"),
        ("/api/generate", {"raw": True, "system": "Be brief."}, "system"),
        ("/api/generate", {"options": {"num_predict": 10**9}}, "num_predict"),
    ],
)
async def test_what_cannot_be_honoured_is_a_400_naming_it(api_client, path, fields, named) -> None:
    body = {"model": DEMO_MODEL_ID, **fields}
    body.update({"messages": QUESTION} if path == "/api/chat" else {"prompt": "Hi"})
    assert named in ollama_error(await api_client.post(path, json=body), 400)


@pytest.mark.anyio
async def test_requests_with_nothing_to_answer_and_keep_alive_0_unload_the_model(
    api_client,
) -> None:
    """``ollama stop``'s request: the answer says the model unloads (the workers holding it
    unload it once idle: tests/e2e/test_models_on_demand.py)."""
    for path in ("/api/chat", "/api/generate"):
        response = await api_client.post(path, json={"model": DEMO_MODEL_ID, "keep_alive": 0})
        assert response.status_code == 200
        assert response.json()["done"] is True and response.json()["done_reason"] == "unload"


@pytest.mark.anyio
async def test_an_unload_of_a_model_a_worker_group_holds_is_refused(
    api_client, redis_url: str
) -> None:
    """A worker group keeps its model until it is stopped: ``ollama stop`` is told so, not
    answered "unload", and so is a request to answer, then unload; nothing is asked of the
    fleet."""
    connection = redis.Redis.from_url(redis_url)
    with connection.pipeline() as pipeline:
        stats = protocol.WorkerStats(model=DEMO_MODEL_ID, slots=2, group_ranks=2)
        protocol.add_heartbeat(pipeline, "group-1", stats, 60, [])
        pipeline.execute()
    unload = {"model": DEMO_MODEL_ID, "keep_alive": 0}
    bodies = [
        ("/api/chat", unload),
        ("/api/generate", unload),
        ("/api/chat", {**unload, "messages": QUESTION}),
        ("/api/generate", {**unload, "prompt": "Hi"}),
    ]
    for path, body in bodies:
        message = ollama_error(await api_client.post(path, json=body), 400)
        assert "worker group (group-1, 2 ranks)" in message and "keep_alive 0" in message
    assert not connection.keys("*:unload")  # no unload asked (shared/protocol/model_records.py)


@pytest.mark.anyio
async def test_a_keep_alive_that_is_no_duration_is_a_400_naming_it(api_client) -> None:
    body = {"model": DEMO_MODEL_ID, "messages": QUESTION, "keep_alive": "five minutes"}
    assert "keep_alive" in ollama_error(await api_client.post("/api/chat", json=body), 400)


@pytest.mark.anyio
async def test_pushing_creating_and_copying_models_are_not_served(api_client) -> None:
    for path in ("/api/push", "/api/create", "/api/copy"):
        response = await api_client.post(path, json={"model": DEMO_MODEL_ID})
        assert "pull" in ollama_error(response, 501)


# -- the official client, against the real demo model ---------------------------------------


@pytest.fixture(scope="module")
def client(model_service: Service) -> ollama.Client:
    return ollama.Client(host=model_service.base_url)


@pytest.mark.e2e
def test_list_show_and_ps_name_the_served_model(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert f"{DEMO_MODEL_ID}:latest" in names
    assert f"{DEMO_MODEL_ID}:latest" in [m.model for m in client.ps().models]
    shown = client.show(DEMO_MODEL_ID)
    assert shown.details is not None and shown.details.format == "mlx"
    assert shown.capabilities is not None and "completion" in shown.capabilities


@pytest.mark.e2e
def test_chat_streamed_pieces_make_the_whole_answer(client: ollama.Client) -> None:
    whole = client.chat(model=f"{DEMO_MODEL_ID}:latest", messages=QUESTION, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count and whole.prompt_eval_count and whole.total_duration
    parts = list(client.chat(model=DEMO_MODEL_ID, messages=QUESTION, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count and parts[-1].eval_duration


@pytest.mark.e2e
def test_generate_with_the_template_and_raw(client: ollama.Client) -> None:
    templated = client.generate(
        model=DEMO_MODEL_ID, prompt="What is the capital of France?", options=GREEDY, think=False
    )
    chatted = client.chat(model=DEMO_MODEL_ID, messages=QUESTION, options=GREEDY)
    assert templated.response == chatted.message.content  # the same prompt, templated
    raw = client.generate(
        model=DEMO_MODEL_ID, prompt="The capital of France is", raw=True, options=GREEDY
    )
    assert raw.done and raw.response and raw.response != templated.response


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    sure: bool


@pytest.mark.e2e
def test_format_with_a_json_schema_gives_a_valid_answer(client: ollama.Client) -> None:
    response = client.chat(
        model=DEMO_MODEL_ID,
        messages=[{"role": "user", "content": "Is Paris in France? Answer in JSON."}],
        format=Verdict.model_json_schema(),
        options={"temperature": 0, "num_predict": 24},
    )
    assert response.done_reason == "stop"
    Verdict.model_validate_json(response.message.content or "")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.e2e
def test_a_tool_conversation_is_accepted_and_answered(client: ollama.Client) -> None:
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": '{"temperature": 21}'},
    ]
    response = client.chat(model=DEMO_MODEL_ID, messages=history, tools=[WEATHER], options=GREEDY)
    assert response.done and response.done_reason in ("stop", "length")
    for call in response.message.tool_calls or []:  # the demo model rarely calls again
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    assert response.message.content or response.message.tool_calls


@pytest.mark.e2e
def test_errors_come_back_as_ollama_response_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as embed:  # a chat model computes no embeddings
        client.embed(model=DEMO_MODEL_ID, input="hello")
    assert embed.value.status_code == 400 and "embeddings" in embed.value.error
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model:latest", messages=QUESTION)
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model=DEMO_MODEL_ID, messages=QUESTION, options={"num_gqa": 8})
    assert unknown.value.status_code == 400 and "num_gqa" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as unenforceable:  # refused by the worker
        client.chat(model=DEMO_MODEL_ID, messages=QUESTION, format={"type": "nonsense"})
    assert unenforceable.value.status_code == 400
    assert unenforceable.value.error.startswith("format:")


@pytest.mark.e2e
def test_curl_d_bodies_are_answered(model_service: Service) -> None:
    """``curl http://localhost:11434/api/generate -d '{...}'`` as Ollama's docs write it sends
    ``application/x-www-form-urlencoded``; litellm sends no type at all."""
    body = json.dumps({"model": DEMO_MODEL_ID, "prompt": "Hi", "stream": False, "options": GREEDY})
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        response = httpx.post(
            f"{model_service.base_url}/api/generate", content=body, headers=headers, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["done"] is True and response.json()["response"]


def test_a_keep_alive_beyond_any_date_shows_as_never_expiring() -> None:
    """/api/ps once answered 500 for a model kept 10^16 seconds (schemathesis found it):
    Python cannot write that date."""
    from api.dialects.ollama.catalog import NEVER_EXPIRES, _time

    assert _time(time.time() + 1e16) == NEVER_EXPIRES
    assert _time(0) == "0001-01-01T00:00:00Z"
    assert _time(1_800_000_000).startswith("2027-01-15T")
