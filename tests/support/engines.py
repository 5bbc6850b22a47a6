"""Engines for narrow tests of the worker's plumbing (selected with MLXQ_ENGINE=module:Class).

They run in real worker processes, behind the real RQ worker, reporter and Redis; only the
model is replaced, so faults (kills, disconnects, deadlines) can be timed exactly.
"""

import os
import threading
import time

from shared.errors import Cancelled, GenerationFailed, JobTimedOut
from shared.schemas import GenerationRequest
from shared.settings import Settings
from worker.engine_api import EngineRequest, Failed, Finished, PrefixCacheReport, TokenOutput


class FailingEngine:
    """Accepts every request, then fails it the way a broken generation would."""

    context_length = None
    peak_batch_size = 1
    generated_tokens = 0

    def __init__(self, settings: Settings, emit) -> None:
        self.model_id = settings.model
        self._emit = emit

    def prepare(self, job_id: str, request: GenerationRequest, timeout_s: float) -> EngineRequest:
        return EngineRequest(job_id, request, [[]], [1], time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        self._emit(Failed(request.job_id, GenerationFailed("Generation failed: out of unicorns")))

    def cancel(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ChoicelessEngine(FailingEngine):
    """Answers every request with no choice at all, an answer no dialect can render: a bug
    in a worker becomes an unhandled exception in the API (tests/faults/test_internal_error.py)."""

    def submit(self, request: EngineRequest) -> None:
        self._emit(Finished(request.job_id, [], prompt_tokens=1))


class SlowEngine:
    """Generates "w0 w1 w2 ..." for all its jobs at once, one word per step of
    MLXQ_TEST_STEP_S seconds (default 0.1), max_tokens words (default 20); it checks
    cancellations and deadlines between steps like the MLX engine."""

    context_length = None

    def __init__(self, settings: Settings, emit) -> None:
        self.model_id = settings.model
        self._emit = emit
        self._step_s = float(os.environ.get("MLXQ_TEST_STEP_S", "0.1"))
        self._jobs: dict[str, tuple[EngineRequest, list[str]]] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.peak_batch_size = 0
        self.generated_tokens = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def prepare(self, job_id: str, request: GenerationRequest, timeout_s: float) -> EngineRequest:
        max_tokens = request.max_tokens or 20
        return EngineRequest(job_id, request, [[]], [max_tokens], time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        with self._lock:
            self._jobs[request.job_id] = (request, [])
            self.peak_batch_size = max(self.peak_batch_size, len(self._jobs))

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def prefix_cache_report(self) -> PrefixCacheReport:
        """It keeps no cache, but says it does, so that workers claim the conversations they
        answer and the routing tests can run without MLX."""
        return PrefixCacheReport(0, 0, 0)

    def _run(self) -> None:
        while not self._stopping.is_set():
            time.sleep(self._step_s)
            with self._lock:
                jobs = list(self._jobs.items())
                cancelled, self._cancelled = self._cancelled, set()
            for job_id, (request, words) in jobs:
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
        with self._lock:
            del self._jobs[job_id]
        self._emit(output)


class TinyContextEngine:
    """The echo engine with a 64-token context window, one token per whitespace-separated word:
    it fits max_tokens with worker.prompt.fit_max_tokens like the MLX engine, so a long prompt
    (or a max_tokens that does not fit beside it) fails with context_length_exceeded."""

    context_length = 64

    def __init__(self, settings: Settings, emit) -> None:
        from worker.echo_engine import EchoEngine

        self.model_id = settings.model
        self._echo = EchoEngine(settings, emit)
        self._cap = settings.max_tokens_cap

    def prepare(self, job_id: str, request: GenerationRequest, timeout_s: float) -> EngineRequest:
        import dataclasses

        from worker.prompt import fit_max_tokens

        prepared = self._echo.prepare(job_id, request, timeout_s)
        words = len(prepared.payload)  # the echo engine keeps the prompt's words here
        max_tokens = fit_max_tokens(request.max_tokens, words, self.context_length, self._cap)
        return dataclasses.replace(prepared, max_tokens=[max_tokens])

    def __getattr__(self, name: str):
        return getattr(self._echo, name)  # submit, cancel, start, stop and the counters
