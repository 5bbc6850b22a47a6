"""The prefix cache changes how much is prefilled, never what is generated: greedy answers with
a cache hit equal those without, single-stream and batched, also under a small byte bound."""

import queue
import time
from collections.abc import Iterator

import pytest

from shared.schemas import ChatMessage, GenerationRequest
from shared.settings import Settings
from tests.support.processes import wait_until
from worker.engine_api import Failed, Finished, TokenOutput
from worker.mlx_engine import MLXEngine
from worker.model import LoadedModel

SYSTEM = "You are a terse assistant. " + " ".join(f"Fact {i}: the sky is blue." for i in range(14))
"""About 140 tokens: well past STORE_PROMPT_MIN_TOKENS (a long prompt, cached as soon as it is
prefilled, and followed by requests that share it), and short to prefill on a CPU."""
SHARED = 120
"""A request whose cached tokens pass this had the shared system prompt from the cache."""
ANSWER_TOKENS = 8
"""Greedy tokens compared with and without the cache: a KV cache reused wrongly shows at once."""
QUESTIONS = ["What is 2 + 2?", "Name a colour.", "What is the capital of Italy?"]


class Engine:
    """An MLX engine on the demo model (loaded once per session: the ``demo_model``
    fixture), driven synchronously for tests."""

    def __init__(self, loaded: LoadedModel, cache_bytes: int, start: bool = True) -> None:
        self.outputs: queue.Queue = queue.Queue()
        settings = Settings(worker_concurrency=8, prefix_cache_bytes=cache_bytes)
        self.engine = MLXEngine(settings, self.outputs.put, loaded=loaded)
        if start:
            self.engine.start()
        self._next = 0

    def submit(self, question: str) -> str:
        self._next += 1
        job_id = f"j{self._next}"
        request = GenerationRequest(
            request_id=job_id,
            model=self.engine.model_id,
            messages=[
                ChatMessage(role="system", content=SYSTEM),
                ChatMessage(role="user", content=question),
            ],
            max_tokens=ANSWER_TOKENS,
            deadline=time.time() + 300,
        )
        self.engine.submit(self.engine.prepare(job_id, request, 300))
        return job_id

    def results(self, job_ids: list[str]) -> dict[str, Finished]:
        done: dict[str, Finished] = {}
        while len(done) < len(job_ids):
            output = self.outputs.get(timeout=120)
            if isinstance(output, TokenOutput):
                continue
            assert not isinstance(output, Failed), output.error
            done[output.job_id] = output
        return done

    def ask(self, question: str) -> Finished:
        job_id = self.submit(question)
        return self.results([job_id])[job_id]


@pytest.fixture(scope="module")
def reference(demo_model: LoadedModel) -> Iterator[dict[str, str]]:
    """Answers with no prefix cache at all."""
    engine = Engine(demo_model, cache_bytes=0)
    answers = {q: engine.ask(q).choices[0].text for q in QUESTIONS}
    engine.engine.stop()
    yield answers


def test_single_stream_hits_give_the_same_answers(reference: dict[str, str], demo_model) -> None:
    engine = Engine(demo_model, cache_bytes=1 << 30)
    first = engine.ask(QUESTIONS[0])
    assert first.cached_tokens == 0
    for question in QUESTIONS:
        answer = engine.ask(question)
        assert answer.choices[0].text == reference[question]
        assert answer.cached_tokens > SHARED  # the shared system prompt came from the cache
    assert engine.engine.prefix_cache_report().hit_tokens > 0
    engine.engine.stop()


def test_batched_hits_give_the_same_answers(reference: dict[str, str], demo_model) -> None:
    engine = Engine(demo_model, cache_bytes=1 << 30)
    engine.ask("Say hello.")  # caches the system prompt
    job_ids = [engine.submit(q) for q in QUESTIONS]  # together: the batched path
    results = engine.results(job_ids)
    for job_id, question in zip(job_ids, QUESTIONS, strict=True):
        assert results[job_id].choices[0].text == reference[question]
        assert results[job_id].cached_tokens > SHARED
    engine.engine.stop()


def test_arrivals_together_share_one_prefill_and_answer_the_same(reference, demo_model) -> None:
    engine = Engine(demo_model, cache_bytes=1 << 30, start=False)
    job_ids = [engine.submit(q) for q in QUESTIONS]  # nothing cached yet; all in one arrival
    engine.engine.start()
    results = engine.results(job_ids)
    assert [results[j].choices[0].text for j in job_ids] == [reference[q] for q in QUESTIONS]
    assert sum(results[j].cached_tokens > SHARED for j in job_ids) >= 2  # followed the first
    engine.engine.stop()


def test_a_small_byte_bound_evicts_and_answers_stay_right(
    reference: dict[str, str], demo_model
) -> None:
    bound = 3 << 20  # about two prompts' KV of the demo model in float32
    engine = Engine(demo_model, cache_bytes=bound)
    for question in QUESTIONS * 2:
        assert engine.ask(question).choices[0].text == reference[question]
        # The engine thread stores the answer's KV just after sending the answer (and is
        # over the bound for a moment inside the store): look once it has settled.
        wait_until(lambda: engine.engine.prefix_cache.nbytes <= bound, 5, "the byte bound")
    engine.engine.stop()


def test_a_request_joining_a_running_batch_answers_the_same(
    reference: dict[str, str], demo_model
) -> None:
    """One request arriving while another decodes has its short uncached tail prefilled at
    once (Scheduler._insert_prefilled), and still gives the same answer."""
    engine = Engine(demo_model, cache_bytes=1 << 30)
    engine.ask("Say hello.")  # caches the system prompt
    prefilled = []
    scheduler = engine.engine.scheduler
    original = scheduler._insert_prefilled

    def spy(*args: object) -> None:
        prefilled.append(args[0])
        original(*args)  # type: ignore[arg-type]

    scheduler._insert_prefilled = spy  # type: ignore[method-assign]
    first = engine.submit(QUESTIONS[0])
    deadline = time.monotonic() + 60
    while not scheduler.running:
        assert time.monotonic() < deadline, "the first request never started"
        time.sleep(0.001)
    second = engine.submit(QUESTIONS[1])
    results = engine.results([first, second])
    assert results[first].choices[0].text == reference[QUESTIONS[0]]
    assert results[second].choices[0].text == reference[QUESTIONS[1]]
    assert results[second].cached_tokens > SHARED
    assert len(prefilled) == 1
    engine.engine.stop()
