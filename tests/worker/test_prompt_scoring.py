"""Scoring a prompt in chunks (worker/prompt_scoring.py) gives the model's own log-probabilities
whatever the chunk size: the demo model, a short prompt, chunks of 3 tokens against one pass."""

from pathlib import Path

import mlx.core as mx
import pytest

from worker import prompt_scoring
from worker.logprobs import LogprobReader


@pytest.fixture(scope="module")
def loaded(cache_dir: Path):
    from worker.demo_model import prepare_demo_model
    from worker.model import load_model

    path = prepare_demo_model(cache_dir)
    return load_model(str(path), path.parent)


def test_chunks_score_as_one_pass(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = loaded.tokenizer.encode("Queues hold jobs until a worker takes them.")
    logits = loaded.model(mx.array(tokens)[None])[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    reference = [logprobs[i, tokens[i + 1]].item() for i in range(len(tokens) - 1)]

    monkeypatch.setattr(prompt_scoring, "CHUNK_TOKENS", 3)
    reader = LogprobReader(loaded.tokenizer)
    scored = prompt_scoring.score_prompt(loaded.model, tokens, reader, top=2)
    assert len(scored) == len(tokens) and len(tokens) > 7  # several chunks
    assert scored[0].logprob is None and scored[0].top_logprobs is None
    assert [s.logprob for s in scored[1:]] == pytest.approx(reference, abs=1e-4)
    for entry in scored[1:]:
        assert entry.top_logprobs is not None and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.top_logprobs[0].logprob >= (entry.logprob or 0) - 1e-6
    assert "".join(s.token for s in scored) == loaded.tokenizer.decode(tokens)
