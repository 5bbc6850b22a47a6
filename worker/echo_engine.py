"""A zero-cost engine: answers with the question itself, at once, without a model.

It exists to measure what mlxq itself adds per request (bench/overhead) and to test the
queue plumbing without MLX; select it with MLXQ_ENGINE=echo.
"""

import time
from typing import Literal

from shared.errors import InvalidRequest
from shared.schemas import GenerationRequest, JobRequest
from shared.settings import Settings
from worker.engine_api import (
    Emit,
    Engine,
    EngineRequest,
    Finished,
    TokenOutput,
    refuse_other_kind,
)


class EchoEngine(Engine):
    """Answers on the preparer thread that submits (it has no thread of its own)."""

    peak_batch_size = 1

    def __init__(self, settings: Settings, emit: Emit) -> None:
        self.model_id = settings.model
        self._emit = emit
        self.generated_tokens = 0

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        request = refuse_other_kind(request, self.model_id)
        if request.suffix is not None:
            raise InvalidRequest(
                f"suffix: the model {self.model_id!r} (the echo engine) cannot fill in the "
                "middle; fill-in-the-middle needs a model with FIM tokens."
            )
        words = _last_text(request).split()
        max_tokens = request.max_tokens or len(words)
        deadline = time.monotonic() + timeout_s
        return EngineRequest(job_id, request, [[]], [max_tokens], deadline, payload=words)

    def submit(self, request: EngineRequest) -> None:
        words = request.payload[: request.max_tokens[0]]
        if request.request.stream:
            for i, word in enumerate(words):
                self._emit(TokenOutput(request.job_id, word if i == 0 else " " + word))
        self.generated_tokens += len(words)
        reason: Literal["stop", "length"] = (
            "length" if len(words) < len(request.payload) else "stop"
        )
        self._emit(
            Finished.single(
                request.job_id, " ".join(words), reason, len(request.payload), len(words)
            )
        )

    def cancel(self, job_id: str) -> None:
        pass  # answers at once: nothing is ever running


def _last_text(request: GenerationRequest) -> str:
    """The text the echo engine answers with: the last message, or the first prompt."""
    if request.prompts:
        prompt = request.prompts[0]
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    return request.messages[-1].content if request.messages else ""
