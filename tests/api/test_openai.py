"""The OpenAI API, through the official ``openai`` client, against a real API and a real
worker with the demo model."""

import concurrent.futures

import httpx
import openai
import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Write a haiku about queues."}]


@pytest.fixture(scope="module")
def client(model_service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(model_service: Service):
    return load_tokenizer(model_service.model_path)


@pytest.fixture(scope="module")
def reference_tokens(demo_model):
    """Greedy token ids from plain mlx-lm in this process, loaded as the worker loads it."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    loaded = demo_model
    tokenizer = loaded.tokenizer

    def generate(messages: list[dict], max_tokens: int) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt = mx.array(tokenizer.encode(text, add_special_tokens=False))
        ids = []
        for token, _ in generate_step(prompt, loaded.model, max_tokens=max_tokens):
            if token in tokenizer.eos_token_ids:
                break
            ids.append(token)
        return ids

    return generate


MAX_TOKENS = 20
"""Enough for a greedy answer of several words (the stop test cuts at the fourth); every
token costs about a tenth of a second on a 2-core CPU."""


def chat(client: openai.OpenAI, **options):
    options.setdefault("messages", QUESTION)
    options.setdefault("temperature", 0)
    options.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(model=DEMO_MODEL_ID, **options)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    alias = DEMO_MODEL_ID.rsplit("/", 1)[1]  # for clients that read "mlxq/" as a provider
    assert [m.id for m in client.models.list().data] == [DEMO_MODEL_ID, alias]


def test_chat_completion_with_usage_counted_by_the_tokenizer(
    client, tokenizer, reference_tokens
) -> None:
    response = chat(client)
    reference = reference_tokens(QUESTION, MAX_TOKENS)

    answer = response.choices[0].message.content
    assert response.object == "chat.completion" and response.model == DEMO_MODEL_ID
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert response.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    # Generated tokens, counted as generated (re-encoding the text may split it differently).
    assert tokenizer.decode(reference) == answer
    assert response.usage.completion_tokens == len(reference)
    assert (
        response.usage.total_tokens
        == response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_stream_concatenates_to_the_non_streamed_answer(client: openai.OpenAI) -> None:
    whole = chat(client)
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))

    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([p for p in pieces if p]) > 3  # token by token, not one blob
    assert "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[
        0
    ].finish_reason
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_stop_sequence_ends_the_answer_and_is_left_out(client: openai.OpenAI) -> None:
    full = chat(client).choices[0].message.content
    stop = full.split()[3]  # a word from the middle of the greedy answer
    expected = full[: full.index(stop)]

    stopped = chat(client, stop=[stop, "never-appears"])
    streamed = "".join(
        c.choices[0].delta.content or "" for c in chat(client, stop=stop, stream=True)
    )

    assert stopped.choices[0].message.content == expected
    assert stopped.choices[0].finish_reason == "stop"
    assert streamed == expected


def test_completion_of_a_raw_prompt(client: openai.OpenAI, tokenizer) -> None:
    prompt = "The capital of France is"
    response = client.completions.create(
        model=DEMO_MODEL_ID, prompt=prompt, max_tokens=6, temperature=0, stop=["."]
    )
    assert response.object == "text_completion"
    assert response.choices[0].text == " Paris"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == len(tokenizer.encode(prompt))

    streamed = client.completions.create(
        model=DEMO_MODEL_ID, prompt=prompt, max_tokens=6, temperature=0, stop=["."], stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " Paris"


def test_length_limit_is_reported(client: openai.OpenAI) -> None:
    response = chat(client, max_completion_tokens=3)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


def test_sampling_is_per_request_even_in_a_shared_batch(client: openai.OpenAI) -> None:
    seeded = {"temperature": 1.0, "top_p": 0.9, "seed": 1234, "max_tokens": 16}
    alone_seeded = chat(client, **seeded).choices[0].message.content
    alone_greedy = chat(client, max_tokens=16).choices[0].message.content
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(chat, client, **seeded),
            pool.submit(chat, client, max_tokens=16),
            pool.submit(chat, client, temperature=1.0, seed=99, max_tokens=16),
        ]
        together = [f.result().choices[0].message.content for f in futures]
    assert together[0] == alone_seeded
    assert together[1] == alone_greedy


def test_errors_have_openai_shape(model_service: Service, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert missing.value.body["code"] == "model_not_found"
    assert missing.value.body["param"] == "model"

    with pytest.raises(openai.BadRequestError) as bad:
        chat(client, temperature=5)
    assert bad.value.body["type"] == "invalid_request_error"
    assert bad.value.body["param"] == "temperature"

    raw = httpx.post(f"{model_service.base_url}/v1/chat/completions", json={"model": DEMO_MODEL_ID})
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_context_overflow_is_a_400_before_streaming_starts(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        chat(client, max_tokens=8190, stream=True)
    assert error.value.body["code"] == "context_length_exceeded"


def test_ask_streams_plain_text_pieces_and_a_final_event(model_service: Service) -> None:
    body = {"question": "Say hello in French.", "max_tokens": 12}
    whole = httpx.post(f"{model_service.base_url}/ask", json=body, timeout=60).json()["answer"]
    events = []
    with httpx.stream("POST", f"{model_service.base_url}/ask", json={**body, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for block in r.read().decode().split("\n\n"):
            if block:
                events.append(block)
    pieces = [b.removeprefix("data: ") for b in events if b.startswith("data: ")]
    final = [b for b in events if b.startswith("event: done")]
    assert len(pieces) > 3
    assert "".join(pieces) == whole
    assert len(final) == 1 and f'"answer":"{whole}"' in final[0]


def test_a_short_alias_is_answered_under_that_name(client: openai.OpenAI) -> None:
    alias = DEMO_MODEL_ID.rsplit("/", 1)[1]
    completion = client.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert completion.model == alias
    assert client.models.retrieve(alias).id == alias
