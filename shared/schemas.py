"""What travels through Redis: the job payload and the events a worker sends back."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.errors import ErrorCode

JSONScalar = str | int | float | bool | None

MAX_STOP_SEQUENCES = 4
"""OpenAI's limit on stop sequences per request."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(_Strict):
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**64 - 1)  # MLX's random keys take uint64


class GenerationRequest(_Strict):
    """One generation job, as the API enqueues it and the worker reads it.

    Exactly one of ``messages`` (chat template applied) or ``prompt`` (raw text) is set.
    ``max_tokens`` None means: until the model stops, bounded by its context and the cap.
    """

    request_id: str
    model: str
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    sampling: SamplingParams = SamplingParams()
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    """Strings that end generation; the one found is not part of the answer."""
    chat_template_kwargs: dict[str, JSONScalar] = Field(default_factory=dict)
    """Extra template variables, e.g. {"enable_thinking": false}."""
    stream: bool = False
    deadline: float = Field(description="Unix time after which the job must not start.")


class StartedEvent(_Strict):
    type: Literal["started"] = "started"
    seq: int
    worker: str


class TokenEvent(_Strict):
    type: Literal["token"] = "token"
    seq: int
    text: str


class DoneEvent(_Strict):
    type: Literal["done"] = "done"
    seq: int
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


class ErrorEvent(_Strict):
    type: Literal["error"] = "error"
    seq: int
    code: ErrorCode
    message: str


JobEvent = Annotated[
    StartedEvent | TokenEvent | DoneEvent | ErrorEvent, Field(discriminator="type")
]

job_event_adapter: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)
