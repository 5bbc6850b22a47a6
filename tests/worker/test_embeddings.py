"""The embedding engine in this process, on the demo embedding model: its vectors match an
independent numpy reference, batching does not change them, long inputs are refused or cut."""

import json
import queue
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ContextLengthExceeded, InvalidRequest
from shared.schemas import EmbeddingRequest, GenerationRequest
from shared.settings import DEMO_EMBEDDING_MODEL_ID, Settings
from worker.embedding_engine import EmbeddingEngine
from worker.engine_api import EngineOutput, Failed, Finished

REFERENCE = json.loads((Path(__file__).parent / "data/embedding_reference.json").read_text())
MAX_COSINE_DISTANCE = 1e-3


class _Collected:
    def __init__(self) -> None:
        self.outputs: queue.Queue[EngineOutput] = queue.Queue()

    def __call__(self, output: EngineOutput) -> None:
        self.outputs.put(output)


@pytest.fixture(scope="module")
def engine(cache_dir: Path):
    emitted = _Collected()
    built = EmbeddingEngine(Settings(model=DEMO_EMBEDDING_MODEL_ID, cache_dir=cache_dir), emitted)
    built.start()
    yield built, emitted
    built.stop()


def _request(inputs: list, truncate: bool = False, dimensions: int | None = None):
    return EmbeddingRequest(
        request_id="r",
        model=DEMO_EMBEDDING_MODEL_ID,
        inputs=inputs,
        truncate=truncate,
        dimensions=dimensions,
        deadline=2e9,
    )


def _embed_jobs(engine, jobs: list[list]) -> dict[str, list[list[float]]]:
    """Submit every job at once (so the engine pools them), and collect the answers."""
    built, emitted = engine
    prepared = [built.prepare(f"job{i}", _request(inputs), 60) for i, inputs in enumerate(jobs)]
    for job in prepared:
        built.submit(job)
    answers: dict[str, list[list[float]]] = {}
    while len(answers) < len(jobs):
        output = emitted.outputs.get(timeout=60)
        assert isinstance(output, Finished), output
        assert output.embeddings is not None and output.choices == []
        answers[output.job_id] = output.embeddings
    return answers


def test_vectors_match_the_reference(engine) -> None:
    got = np.array(_embed_jobs(engine, [REFERENCE["sentences"]])["job0"])
    expected = np.array(REFERENCE["embeddings"])
    assert got.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine_distance = 1.0 - (got * expected).sum(axis=1)
    assert cosine_distance.max() < MAX_COSINE_DISTANCE, cosine_distance


def test_batching_one_or_many_gives_the_same_vectors(engine) -> None:
    sentences = (REFERENCE["sentences"] * 4)[:32]
    alone = _embed_jobs(engine, [[s] for s in sentences])  # 32 jobs, pooled
    together = _embed_jobs(engine, [sentences])["job0"]  # one job of 32
    one_by_one = [_embed_jobs(engine, [[s]])["job0"][0] for s in sentences[:8]]
    for i in range(32):
        np.testing.assert_allclose(alone[f"job{i}"][0], together[i], atol=1e-5)
    np.testing.assert_allclose(one_by_one, together[:8], atol=1e-5)
    assert engine[0].peak_batch_size >= 32


def test_token_ids_embed_like_their_text(engine) -> None:
    built, _ = engine
    ids = built._tokenizer.encode(["hello world"])[0][1:-1]  # without [CLS] and [SEP]
    answers = _embed_jobs(engine, [["hello world", ids]])["job0"]
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-6)


def test_long_inputs_are_refused_unless_truncation_is_asked(engine) -> None:
    built, emitted = engine
    long_text = "word " * 400
    with pytest.raises(ContextLengthExceeded, match="at most 256"):
        built.prepare("long", _request([long_text]), 60)
    prepared = built.prepare("cut", _request([long_text], truncate=True), 60)
    assert len(prepared.prompts[0]) == 256
    built.submit(prepared)
    output = emitted.outputs.get(timeout=60)
    assert isinstance(output, Finished) and output.embeddings is not None
    assert abs(np.linalg.norm(output.embeddings[0]) - 1.0) < 1e-5


def test_wrong_kind_and_dimensions_are_refused(engine) -> None:
    built, _ = engine
    chat = GenerationRequest(request_id="g", model=DEMO_EMBEDDING_MODEL_ID, deadline=2e9)
    with pytest.raises(InvalidRequest, match="does not generate text"):
        built.prepare("g", chat, 60)
    with pytest.raises(InvalidRequest, match="384"):
        built.prepare("d", _request(["x"], dimensions=128), 60)
    assert built.prepare("d", _request(["x"], dimensions=384), 60).prompts


def test_cancelled_job_ends_as_cancelled(engine) -> None:
    built, emitted = engine
    prepared = built.prepare("gone", _request(["bye"]), 60)
    built.cancel("gone")
    built.submit(prepared)
    output = emitted.outputs.get(timeout=60)
    assert isinstance(output, Failed) and output.job_id == "gone"
