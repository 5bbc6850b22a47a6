"""Engines for narrow tests of the worker's plumbing (selected with MLXQ_ENGINE=module:Class)."""

import time

from shared.errors import GenerationFailed
from shared.schemas import GenerationRequest
from shared.settings import Settings
from worker.engine_api import EngineRequest, Failed


class FailingEngine:
    """Accepts every request, then fails it the way a broken generation would."""

    context_length = None

    def __init__(self, settings: Settings, emit) -> None:
        self.model_id = settings.model
        self._emit = emit

    def prepare(self, job_id: str, request: GenerationRequest, timeout_s: float) -> EngineRequest:
        return EngineRequest(job_id, request, [], 1, time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        self._emit(Failed(request.job_id, GenerationFailed("Generation failed: out of unicorns")))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    active_count = 0
    peak_batch_size = 1
