"""Bad input, on /ask and on the OpenAI routes: every refusal is a 4xx whose message says what
is wrong (FastAPI's ``{"detail": ...}`` on /ask, OpenAI's ``{"error": {...}}`` on /v1), nothing
refused is enqueued, and a good request still answers 200 afterwards.

Two APIs (one with a small body limit) served by uvicorn on threads of this process, and
echo workers on threads (tests/support/fleet.py), on a Redis database of their own; the
context window is tested with TinyContextEngine (64 words) serving a second model.
"""

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from api.core.validators import MAX_MESSAGES
from shared.settings import DEMO_MODEL_ID
from tests.support.fleet import ApiThread, in_process_fleet

CAP = 100
"""MLXQ_MAX_TOKENS_CAP of the APIs here."""
BODY_LIMIT = 2048
"""MLXQ_MAX_BODY_BYTES of the small-body API."""
TINY_MODEL = "tiny-context"
"""Served by a TinyContextEngine worker: a 64-word context window."""
DB = 4
"""The Redis database of this module (other tests flush database 0)."""

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


class Service:
    def __init__(self, api: str, small_api: str, redis_url: str) -> None:
        self.api = api
        self.small_api = small_api
        self.redis = redis.Redis.from_url(redis_url)

    def jobs(self) -> int:
        """RQ jobs ever enqueued that Redis still holds (results are kept MLXQ_RESULT_TTL)."""
        return len(self.redis.keys("rq:job:*"))


@pytest.fixture(scope="module")
def service(redis_server: str) -> Iterator[Service]:
    redis_url = f"{redis_server.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(redis_url).flushdb()
    tiny = "tests.support.engines:TinyContextEngine"
    with in_process_fleet(redis_url, max_tokens_cap=CAP, queue_timeout=5) as fleet:
        fleet.worker(engine=tiny, model=TINY_MODEL)
        small_api = ApiThread(fleet.settings.model_copy(update={"max_body_bytes": BODY_LIMIT}))
        small_api.start()
        try:
            yield Service(fleet.api, small_api.base_url, redis_url)
        finally:
            small_api.stop()
    redis.Redis.from_url(redis_url).flushdb()


def good_request(base_url: str, path: str) -> httpx.Response:
    if path == "/ask":
        body: dict = {"question": "still here", "max_tokens": 5}
    elif path == CHAT:
        body = {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "still here"}]}
    else:
        body = {"model": DEMO_MODEL_ID, "prompt": "still here"}
    return httpx.post(f"{base_url}{path}", json=body, timeout=30)


def assert_refused(
    service: Service, response: httpx.Response, path: str, status: int, *needles: str
) -> dict:
    """The refusal's status and shape, each needle in its message; then nothing was enqueued
    for it, and a good request on the same route still answers."""
    assert response.status_code == status, response.text
    body = response.json()
    if path.startswith("/v1/"):
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
    else:
        assert set(body) <= {"detail", "code"}, body
        message = json.dumps(body["detail"])
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return body


@pytest.fixture
def check(service: Service) -> Iterator:
    """``check(response, path, status, *needles)``; at the end of the test, no job was
    enqueued by the refused requests and every route still answers a good request."""
    before = service.jobs()
    paths: set[str] = set()

    def check(response: httpx.Response, path: str, status: int, *needles: str) -> dict:
        paths.add(path)
        return assert_refused(service, response, path, status, *needles)

    yield check
    assert service.jobs() == before, "a refused request was enqueued"
    for path in sorted(paths):
        for base_url in (service.api, service.small_api):
            response = good_request(base_url, path)
            assert response.status_code == 200, response.text


def post(base_url: str, path: str, body: object) -> httpx.Response:
    # json.dumps escapes non-ASCII: a lone surrogate goes out as its \\u escape
    return post_raw(base_url, path, json.dumps(body).encode())


def post_raw(base_url: str, path: str, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(f"{base_url}{path}", content=content, headers=headers, timeout=30)


def chat(**fields: object) -> dict:
    return {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], **fields}


def completion(**fields: object) -> dict:
    return {"model": DEMO_MODEL_ID, "prompt": "hi", **fields}


# -- /ask ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"question": ""}, ["question", "at least 1 character"]),
        ({"question": "   \n\t "}, ["question", "must not be blank"]),
        ({}, ["question", "Field required"]),
        ({"max_tokens": 5}, ["question", "Field required"]),
        ({"question": 42}, ["question", "valid string"]),
        ({"question": None}, ["question", "valid string"]),
        ({"question": {"text": "hi"}}, ["question", "valid string"]),
        ({"question": "hi", "max_tokens": "many"}, ["max_tokens", "valid integer"]),
        ({"question": "hi", "max_tokens": 2.5}, ["max_tokens", "valid integer"]),
        ({"question": "hi", "max_tokens": True}, ["max_tokens", "valid integer"]),
        ({"question": "hi", "max_tokens": "5"}, ["max_tokens", "valid integer"]),
        ({"question": "hi", "stream": 1}, ["stream", "valid boolean"]),
        ({"question": "hi", "max_tokens": 0}, ["max_tokens", "greater than or equal to 1"]),
        ({"question": "hi", "max_tokens": -7}, ["max_tokens", "greater than or equal to 1"]),
        ({"question": "hi", "stream": [True]}, ["stream", "valid boolean"]),
        ({"question": "hi", "timeout": 0}, ["timeout", "greater than 0"]),
        ({"question": "hi", "timeout": "soon"}, ["timeout", "valid number"]),
        ({"question": "hi", "temperature": 0.5}, ["temperature", "Extra inputs are not permitted"]),
        ({"question": "hi", "prompt": "x"}, ["prompt", "Extra inputs are not permitted"]),
        (["question"], ["valid dictionary"]),
        ("question", ["valid dictionary"]),
    ],
)
def test_ask_refuses_invalid_bodies_with_the_reason(
    service: Service, check, body: object, needles: list[str]
) -> None:
    check(post(service.api, "/ask", body), "/ask", 422, *needles)


def test_ask_refuses_invalid_json(service: Service, check) -> None:
    for raw in (b'{"question": ', b"question=hi", b'{"question": "hi",}'):
        check(post_raw(service.api, "/ask", raw), "/ask", 422, "JSON decode error")


def test_ask_refuses_a_body_that_is_not_utf8(service: Service, check) -> None:
    response = post_raw(service.api, "/ask", b'{"question": "\xff\xfe"}')
    body = check(response, "/ask", 400, "not valid UTF-8")
    assert body["code"] == "invalid_request"


def test_ask_refuses_an_unpaired_surrogate(service: Service, check) -> None:
    """A JSON ``\\ud800`` escape alone is no Unicode text; it was a 500 (the 422 body that
    echoed it could not be encoded)."""
    response = post_raw(service.api, "/ask", b'{"question": "\\ud800 hi"}')
    check(response, "/ask", 422, "question", "unicode")


def test_ask_refuses_max_tokens_above_the_cap(service: Service, check) -> None:
    for max_tokens in (CAP + 1, 10**12):
        response = post(service.api, "/ask", {"question": "hi", "max_tokens": max_tokens})
        body = check(response, "/ask", 400, f"max_tokens={max_tokens}", f"limit of {CAP}")
        assert body["code"] == "invalid_request"


# -- /v1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "needles"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", ["Field required"]),
        ({"model": DEMO_MODEL_ID}, "messages", ["Field required"]),
        (chat(model=""), "model", ["at least 1 character"]),
        (chat(model=5), "model", ["valid string"]),
        (chat(messages=[]), "messages", ["at least 1 item"]),
        (chat(messages="hi"), "messages", ["valid list"]),
        (chat(messages=[{"content": "hi"}]), "messages.0.role", ["Field required"]),
        (chat(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role", ["'user'"]),
        (chat(messages=[{"role": "user", "content": 5}]), "messages.0.content", ["valid"]),
        (
            chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages.0.content",
            ["'text'"],
        ),
        (chat(max_tokens=0), "max_tokens", ["greater than or equal to 1"]),
        (chat(max_tokens=-1), "max_tokens", ["greater than or equal to 1"]),
        (chat(max_tokens="lots"), "max_tokens", ["valid integer"]),
        (chat(max_tokens=True), "max_tokens", ["valid integer"]),
        (chat(max_tokens="64"), "max_tokens", ["valid integer"]),
        (chat(temperature="0.5"), "temperature", ["valid number"]),
        (chat(max_completion_tokens=0), "max_completion_tokens", ["greater than or equal to 1"]),
        (chat(temperature=-1), "temperature", ["greater than or equal to 0"]),
        (chat(temperature=3), "temperature", ["less than or equal to 2"]),
        (chat(temperature="hot"), "temperature", ["valid number"]),
        (chat(top_p=1.5), "top_p", ["less than or equal to 1"]),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop", ["at most 4 stop sequences"]),
        (chat(stop=[""]), "stop", ["must not be empty"]),
        (chat(stop=5), "stop", ["valid"]),
        (chat(n=17), "n", ["less than or equal to 16"]),
        (chat(top_logprobs=3), None, ["top_logprobs needs logprobs"]),
        (chat(logprobs=True, top_logprobs=21), "top_logprobs", ["less than or equal to 20"]),
        (chat(presence_penalty=3.0), "presence_penalty", ["less than or equal to 2"]),
        (chat(frequency_penalty=-2.5), "frequency_penalty", ["greater than or equal to -2"]),
        (chat(logit_bias={"x": 1}), "logit_bias", ["token ids"]),
        (chat(logit_bias={"5": 101}), "logit_bias", ["between -100 and 100"]),
        (chat(top_k=-1), "top_k", ["greater than or equal to 0"]),
        (chat(min_p=2), "min_p", ["less than or equal to 1"]),
        (chat(audio={"voice": "x"}), "audio", ["audio output is not supported"]),
        (chat(modalities=["text", "audio"]), "modalities", ['only ["text"]']),
        (chat(reasoning_effort="low"), "reasoning_effort", ["chat_template_kwargs"]),
        (chat(functions=[{"name": "f"}]), "functions", ["use tools"]),
        (chat(mirostat=2), "mirostat", ["Extra inputs are not permitted"]),
        (chat(response_format={"type": "json_schema"}), None, ["json_schema.schema"]),
        (chat(stream="sometimes"), "stream", ["valid boolean"]),
        (chat(seed="x"), "seed", ["valid integer"]),
        (chat(seed=-2), "seed", ["greater than or equal to -1"]),  # -1: a random seed
        (chat(seed=2**64), "seed", ["less than or equal to 18446744073709551615"]),
        (chat(timeout=0), "timeout", ["greater than 0"]),
        (chat(tool_choice="required"), None, ["not in tools"]),
        (
            chat(
                tools=[{"type": "function", "function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "g"}},
            ),
            None,
            ["not in tools"],
        ),
        (chat(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools", ["match"]),
        (chat(chat_template_kwargs={"x": [1]}), "chat_template_kwargs.x", ["valid"]),
        (
            chat(messages=[{"role": "user", "content": "\ud800"}]),
            None,
            ["unpaired surrogate"],
        ),
    ],
)
def test_chat_refuses_invalid_bodies_with_the_reason(
    service: Service, check, body: dict, param: str | None, needles: list[str]
) -> None:
    error = check(post(service.api, CHAT, body), CHAT, 400, *needles)["error"]
    assert error["code"] == "invalid_request"
    if param is not None:  # a union's member may follow: "messages.0.content.str"
        assert error["param"].startswith(param), error
        assert param in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "needles"),
    [
        ({"model": DEMO_MODEL_ID}, "prompt", ["Field required"]),
        ({"prompt": "hi"}, "model", ["Field required"]),
        (completion(prompt=5), "prompt", ["valid"]),
        (completion(prompt=[]), "prompt", ["must not be an empty list"]),
        (completion(prompt=["a"] * 17), "prompt", ["at most 16 prompts"]),
        (completion(max_tokens=0), None, ["max_tokens: 0 generates nothing"]),
        (completion(max_tokens=-1), "max_tokens", ["greater than or equal to 0"]),
        (completion(temperature=-1), "temperature", ["greater than or equal to 0"]),
        (completion(temperature=3), "temperature", ["less than or equal to 2"]),
        (completion(top_p=1.5), "top_p", ["less than or equal to 1"]),
        (completion(stop=["a", "b", "c", "d", "e"]), "stop", ["at most 4 stop sequences"]),
        (completion(n=17), "n", ["less than or equal to 16"]),
        (completion(logprobs=6), "logprobs", ["less than or equal to 5"]),
        (completion(echo=True, suffix="end"), None, ["suffix", "no echo"]),
        (completion(prompt=[1, 2], suffix="end"), None, ["suffix", "text prompts"]),
        (completion(best_of=3), None, ["best_of"]),
        (completion(prompt="\udfff"), None, ["unpaired surrogate"]),
    ],
)
def test_completions_refuse_invalid_bodies_with_the_reason(
    service: Service, check, body: dict, param: str | None, needles: list[str]
) -> None:
    error = check(post(service.api, COMPLETIONS, body), COMPLETIONS, 400, *needles)["error"]
    assert error["code"] == "invalid_request"
    if param is not None:
        assert error["param"].startswith(param), error


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_v1_refuses_invalid_json_and_non_objects(service: Service, check, path: str) -> None:
    for raw in (b'{"model": ', b"model=x", b"\x00"):
        check(post_raw(service.api, path, raw), path, 400, "JSON decode error")
    check(post(service.api, path, ["model"]), path, 400, "valid dictionary")
    check(post_raw(service.api, path, b'{"model": "\xff\xfe"}'), path, 400, "not valid UTF-8")


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_v1_refuses_max_tokens_above_the_cap(service: Service, check, path: str) -> None:
    body = chat(max_tokens=CAP + 1) if path == CHAT else completion(max_tokens=CAP + 1)
    check(post(service.api, path, body), path, 400, f"max_tokens={CAP + 1}", f"limit of {CAP}")
    if path == CHAT:
        body = chat(max_completion_tokens=10**9)
        check(post(service.api, path, body), path, 400, "limit of")


def test_chat_refuses_too_many_messages(service: Service, check) -> None:
    messages = [{"role": "user", "content": "m"}] * (MAX_MESSAGES + 1)
    error = check(post(service.api, CHAT, chat(messages=messages)), CHAT, 400)["error"]
    assert error["param"] == "messages"
    assert f"at most {MAX_MESSAGES} items" in error["message"]


def test_as_many_messages_as_the_bound_are_accepted(service: Service) -> None:
    messages = [{"role": "user", "content": "m"}] * MAX_MESSAGES
    assert post(service.api, CHAT, chat(messages=messages)).status_code == 200


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_v1_refuses_an_unknown_model_with_404(service: Service, check, path: str) -> None:
    body = chat(model="no-such-model") if path == CHAT else completion(model="no-such-model")
    error = check(post(service.api, path, body), path, 404, "no-such-model", DEMO_MODEL_ID)
    assert error["error"]["code"] == "model_not_found"
    assert error["error"]["param"] == "model"


# -- the context window ------------------------------------------------------------------------


def test_a_prompt_longer_than_the_context_is_refused(service: Service) -> None:
    long_text = " ".join(f"w{i}" for i in range(80))  # 80 words, the window is 64
    for path, body in [
        (CHAT, {"model": TINY_MODEL, "messages": [{"role": "user", "content": long_text}]}),
        (COMPLETIONS, {"model": TINY_MODEL, "prompt": long_text}),
    ]:
        response = post(service.api, path, body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert "80 tokens" in error["message"] and "64" in error["message"]
        assert post(service.api, path, {**body, "stream": True}).status_code == 400


def test_max_tokens_that_does_not_fit_beside_the_prompt_is_refused_with_the_limit(
    service: Service,
) -> None:
    prompt = " ".join(f"w{i}" for i in range(60))  # room for 4 more
    body = {"model": TINY_MODEL, "prompt": prompt, "max_tokens": 10}
    response = post(service.api, COMPLETIONS, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "max_tokens can be at most 4" in error["message"]
    fitting = post(service.api, COMPLETIONS, {**body, "max_tokens": 4})
    assert fitting.status_code == 200, fitting.text
    assert fitting.json()["choices"][0]["text"] == "w0 w1 w2 w3"


# -- oversized bodies --------------------------------------------------------------------------


def _oversized(path: str) -> bytes:
    filler = "x " * 5000  # 10 kB
    if path == "/ask":
        return json.dumps({"question": filler}).encode()
    if path == CHAT:
        return json.dumps(chat(messages=[{"role": "user", "content": filler}])).encode()
    return json.dumps(completion(prompt=filler)).encode()


def _assert_too_large(response: httpx.Response, path: str) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    if path == "/ask":
        assert body["code"] == "payload_too_large"
        message = body["detail"]
    else:
        assert body["error"]["code"] == "payload_too_large"
        message = body["error"]["message"]
    assert str(BODY_LIMIT) in message and "MLXQ_MAX_BODY_BYTES" in message


@pytest.mark.parametrize("path", ["/ask", CHAT, COMPLETIONS])
def test_an_oversized_body_with_content_length_gets_413(service: Service, check, path: str) -> None:
    content = _oversized(path)
    assert len(content) > 10_000
    response = httpx.post(
        f"{service.small_api}{path}",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.request.headers["content-length"] == str(len(content))
    _assert_too_large(response, path)
    check(response, path, 413)


@pytest.mark.parametrize("path", ["/ask", CHAT, COMPLETIONS])
def test_an_oversized_chunked_body_gets_413(service: Service, check, path: str) -> None:
    content = _oversized(path)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 1000):
            yield content[start : start + 1000]

    response = httpx.post(
        f"{service.small_api}{path}",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    _assert_too_large(response, path)
    check(response, path, 413)


def test_a_body_under_the_limit_is_served(service: Service) -> None:
    question = " ".join(["word"] * 300)  # about 1.5 kB
    response = post(service.small_api, "/ask", {"question": question})
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == question
