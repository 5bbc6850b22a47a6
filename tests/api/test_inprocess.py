"""The API's edge, in this process (tests/support/app.py): the app from ``create_app`` on the
test's real Redis, inside its lifespan, with no worker. Everything here is decided before a
job would run, so each test takes milliseconds; answers that need a worker are covered by
the process-level tests (tests/faults, tests/e2e)."""

import time

import httpx
import pytest
import redis

from shared import protocol
from shared.keys import queue_name_for_model
from shared.rq_bridge import queue_key
from shared.settings import DEMO_MODEL_ID

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
KEY = "in-process-key-0123"


def chat(**fields: object) -> dict:
    return {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], **fields}


def completion(**fields: object) -> dict:
    return {"model": DEMO_MODEL_ID, "prompt": "hi", **fields}


def openai_error(response: httpx.Response, status: int) -> dict:
    """The OpenAI error object of a response, after checking its status and exact shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return body["error"]


def no_jobs_left(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.keys("rq:job:*") == []
    assert all(client.llen(key) == 0 for key in client.keys("rq:queue:*"))


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "needle"),
    [
        ({}, ["body", "question"], "Field required"),
        ({"question": ""}, ["body", "question"], "at least 1 character"),
        ({"question": " \n"}, ["body", "question"], "must not be blank"),
        ({"question": "hi", "max_tokens": 0}, ["body", "max_tokens"], "greater than or equal"),
        ({"question": "hi", "max_tokens": "5"}, ["body", "max_tokens"], "valid integer"),
        ({"question": "hi", "temperature": 1}, ["body", "temperature"], "Extra inputs"),
        (["question"], ["body"], "valid dictionary"),
    ],
)
async def test_ask_refuses_invalid_bodies_with_fastapis_422(
    api_client: httpx.AsyncClient, redis_url: str, body: object, loc: list[str], needle: str
) -> None:
    response = await api_client.post("/ask", json=body)
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert set(response.json()) == {"detail"}
    assert problem["loc"] == loc
    assert needle in problem["msg"]
    no_jobs_left(redis_url)


async def test_ask_refuses_invalid_json_with_a_422(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        "/ask", content=b'{"question": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_ask_refuses_max_tokens_above_the_cap_with_mlxqs_400(make_api) -> None:
    async with make_api(max_tokens_cap=50) as api:
        response = await api.client.post("/ask", json={"question": "hi", "max_tokens": 51})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "code"} and body["code"] == "invalid_request"
    assert "limit of 50" in body["detail"] and "MLXQ_MAX_TOKENS_CAP" in body["detail"]


@pytest.mark.parametrize(
    ("path", "body", "param", "needle"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "hi"}]}, "model", "Field required"),
        (CHAT, {"model": DEMO_MODEL_ID}, "messages", "Field required"),
        (CHAT, chat(messages=[]), "messages", "at least 1 item"),
        (CHAT, chat(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role", "'user'"),
        (CHAT, chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (CHAT, chat(temperature=3), "temperature", "less than or equal to 2"),
        (CHAT, chat(stop=[""]), "stop", "must not be empty"),
        (COMPLETIONS, {"model": DEMO_MODEL_ID}, "prompt", "Field required"),
        (COMPLETIONS, completion(top_p=1.5), "top_p", "less than or equal to 1"),
        (COMPLETIONS, completion(seed=-2), "seed", "greater than or equal to -1"),
        (COMPLETIONS, completion(max_tokens="64"), "max_tokens", "valid integer"),
    ],
)
async def test_v1_refuses_invalid_bodies_with_openais_400_naming_the_field(
    api_client: httpx.AsyncClient,
    redis_url: str,
    path: str,
    body: dict,
    param: str,
    needle: str,
) -> None:
    error = openai_error(await api_client.post(path, json=body), 400)
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert f"{param}: " in error["message"] and needle in error["message"]
    no_jobs_left(redis_url)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_v1_refuses_invalid_json_with_a_400(api_client: httpx.AsyncClient, path: str) -> None:
    response = await api_client.post(
        path, content=b'{"model": ', headers={"content-type": "application/json"}
    )
    error = openai_error(response, 400)
    assert error["code"] == "invalid_request" and "JSON decode error" in error["message"]


# -- unknown routes and methods --------------------------------------------------------------


async def test_an_unknown_v1_route_is_openais_404(api_client: httpx.AsyncClient) -> None:
    error = openai_error(await api_client.get("/v1/nope"), 404)
    assert error["code"] == "not_found"
    assert error["param"] is None
    assert "/v1/nope" in error["message"]


async def test_a_wrong_method_under_v1_is_openais_405(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get(CHAT)
    error = openai_error(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


async def test_an_unknown_route_outside_v1_keeps_fastapis_404(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


# -- the API key -----------------------------------------------------------------------------


async def test_the_api_key_is_required_everywhere_but_health(make_api) -> None:
    async with make_api(api_key=KEY) as api:
        ask = await api.client.post("/ask", json={"question": "hi"})
        models = await api.client.get("/v1/models")
        wrong = await api.client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        health = await api.client.get("/health")
        allowed = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})

    assert ask.status_code == 401
    assert ask.headers["www-authenticate"] == "Bearer"
    assert set(ask.json()) == {"detail", "code"} and ask.json()["code"] == "unauthorized"
    for refused in (models, wrong):
        error = openai_error(refused, 401)
        assert error["code"] == "unauthorized" and "MLXQ_API_KEY" in error["message"]
        assert refused.headers["www-authenticate"] == "Bearer"
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert allowed.status_code == 200


# -- the body limit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/ask", {"question": "x " * 2000}),
        (CHAT, chat(messages=[{"role": "user", "content": "x " * 2000}])),
        (COMPLETIONS, completion(prompt="x " * 2000)),
    ],
)
async def test_a_body_over_the_limit_is_a_413(
    make_api, redis_url: str, path: str, body: dict
) -> None:
    async with make_api(max_body_bytes=2048) as api:
        response = await api.client.post(path, json=body)
    assert response.status_code == 413, response.text
    if path == "/ask":
        assert response.json()["code"] == "payload_too_large"
        message = response.json()["detail"]
    else:
        error = openai_error(response, 413)
        assert error["code"] == "payload_too_large"
        message = error["message"]
    assert "2048" in message and "MLXQ_MAX_BODY_BYTES" in message
    no_jobs_left(redis_url)


# -- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_an_unknown_model_is_openais_404_at_once(
    api_client: httpx.AsyncClient, redis_url: str, path: str
) -> None:
    body = chat(model="no-such-model") if path == CHAT else completion(model="no-such-model")
    error = openai_error(await api_client.post(path, json=body), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "no-such-model" in error["message"] and DEMO_MODEL_ID in error["message"]
    no_jobs_left(redis_url)


async def test_ask_for_an_unknown_model_is_a_404(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post("/ask", json={"question": "hi", "model": "no-such-model"})
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"


async def test_models_with_no_worker_is_an_empty_list(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": []}


async def test_models_lists_what_heartbeating_workers_serve(
    api_client: httpx.AsyncClient, redis_url: str
) -> None:
    """A worker is its heartbeat: two written by hand serve one model."""
    client = redis.Redis.from_url(redis_url)
    with client.pipeline() as pipeline:
        for name in ("fake-1", "fake-2"):
            stats = protocol.WorkerStats(model="model-h", queues=["q"], slots=2)
            protocol.add_heartbeat(pipeline, name, stats, ttl_s=60, running=[])
        pipeline.execute()
    response = await api_client.get("/v1/models")
    (model,) = response.json()["data"]
    assert model["id"] == "model-h" and model["workers"] == 2 and model["object"] == "model"


# -- health ----------------------------------------------------------------------------------


async def test_health_is_up_and_ready_says_why_not(api_client: httpx.AsyncClient) -> None:
    health = await api_client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await api_client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready" and "No live worker" in ready.json()["reason"]


# -- the OpenAPI schema ----------------------------------------------------------------------


async def test_the_schema_documents_no_422_on_v1(api_client: httpx.AsyncClient) -> None:
    schema = (await api_client.get("/openapi.json")).json()
    v1 = {path: ops for path, ops in schema["paths"].items() if path.startswith("/v1/")}
    assert {CHAT, COMPLETIONS, "/v1/models"} <= set(v1)
    for path, operations in v1.items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    assert "400" in v1[CHAT]["post"]["responses"]
    assert "422" in schema["paths"]["/ask"]["post"]["responses"]  # /ask keeps FastAPI's 422


# -- no worker -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ask", CHAT])
async def test_no_worker_is_a_503_after_the_queue_timeout_and_the_job_is_withdrawn(
    make_api, redis_url: str, path: str
) -> None:
    body = {"question": "anyone?"} if path == "/ask" else chat()
    async with make_api(queue_timeout=0.5) as api:
        started = time.monotonic()
        response = await api.client.post(path, json=body)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    assert response.status_code == 503, response.text
    if path == "/ask":
        body = response.json()
        assert set(body) == {"detail", "code"} and body["code"] == "no_worker"
        message = body["detail"]
    else:
        error = openai_error(response, 503)
        assert error["code"] == "no_worker"
        message = error["message"]
    assert "No worker took the request within 0.5 s" in message and DEMO_MODEL_ID in message
    no_jobs_left(redis_url)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(queue_key(queue_name_for_model(DEMO_MODEL_ID))) == 0
