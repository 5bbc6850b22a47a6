"""The OpenAI request bodies mlxq accepts, and the response objects it returns.

Unknown request fields are ignored, as OpenAI clients send many optional ones; fields mlxq
cannot honour (n > 1, tools, logprobs, echo...) are refused rather than silently ignored.
"""

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticSerializationError

from shared.schemas import MAX_STOP_SEQUENCES, DoneEvent, JSONScalar

MAX_MESSAGES = 512
"""More messages than any real conversation; bounds the work one request can ask for."""


class _Request(BaseModel):
    # strict: JSON types as the schema says them ("max_tokens": true or "5" is no integer)
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class MessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(
        None,
        ge=0,
        le=2**64 - 1,
        description="Reproducible sampling; an unsigned 64-bit integer (MLX's random key).",
    )
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    logprobs: bool | int | None = None
    timeout: float | None = Field(
        None, gt=0, le=86400, description="mlxq: seconds until the request's deadline."
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | int | None) -> None:
        if logprobs:
            raise ValueError("logprobs are not supported")
        return None

    @model_validator(mode="after")
    def _encodable(self) -> "_Sampling":
        # A JSON "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot encode: such
        # text can be neither tokenized nor sent back, so it is refused here, before a job.
        try:
            self.model_dump_json()
        except PydanticSerializationError:
            raise ValueError(
                "text must be valid Unicode: it contains an unpaired surrogate "
                "(a \\ud800-\\udfff escape without its pair)"
            ) from None
        return self

    @property
    def stops(self) -> list[str]:
        return self.stop  # type: ignore[return-value]  # normalized by _stop_list

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    chat_template_kwargs: dict[str, JSONScalar] = Field(default_factory=dict)
    tools: list[dict] | None = None

    @model_validator(mode="after")
    def _no_tools(self) -> "ChatCompletionRequest":
        if self.tools:
            raise ValueError("tools are not supported")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @model_validator(mode="after")
    def _one_plain_prompt(self) -> "CompletionRequest":
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt must be a string or a list of exactly one string")
        if self.echo or self.suffix:
            raise ValueError("echo and suffix are not supported")
        return self

    @property
    def prompt_text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt


# -- responses (documentation: the routes build these as dicts) ---------------------------


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    workers: int = Field(description="mlxq: live workers serving the model.")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


SSE_RESPONSE = {
    "description": 'The completion; with "stream": true, Server-Sent Events ending with '
    "`data: [DONE]`.",
    "content": {
        "text/event-stream": {
            "schema": {  # one event: its data is a JSON chunk, an error, or [DONE]
                "type": "object",
                "required": ["data"],
                "properties": {"event": {"const": "message"}, "data": {"type": "string"}},
            }
        }
    },
}
ERROR_STATUSES = (400, 401, 404, 413, 429, 500, 502, 503, 504)
"""What a /v1 POST can answer besides 200: invalid input (400, never 422), the API key, an
unknown model, the body limit, a full queue, and the failures of a job."""


def usage(done: DoneEvent) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


class ResponseHeader:
    """id, created and model: the same on every chunk of one response."""

    def __init__(self, prefix: str, request_id: str, model: str) -> None:
        self.id = f"{prefix}-{request_id}"
        self.created = int(time.time())
        self.model = model

    def fields(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}
