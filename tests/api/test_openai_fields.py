"""Every OpenAI request field is honoured (with its effect shown on the demo model), refused
with a 400 that names it, or a documented no-op; nothing is silently ignored."""

import concurrent.futures
import json
import re
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import completion_create_params as completion_params
from openai.types.chat import completion_create_params as chat_params
from pydantic import BaseModel

from api.core.validators import field_policy
from api.dialects.openai.schemas import ChatCompletionRequest, CompletionRequest
from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a cat and a dog."}]


# -- the three lists ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "openai_fields"),
    [
        (ChatCompletionRequest, chat_params.CompletionCreateParamsBase.__annotations__),
        (CompletionRequest, completion_params.CompletionCreateParamsBase.__annotations__),
    ],
)
def test_every_field_is_honoured_refused_or_a_no_op(model, openai_fields) -> None:
    policies = field_policy(model)
    unclassified = set(model.model_fields) - set(policies)
    assert not unclassified, f"fields in none of the three lists: {unclassified}"
    missing = (set(openai_fields) | {"stream"}) - set(model.model_fields)
    assert not missing, f"OpenAI fields mlxq does not know (the openai package grew): {missing}"


def test_readme_lists_the_refused_and_no_op_fields() -> None:
    for model in (ChatCompletionRequest, CompletionRequest):
        for field, policy in field_policy(model).items():
            if policy != "honoured":
                row = re.search(rf"^\| `{field}` \| ([a-z-]+) \|", README, flags=re.MULTILINE)
                assert row is not None and row.group(1) == policy, field


# -- their effects, on the real demo model --------------------------------------------------


@pytest.fixture(scope="module")
def client(model_service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused", max_retries=0)


def chat(client: openai.OpenAI, **options):
    options.setdefault("messages", QUESTION)
    options.setdefault("temperature", 0)
    options.setdefault("max_tokens", 12)
    return client.chat.completions.create(model=DEMO_MODEL_ID, **options)


def text(response) -> str:
    return response.choices[0].message.content


@pytest.fixture(scope="module")
def greedy(client) -> str:
    """The greedy answer to QUESTION, once for the module: greedy answers do not change."""
    return text(chat(client))


@pytest.mark.e2e
def test_logit_bias_bans_the_first_greedy_token(client, tokenizer) -> None:
    baseline = chat(client, logprobs=True)
    first = baseline.choices[0].logprobs.content[0].token
    first_id = tokenizer.encode(first, add_special_tokens=False)[0]
    banned = chat(client, logprobs=True, logit_bias={str(first_id): -100})
    assert banned.choices[0].logprobs.content[0].token != first
    assert text(banned) != text(baseline)


STORY_TOKENS = 30
"""Long enough for the story to repeat words, which is what the penalties act on (at 16
tokens a presence penalty of 2 still leaves the demo model's greedy story unchanged)."""


@pytest.fixture(scope="module")
def greedy_story(client) -> str:
    """The greedy story, once for the module: greedy answers do not change between calls."""
    return text(chat(client, messages=STORY, max_tokens=STORY_TOKENS))


@pytest.mark.e2e
@pytest.mark.parametrize(
    "option",
    [{"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"repetition_penalty": 1.8}],
)
def test_penalties_change_a_greedy_answer(client, greedy_story: str, option) -> None:
    extra = {k: v for k, v in option.items() if k == "repetition_penalty"}
    standard = {k: v for k, v in option.items() if k != "repetition_penalty"}
    penalised = chat(client, messages=STORY, max_tokens=STORY_TOKENS, extra_body=extra, **standard)
    assert text(penalised) != greedy_story


@pytest.mark.e2e
def test_top_k_and_min_p_of_one_token_sample_the_greedy_answer(client, greedy: str) -> None:
    for option in ({"top_k": 1}, {"min_p": 1.0}):
        assert text(chat(client, temperature=1.5, extra_body=option)) == greedy


SEED_TOKENS = 12
"""Enough for a sampled story to differ from the greedy one, and for a leaked setting to show."""


@pytest.mark.e2e
def test_seed_reproduces_and_settings_never_leak_between_batch_neighbours(client) -> None:
    greedy = text(chat(client, messages=STORY, max_tokens=SEED_TOKENS))
    seeded = text(chat(client, messages=STORY, max_tokens=SEED_TOKENS, temperature=1.2, seed=7))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        plain = [
            pool.submit(lambda: text(chat(client, messages=STORY, max_tokens=SEED_TOKENS)))
            for _ in range(2)
        ]
        again = pool.submit(
            lambda: text(
                chat(client, messages=STORY, max_tokens=SEED_TOKENS, temperature=1.2, seed=7)
            )
        )
        noisy = [
            pool.submit(
                chat,
                client,
                messages=STORY,
                max_tokens=SEED_TOKENS,
                temperature=2.0,
                presence_penalty=2.0,
                logit_bias={"42": 50},
            )
            for _ in range(3)
        ]
        assert [f.result() for f in plain] == [greedy, greedy]
        assert again.result() == seeded
        assert all(text(f.result()) != greedy for f in noisy)


@pytest.mark.e2e
def test_null_is_accepted_where_openai_accepts_it(model_service: Service) -> None:
    body = {
        "model": DEMO_MODEL_ID,
        "messages": QUESTION,
        "max_tokens": 4,
        "temperature": None,
        "top_p": None,
        "n": None,
        "stream": None,
        "stop": None,
        "seed": None,
        "user": None,
        "logprobs": None,
    }
    response = httpx.post(f"{model_service.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text


@pytest.mark.e2e
def test_no_op_fields_are_accepted(client, greedy: str) -> None:
    response = chat(
        client,
        user="u-1",
        store=False,
        metadata={"team": "a"},
        service_tier="auto",
        safety_identifier="s",
        prompt_cache_key="k",
    )
    assert text(response) == greedy


@pytest.mark.e2e
def test_refused_fields_name_themselves(client) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, audio={"voice": "alloy", "format": "wav"})
    assert refused.value.body["param"] == "audio"


# -- structured output ----------------------------------------------------------------------


class City(BaseModel):
    name: str
    country: str
    population_millions: float
    is_capital: bool


class Trip(BaseModel):
    cities: list[City]
    transport: str
    nights: int


@pytest.mark.e2e
def test_parse_returns_objects_that_validate(client) -> None:
    completion = client.chat.completions.parse(
        model=DEMO_MODEL_ID,
        messages=[{"role": "user", "content": "Describe Paris as a city."}],
        response_format=City,
        max_tokens=80,
        temperature=0,
    )
    city = completion.choices[0].message.parsed
    assert isinstance(city, City) and city.name


@pytest.mark.e2e
def test_json_schema_with_nesting_enums_and_optional_fields(client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 20},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "genre": {"enum": ["drama", "comedy", "horror"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
            "director": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "sequel": {"type": "boolean"},
        },
        "required": ["title", "rating", "genre", "director"],
        "additionalProperties": False,
    }
    for temperature, seed in ((0, None), (1.0, 3)):
        response = chat(
            client,
            messages=[{"role": "user", "content": "Review a movie."}],
            max_tokens=120,
            temperature=temperature,
            seed=seed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "review", "schema": schema, "strict": True},
            },
        )
        review = json.loads(text(response))
        assert set(review) >= {"title", "rating", "genre", "director"}
        assert 1 <= review["rating"] <= 5 and review["genre"] in ("drama", "comedy", "horror")
        assert isinstance(review["director"]["name"], str)


@pytest.mark.e2e
def test_json_object_always_parses(client) -> None:
    response = chat(client, response_format={"type": "json_object"}, max_tokens=60)
    assert isinstance(json.loads(text(response)), dict)


@pytest.mark.e2e
def test_a_schema_the_engine_cannot_enforce_is_a_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        chat(
            client,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
            },
        )
    assert "response_format" in refused.value.message


# -- tools ----------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_calls_always_parse_and_match_the_schema(client, tool_choice) -> None:
    response = chat(
        client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=tool_choice, max_tokens=60
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")


@pytest.mark.e2e
def test_a_tool_conversation_round_trips(client) -> None:
    first = chat(
        client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=60
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK_WEATHER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    final = chat(client, messages=history, tools=[WEATHER], max_tokens=30)
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert final.usage.prompt_tokens > first.usage.prompt_tokens


@pytest.mark.e2e
def test_streamed_tool_calls_arrive_as_deltas(client) -> None:
    stream = chat(
        client,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
        max_tokens=60,
    )
    deltas, reasons = [], []
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            reasons.append(choice.finish_reason)
    assert reasons[-1] == "tool_calls"
    first, *more = deltas  # a forced call streams its arguments while they are decoded
    assert first.index == 0 and first.id and first.function.name == "get_weather"
    assert more and all(d.index == 0 and d.id is None and d.function.name is None for d in more)
    arguments = "".join(d.function.arguments for d in deltas)
    assert list(json.loads(arguments)) == ["city", "unit"]


@pytest.mark.e2e
def test_tool_choice_none_answers_in_words(client) -> None:
    response = chat(client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="none")
    assert response.choices[0].message.tool_calls is None and text(response)


# -- logprobs, n, completions ---------------------------------------------------------------


@pytest.mark.e2e
def test_logprobs_add_up_to_the_answer_also_streamed(client) -> None:
    response = chat(client, logprobs=True, top_logprobs=3)
    entries = response.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == text(response)
    for entry in entries:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].logprob >= entry.logprob  # greedy: the top one
    streamed = [
        e
        for chunk in chat(client, logprobs=True, top_logprobs=3, stream=True)
        for choice in chunk.choices
        for e in (choice.logprobs.content if choice.logprobs else None) or []
    ]
    assert [e.token for e in streamed] == [e.token for e in entries]


@pytest.mark.e2e
def test_n_choices_share_one_request(client) -> None:
    response = chat(client, n=3, temperature=1.0, seed=11, max_tokens=10)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert len({text(response)} | {c.message.content for c in response.choices}) > 1
    assert response.usage.completion_tokens == 3 * 10 or response.usage.completion_tokens <= 30


@pytest.mark.e2e
def test_completions_take_lists_token_ids_and_echo(client, tokenizer) -> None:
    ids = tokenizer.encode("The capital of France is", add_special_tokens=False)
    response = client.completions.create(
        model=DEMO_MODEL_ID,
        prompt=["The capital of France is", "One, two, three,"],
        max_tokens=4,
        temperature=0,
        echo=True,
    )
    first, second = response.choices
    assert first.text.startswith("The capital of France is") and len(first.text) > 24
    assert second.text.startswith("One, two, three,")
    by_ids = client.completions.create(model=DEMO_MODEL_ID, prompt=ids, max_tokens=4, temperature=0)
    assert first.text == "The capital of France is" + by_ids.choices[0].text
    with_logprobs = client.completions.create(
        model=DEMO_MODEL_ID, prompt="Once upon", max_tokens=3, temperature=0, logprobs=2
    )
    logprobs = with_logprobs.choices[0].logprobs
    assert len(logprobs.tokens) == 3 and all(len(t) == 2 for t in logprobs.top_logprobs)


@pytest.mark.e2e
def test_models_retrieve_takes_ids_with_a_slash(client) -> None:
    assert client.models.retrieve(DEMO_MODEL_ID).id == DEMO_MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/nothing")


@pytest.mark.e2e
def test_a_repeated_prompt_reports_its_cached_tokens(client) -> None:
    messages = [{"role": "user", "content": "Name three colours of the rainbow, please."}]
    chat(client, messages=messages, max_tokens=3)
    again = chat(client, messages=messages, max_tokens=3)
    details = again.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= again.usage.prompt_tokens - 1


@pytest.fixture(scope="module")
def tokenizer(model_service: Service):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(model_service.model_path)
