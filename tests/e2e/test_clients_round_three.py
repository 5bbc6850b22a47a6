"""Issue 24's client promises on the real demo model, through the clients that rely on them,
with few tokens each: prompt logprobs as evaluation harnesses read them (compared with the
model's own, computed here with mlx-lm), vLLM's /tokenize and /detokenize, a suffix refused
by a model without fill-in-the-middle tokens, no U+FFFD when max_tokens cuts a character,
seed -1, Anthropic's message_start usage, and a time to first token for a request that
does not stream."""

import re

import anthropic
import httpx
import ollama
import openai
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is Paris."
EMOJI_FIRST_BYTE = 10813
"""The demo tokenizer's first byte token of "😀" (three tokens): a character begun, not ended."""


@pytest.fixture(scope="module")
def client(model_service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(model_service: Service):
    """The model as the worker loads it (float32 on the CPU backend), and its prompt scores."""
    import mlx.core as mx

    from worker.model import load_model

    loaded = load_model(str(model_service.model_path), model_service.model_path.parent)

    def scores(tokens: list[int]) -> list[float]:
        logits = loaded.model(mx.array(tokens)[None])[0].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return [logprobs[i, tokens[i + 1]].item() for i in range(len(tokens) - 1)]

    return loaded.tokenizer, scores


def test_echoed_prompt_logprobs_are_the_models_own(client: openai.OpenAI, reference) -> None:
    tokenizer, scores = reference
    tokens = tokenizer.encode(PROMPT)
    scored = client.completions.create(
        model=DEMO_MODEL_ID, prompt=PROMPT, echo=True, logprobs=1, max_tokens=0
    )
    (choice,) = scored.choices
    assert choice.text == PROMPT and scored.usage and scored.usage.completion_tokens == 0
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.token_logprobs and logprobs.top_logprobs
    assert len(logprobs.token_logprobs) == len(tokens)  # one per prompt token
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert "".join(logprobs.tokens or []) == PROMPT
    assert logprobs.token_logprobs[1:] == pytest.approx(scores(tokens), abs=2e-3)
    assert all(len(top) == 1 for top in logprobs.top_logprobs[1:])

    # lm-evaluation-harness's local-completions: token ids, one generated token, greedy.
    harness = client.completions.create(
        model=DEMO_MODEL_ID, prompt=tokens, echo=True, logprobs=1, max_tokens=1, temperature=0
    )
    scored_again = harness.choices[0].logprobs
    assert scored_again is not None and scored_again.token_logprobs is not None
    assert len(scored_again.token_logprobs) == len(tokens) + 1
    assert scored_again.token_logprobs[:-1] == pytest.approx(
        logprobs.token_logprobs[:1] + logprobs.token_logprobs[1:], abs=1e-4
    )


def test_a_streamed_echo_brings_the_prompts_scores_first(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=DEMO_MODEL_ID, prompt=PROMPT, echo=True, logprobs=0, max_tokens=2, stream=True
        )
    )
    first = chunks[0].choices[0]
    assert first.text == PROMPT and first.logprobs is not None
    assert first.logprobs.token_logprobs and first.logprobs.token_logprobs[0] is None
    assert all(isinstance(v, float) for v in first.logprobs.token_logprobs[1:])


def test_tokenize_and_detokenize_round_trip(
    model_service: Service, client: openai.OpenAI, reference
) -> None:
    tokenizer, _ = reference
    base = model_service.base_url
    text = "Queues hold jobs. Ünïcödé and 😀 too."
    tokenized = httpx.post(
        f"{base}/tokenize",
        json={"model": DEMO_MODEL_ID, "prompt": text, "return_token_strs": True},
        timeout=30,
    ).json()
    assert tokenized["tokens"] == tokenizer.encode(text)
    assert tokenized["count"] == len(tokenized["tokens"]) and tokenized["max_model_len"] == 8192
    assert tokenized["token_strs"] == tokenizer.convert_ids_to_tokens(tokenized["tokens"])
    back = httpx.post(
        f"{base}/detokenize", json={"model": DEMO_MODEL_ID, "tokens": tokenized["tokens"]}
    )
    assert back.json() == {"prompt": text}

    messages = [{"role": "user", "content": "What is a queue?"}]
    chat = httpx.post(f"{base}/tokenize", json={"model": DEMO_MODEL_ID, "messages": messages})
    answered = client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=messages,
        max_tokens=1,  # type: ignore[arg-type]
    )
    assert answered.usage is not None
    assert chat.json()["count"] == answered.usage.prompt_tokens  # the prompt a chat reads

    outside = httpx.post(f"{base}/detokenize", json={"model": DEMO_MODEL_ID, "tokens": [10**6]})
    assert outside.status_code == 400 and "vocabulary" in outside.json()["error"]["message"]


def test_a_suffix_is_refused_naming_a_model_without_fim_tokens(
    model_service: Service, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(
            model=DEMO_MODEL_ID, prompt="def add(a, b):\n    return ", suffix="\n", max_tokens=4
        )
    assert f"the model {DEMO_MODEL_ID!r} cannot fill in the middle" in refused.value.message
    with pytest.raises(ollama.ResponseError) as by_ollama:
        ollama.Client(host=model_service.base_url).generate(
            model=DEMO_MODEL_ID, prompt="def add(a, b):\n    return ", suffix="\n"
        )
    assert by_ollama.value.status_code == 400 and DEMO_MODEL_ID in by_ollama.value.error


def test_a_character_cut_by_max_tokens_is_dropped_not_replaced(client: openai.OpenAI) -> None:
    forced = {"logit_bias": {str(EMOJI_FIRST_BYTE): 100}, "max_tokens": 1, "temperature": 0}
    messages = [{"role": "user", "content": "Send a smiley."}]
    whole = client.chat.completions.create(model=DEMO_MODEL_ID, messages=messages, **forced)  # type: ignore[arg-type]
    assert whole.choices[0].finish_reason == "length"
    assert whole.choices[0].message.content == ""  # the emoji's first byte only: dropped
    streamed = client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        **forced,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert "\ufffd" not in text and text == ""


def test_seed_minus_one_is_a_random_seed(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=DEMO_MODEL_ID, prompt="Hi", seed=-1, max_tokens=2)
    assert answer.choices[0].finish_reason in ("length", "stop")


def test_message_start_counts_the_prompts_tokens(model_service: Service) -> None:
    claude = anthropic.Anthropic(base_url=model_service.base_url, api_key="unused")
    events = list(
        claude.messages.create(
            model=DEMO_MODEL_ID,
            max_tokens=2,
            messages=[{"role": "user", "content": "Name a colour, please."}],
            stream=True,
        )
    )
    assert events[0].type == "message_start"
    started = events[0].message.usage.input_tokens
    (delta,) = [event for event in events if event.type == "message_delta"]
    final = delta.usage
    assert started > 10  # the template adds a system prompt to the question
    assert started == (final.input_tokens or 0) + (final.cache_read_input_tokens or 0)


def test_a_request_that_does_not_stream_gets_a_time_to_first_token(
    model_service: Service, client: openai.OpenAI
) -> None:
    def ttft_count() -> float:
        text = httpx.get(f"{model_service.base_url}/metrics").text
        pattern = rf'mlxq_time_to_first_token_seconds_count{{model="{DEMO_MODEL_ID}"}} (\S+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    before = ttft_count()
    client.completions.create(model=DEMO_MODEL_ID, prompt="Hi", max_tokens=2)
    assert ttft_count() == before + 1
