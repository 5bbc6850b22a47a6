"""Engines for narrow tests of the worker's plumbing (selected with MLXQ_ENGINE=module:Class).

They run in real worker processes, behind the real RQ worker, reporter and Redis; only the
model is replaced, so faults (kills, disconnects, deadlines) can be timed exactly. They are
built like every engine: subclasses of worker.engine_api.Engine, the threaded ones of
worker.engine_thread.ThreadedEngine.
"""

import dataclasses
import os
import time

from shared.errors import Cancelled, GenerationFailed, InvalidRequest, JobTimedOut
from shared.schemas import EmbeddingRequest, GenerationRequest, JobRequest
from shared.settings import Settings
from worker.echo_engine import EchoEngine
from worker.engine_api import Engine, EngineRequest, Failed, Finished, ModelFacts, TokenOutput
from worker.engine_thread import ThreadedEngine
from worker.prompt import fit_max_tokens


class FailingEngine(Engine):
    """Accepts every request, then fails it the way a broken generation would."""

    peak_batch_size = 1
    generated_tokens = 0

    def __init__(self, settings: Settings, emit) -> None:
        self.model_id = settings.model
        self._emit = emit

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        return EngineRequest(job_id, request, [[]], [1], time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        self._emit(Failed(request.job_id, GenerationFailed("Generation failed: out of unicorns")))

    def cancel(self, job_id: str) -> None:
        pass


class ChoicelessEngine(FailingEngine):
    """Answers every request with no choice at all, an answer no dialect can render: a bug
    in a worker becomes an unhandled exception in the API (tests/faults/test_internal_error.py)."""

    def submit(self, request: EngineRequest) -> None:
        self._emit(Finished(request.job_id, [], prompt_tokens=1))


class SlowEngine(ThreadedEngine):
    """Generates "w0 w1 w2 ..." for all its jobs at once, one word per step of
    MLXQ_TEST_STEP_S seconds (default 0.1), max_tokens words (default 20); it checks
    cancellations and deadlines between steps like the MLX engine. It keeps no prefix cache
    but says it does, so that workers claim the conversations they answer and the routing
    tests can run without MLX."""

    reuses_prefixes = True

    def __init__(self, settings: Settings, emit) -> None:
        super().__init__(emit, "slow-engine")
        self.model_id = settings.model
        self._step_s = float(os.environ.get("MLXQ_TEST_STEP_S", "0.1"))
        self._jobs: dict[str, tuple[EngineRequest, list[str]]] = {}
        self.peak_batch_size = 0
        self.generated_tokens = 0

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        assert isinstance(request, GenerationRequest)
        max_tokens = request.max_tokens or 20
        return EngineRequest(job_id, request, [[]], [max_tokens], time.monotonic() + timeout_s)

    def _run(self) -> None:
        while True:
            time.sleep(self._step_s)
            arrivals = self._arrivals(wait=False)
            if arrivals is None:
                return
            for request in arrivals:
                self._jobs[request.job_id] = (request, [])
            self.peak_batch_size = max(self.peak_batch_size, len(self._jobs))
            cancelled = self._take_cancelled()
            for job_id, (request, words) in list(self._jobs.items()):
                self._step(job_id, request, words, job_id in cancelled)

    def _step(self, job_id: str, request: EngineRequest, words: list[str], cancelled: bool):
        if cancelled:
            self._end(job_id, Failed(job_id, Cancelled("The client went away.")))
        elif time.monotonic() >= request.timeout_at:
            self._end(
                job_id,
                Failed(
                    job_id,
                    JobTimedOut(
                        "The request's time limit passed while generating.",
                        partial=" ".join(words),
                    ),
                ),
            )
        else:
            word = f"w{len(words)}"
            words.append(word)
            self.generated_tokens += 1
            if request.request.stream:
                self._emit(TokenOutput(job_id, word if len(words) == 1 else " " + word))
            if len(words) >= request.max_tokens[0]:
                self._end(job_id, Finished.single(job_id, " ".join(words), "length", 1, len(words)))

    def _end(self, job_id: str, output) -> None:
        del self._jobs[job_id]
        self._emit(output)


class TinyContextEngine(EchoEngine):
    """The echo engine with a 64-token context window, one token per whitespace-separated word:
    it fits max_tokens with worker.prompt.fit_max_tokens like the MLX engine, so a long prompt
    (or a max_tokens that does not fit beside it) fails with context_length_exceeded."""

    context_length = 64

    def __init__(self, settings: Settings, emit) -> None:
        super().__init__(settings, emit)
        self._cap = settings.max_tokens_cap

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        prepared = super().prepare(job_id, request, timeout_s)
        words = len(prepared.payload)  # the echo engine keeps the prompt's words here
        max_tokens = fit_max_tokens(
            prepared.request.max_tokens, words, self.context_length, self._cap
        )
        return dataclasses.replace(prepared, max_tokens=[max_tokens])


class SlowEmbeddingEngine(ThreadedEngine):
    """Answers each embedding job MLXQ_TEST_EMBED_S seconds (default 4) after it arrives, with
    a 3-dimensional vector per input; many jobs are in flight at once. Cancellations and
    deadlines are checked every 0.05 s. Generation jobs are refused, as a real embedding
    engine refuses them."""

    facts = ModelFacts(capabilities=("embedding",))

    def __init__(self, settings: Settings, emit) -> None:
        super().__init__(emit, "slow-embedding")
        self.model_id = settings.model
        self._seconds = float(os.environ.get("MLXQ_TEST_EMBED_S", "4"))
        self._jobs: dict[str, tuple[EngineRequest, float]] = {}
        self.peak_batch_size = 0
        self.generated_tokens = 0

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        if not isinstance(request, EmbeddingRequest):
            raise InvalidRequest(f"The model {self.model_id!r} computes embeddings.")
        count = len(request.inputs)
        return EngineRequest(
            job_id, request, [[]] * count, [0] * count, time.monotonic() + timeout_s
        )

    def _run(self) -> None:
        while True:
            time.sleep(0.05)
            arrivals = self._arrivals(wait=False)
            if arrivals is None:
                return
            now = time.monotonic()
            for request in arrivals:
                self._jobs[request.job_id] = (request, now + self._seconds)
            self.peak_batch_size = max(self.peak_batch_size, len(self._jobs))
            cancelled = self._take_cancelled()
            for job_id, (request, ready_at) in list(self._jobs.items()):
                if job_id in cancelled or now >= min(ready_at, request.timeout_at):
                    del self._jobs[job_id]
                    self._emit(self._answer(job_id, request, ready_at, job_id in cancelled, now))

    def _answer(
        self, job_id: str, request: EngineRequest, ready_at: float, cancelled: bool, now: float
    ):
        if cancelled:
            return Failed(job_id, Cancelled("The client went away."))
        if now < ready_at:
            return Failed(job_id, JobTimedOut("The request's time limit passed while embedding."))
        vectors = [[1.0, 0.0, 0.0] for _ in request.prompts]
        return Finished(job_id, [], len(request.prompts), embeddings=vectors)


class BareEngine:
    """An engine written without the protocol's base class: it has what a job needs but not
    the optional abilities (``prefix_cache_report``, ``reuses_prefixes``...). A worker refuses
    it at start-up."""

    context_length = None
    peak_batch_size = 0
    generated_tokens = 0

    def __init__(self, settings: Settings, emit) -> None:
        self.model_id = settings.model

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        return EngineRequest(job_id, request, [[]], [1], time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        pass

    def cancel(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
