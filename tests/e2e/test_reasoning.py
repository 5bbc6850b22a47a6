"""A reasoning model's thinking comes back apart from its answer, end to end: the official
openai client -> API -> Redis/RQ -> a real worker running MLX -> back, whole and streamed.

The model is built here (tests/support/tiny_models.py): a counting model whose greedy answer
to "go" is "<think> hmm ok </think> Paris" then EOS, with a tokenizer in which mlx-lm finds
the <think> / </think> markers.
"""

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.processes import Processes
from tests.support.tiny_models import build_counting_model

pytestmark = pytest.mark.e2e

WORDS = ["<pad>", "<s>", "go", "<think>", "hmm", "ok", "</think>", "Paris", "</s>"]
"""Greedy decoding after "go" walks the rest of the list: the think block, then the answer."""
ANSWER = " Paris"
"""The content after "</think>": the detokenizer joins words with spaces, so the space before
"Paris" is kept (the API strips the think block, not the whitespace that follows it)."""
REASONING = " hmm ok "


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    return build_counting_model(tmp_path / "counting-model", WORDS)


@pytest.fixture
def client(
    processes: Processes, mlxq_env: dict[str, str], model_folder: Path
) -> Iterator[tuple[openai.OpenAI, str]]:
    env = {**mlxq_env, "MLXQ_MODEL": str(model_folder)}
    processes.worker(env)
    api = processes.api(env)
    with openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c, str(model_folder)


def _reasoning(obj: object) -> str | None:
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("reasoning_content", getattr(obj, "reasoning_content", None))


def test_the_answer_comes_back_apart_from_the_thinking(
    client: tuple[openai.OpenAI, str],
) -> None:
    openai_client, model = client
    response = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "go"}], temperature=0
    )

    (choice,) = response.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content == ANSWER
    assert choice.message.content.strip() == "Paris"
    reasoning = _reasoning(choice.message)
    assert reasoning == REASONING
    assert "hmm" in reasoning and "ok" in reasoning
    assert "<think>" not in reasoning and "</think>" not in reasoning
    assert response.usage is not None
    assert response.usage.completion_tokens == 5  # <think> hmm ok </think> Paris (EOS not counted)

    stream = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "go"}], temperature=0, stream=True
    )
    pieces: list[tuple[str, str]] = []  # (channel, text) of each delta that carries text
    finish_reasons = []
    for chunk in stream:
        for streamed in chunk.choices:
            if streamed.finish_reason is not None:
                finish_reasons.append(streamed.finish_reason)
            thought = _reasoning(streamed.delta)
            if thought:
                pieces.append(("reasoning", thought))
            if streamed.delta.content:
                pieces.append(("content", streamed.delta.content))

    channels = [channel for channel, _ in pieces]
    assert "reasoning" in channels and "content" in channels
    first_content = channels.index("content")
    assert set(channels[:first_content]) == {"reasoning"}  # all the thinking, then the answer
    assert set(channels[first_content:]) == {"content"}
    assert "".join(t for c, t in pieces if c == "reasoning") == reasoning
    assert "".join(t for c, t in pieces if c == "content") == choice.message.content
    assert finish_reasons == ["stop"]
