"""OpenAI's response objects: built from a job's events, and documented for the schema.

Chat completions and text completions differ in how a choice looks (a message or a text, and
two shapes of logprobs), so each has a ``Renderer`` that the answer and the stream share.
"""

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.schemas import Choice, DoneEvent, TokenEvent, TokenLogprob, ToolCall


def usage(done: DoneEvent) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


class ResponseHeader:
    """id, created and model: the same on every chunk of one response."""

    def __init__(self, prefix: str, request_id: str, model: str) -> None:
        self.id = f"{prefix}-{request_id}"
        self.created = int(time.time())
        self.model = model

    def fields(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [call.model_dump(mode="json") for call in calls]


class ChatRenderer:
    """Choices of ``chat.completion`` and deltas of ``chat.completion.chunk``."""

    answer_object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def __init__(self, n: int) -> None:
        self._n = n
        self._calls_sent: dict[int, int] = {}

    def choice(self, choice: Choice) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": choice.text}
        if choice.tool_calls:
            message["tool_calls"] = _tool_calls(choice.tool_calls)
            message["content"] = choice.text or None
        if choice.reasoning is not None:
            message["reasoning_content"] = choice.reasoning
        return {
            "index": choice.index,
            "message": message,
            "logprobs": _chat_logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason,
        }

    def opening(self) -> list[dict[str, Any]]:
        delta = {"role": "assistant", "content": ""}
        return [
            {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
            for i in range(self._n)
        ]

    def piece(self, event: TokenEvent) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if event.channel == "reasoning":
            delta["reasoning_content"] = event.text
        elif event.text:
            delta["content"] = event.text
        if event.tool_calls:
            first = self._calls_sent.get(event.index, 0)
            self._calls_sent[event.index] = first + len(event.tool_calls)
            delta["tool_calls"] = [
                {"index": first + k, **call} for k, call in enumerate(_tool_calls(event.tool_calls))
            ]
        return {
            "index": event.index,
            "delta": delta,
            "logprobs": _chat_logprobs(event.logprobs),
            "finish_reason": None,
        }

    def ending(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "delta": {},
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }


class CompletionRenderer:
    """Choices of ``text_completion``, whole or in pieces."""

    answer_object = chunk_object = "text_completion"

    def choice(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "text": choice.text,
            "logprobs": _legacy_logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason,
        }

    def opening(self) -> list[dict[str, Any]]:
        return []

    def piece(self, event: TokenEvent) -> dict[str, Any]:
        return {
            "index": event.index,
            "text": event.text,
            "logprobs": _legacy_logprobs(event.logprobs),
            "finish_reason": None,
        }

    def ending(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "text": "",
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }


Renderer = ChatRenderer | CompletionRenderer


def answer(header: ResponseHeader, renderer: Renderer, done: DoneEvent) -> dict[str, Any]:
    return {
        **header.fields(renderer.answer_object),
        "choices": [renderer.choice(choice) for choice in done.choices],
        "usage": usage(done),
    }


def _chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    return {"content": [entry.model_dump(mode="json") for entry in logprobs], "refusal": None}


def _legacy_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """/v1/completions' older shape: parallel lists, alternatives as {token: logprob}."""
    if logprobs is None:
        return None
    offsets, offset = [], 0
    for entry in logprobs:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in logprobs],
        "token_logprobs": [entry.logprob for entry in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in entry.top_logprobs} for entry in logprobs],
        "text_offset": offsets,
    }


# -- documentation (the OpenAPI schema; schemathesis checks answers against it) -----------


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    partial_content: str | None = Field(
        None, description="mlxq: text generated before a deadline cut the request off."
    )


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens served from the prefix cache.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None
    refusal: None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason


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
