"""Ways to constrain an answer besides ``response_format``: vLLM's guided decoding on OpenAI's
chat and text completions, Anthropic's structured outputs on /v1/messages. What reaches the
worker, and what is refused (in-process API, a stand-in worker that never takes the job);
then the openai client's ``extra_body`` against the real service and the demo model."""

import re

import openai
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.jobs import enqueued_request, serve
from tests.support.processes import Service

MODEL = "org/served-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Is it raining?"}]}
COMPLETION = {"model": MODEL, "prompt": "Is it raining? Answer:"}
SCHEMA = {"type": "object", "properties": {"rain": {"type": "boolean"}}, "required": ["rain"]}

GUIDED = [
    ({"guided_choice": ["yes", "no"]}, {"type": "choice", "choices": ["yes", "no"]}),
    ({"guided_regex": "[0-9]+"}, {"type": "regex", "pattern": "[0-9]+"}),
    ({"guided_grammar": 'start: "a"'}, {"type": "grammar", "grammar": 'start: "a"'}),
    ({"guided_json": SCHEMA}, {"type": "json_schema", "json_schema": {"schema": SCHEMA}}),
    (
        {"guided_json": '{"type": "object"}'},
        {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
    ),
    (
        {"structured_outputs": {"regex": "a|b"}},
        {"type": "regex", "pattern": "a|b", "field": "structured_outputs.regex"},
    ),
    (
        {"structured_outputs": {"choice": ["x"]}},
        {"type": "choice", "choices": ["x"], "field": "structured_outputs.choice"},
    ),
]


def expected_format(fields: dict, expected: dict) -> dict:
    (field,) = fields
    return {"field": field, **expected}


@pytest.mark.anyio
@pytest.mark.parametrize("body", [CHAT, COMPLETION], ids=["chat", "completions"])
@pytest.mark.parametrize(("fields", "expected"), GUIDED)
async def test_each_guided_field_becomes_the_jobs_format(
    make_api, redis_url: str, body: dict, fields: dict, expected: dict
) -> None:
    serve(redis_url, MODEL)
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    async with make_api(queue_timeout=30) as api:
        request = await enqueued_request(api.client, redis_url, MODEL, path, {**body, **fields})
    wanted = expected_format(fields, expected)
    assert {k: v for k, v in request["response_format"].items() if v is not None} == wanted


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"guided_choice": ["a"], "guided_regex": "a"}, "guided_regex and guided_choice"),
        ({"guided_json": SCHEMA, "structured_outputs": {"regex": "a"}}, "guided_json and"),
        (
            {"guided_regex": "a", "response_format": {"type": "json_object"}},
            "guided_regex and response_format",
        ),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"json_object": True}}, "structured_outputs.json_object"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_json": "not json"}, "guided_json"),
        (
            {
                "guided_regex": "a",
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "required",
            },
            "forced tool call",
        ),
    ],
)
async def test_more_than_one_constraint_is_a_400_naming_them(
    api_client, fields: dict, named: str
) -> None:
    response = await api_client.post("/v1/chat/completions", json={**CHAT, **fields})
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]["message"]


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["output_config", "output_format"])
async def test_anthropic_structured_outputs_become_the_jobs_format(
    make_api, redis_url: str, field: str
) -> None:
    serve(redis_url, MODEL)
    json_format = {"type": "json_schema", "schema": SCHEMA}
    given = {"format": json_format} if field == "output_config" else json_format
    body = {**CHAT, "max_tokens": 20, field: given}
    async with make_api(queue_timeout=30) as api:
        request = await enqueued_request(api.client, redis_url, MODEL, "/v1/messages", body)
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"] == {"schema": SCHEMA}
    named = "output_config.format" if field == "output_config" else "output_format"
    assert request["response_format"]["field"] == named


# -- the openai client, against the real demo model ------------------------------------------


@pytest.fixture(scope="module")
def client(model_service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, question: str, **guided):
    return client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=20,
        extra_body=guided,
    )


@pytest.mark.e2e
def test_guided_choice_and_regex_shape_the_answer(client: openai.OpenAI) -> None:
    chosen = ask(client, "Is the sky blue?", guided_choice=["yes", "no"]).choices[0]
    assert chosen.message.content in ("yes", "no") and chosen.finish_reason == "stop"
    pattern = r"[0-9]{3}-[0-9]{4}"
    phone = ask(client, "Give me a phone number.", guided_regex=pattern).choices[0]
    assert re.fullmatch(pattern, phone.message.content), phone.message.content
    grammar = 'root ::= "The answer is " [0-9]'  # GBNF, as llama.cpp and xgrammar take it
    completion = client.completions.create(
        model=DEMO_MODEL_ID,
        prompt="2 + 2 = ?",
        temperature=0,
        max_tokens=12,
        extra_body={"structured_outputs": {"grammar": grammar}},
    )
    assert re.fullmatch("The answer is [0-9]", completion.choices[0].text)


@pytest.mark.e2e
def test_a_pattern_the_engine_cannot_compile_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "Hi", guided_regex="(unclosed")
    assert refused.value.status_code == 400
    assert "guided_regex" in refused.value.message and "unclosed group" in refused.value.message
