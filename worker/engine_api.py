"""The contract between the RQ side of a worker and a generation engine.

Every engine (MLX, echo, a plug-in named by MLXQ_ENGINE=module:Class) is built the same way,
``EngineClass(settings, emit)``, and answers through ``emit`` from its own thread. The RQ side
calls ``prepare`` (on the main thread: validation, tokenization), then ``submit`` and, when a
client goes away, ``cancel``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.errors import MlxqError
from shared.schemas import GenerationRequest
from shared.settings import Settings


@dataclass(frozen=True)
class EngineRequest:
    job_id: str
    request: GenerationRequest
    prompt_tokens: list[int]
    max_tokens: int
    timeout_at: float
    """time.monotonic() after which the engine stops generating (the job timeout)."""
    payload: Any = field(default=None, compare=False)
    """Engine-specific extras (the echo engine keeps its text here)."""


@dataclass(frozen=True)
class TokenOutput:
    """A piece of text for a streaming request."""

    job_id: str
    text: str


@dataclass(frozen=True)
class Finished:
    job_id: str
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    job_id: str
    error: MlxqError


EngineOutput = TokenOutput | Finished | Failed
Emit = Callable[[EngineOutput], None]


class Engine(Protocol):
    model_id: str
    context_length: int | None

    def prepare(self, job_id: str, request: GenerationRequest, timeout_s: float) -> EngineRequest:
        """Validate and tokenize; raises MlxqError for requests that cannot run."""
        ...

    def submit(self, request: EngineRequest) -> None: ...

    def cancel(self, job_id: str) -> None:
        """Stop generating for a job (its client went away); it ends as Failed(Cancelled)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def peak_batch_size(self) -> int: ...

    @property
    def generated_tokens(self) -> int:
        """Tokens generated since the engine started (for the tokens/s the worker reports)."""
        ...


EngineFactory = Callable[[Settings, Emit], Engine]
"""What MLXQ_ENGINE names: a class (or function) taking the settings and the emit callback."""
