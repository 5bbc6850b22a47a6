"""Anthropic's answers, from a job's events: a message, its named stream events, its errors.

How the answer maps:

- ``stop_reason``: the job's ``stop`` is ``end_turn`` (the worker does not say whether a stop
  sequence or the end of the answer ended it, so ``stop_sequence`` stays null), ``length``
  is ``max_tokens``, ``tool_calls`` is ``tool_use``.
- ``usage.input_tokens`` counts the prompt tokens not read from the prefix cache and
  ``cache_read_input_tokens`` those read from it (their sum is the prompt, as Anthropic
  counts); nothing is ever written to a cache on request, so ``cache_creation_input_tokens``
  is 0.
- A reasoning model's reasoning is left out (Anthropic's extended thinking is refused).
"""

from collections.abc import Iterable
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.core.dialect import validation_summary
from api.core.frames import StreamRenderer, sse_json
from api.core.tool_arguments import arguments_object
from api.dialects.anthropic.answers import (
    MessageOut,
    StopReason,
    TextBlockOut,
    ToolUseBlockOut,
    UsageOut,
)
from shared.errors import ErrorCode, MlxqError
from shared.schemas import DoneEvent, StartedEvent, TokenEvent, ToolCall

STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
}
PING_FRAME = sse_json({"type": "ping"}, "ping")
"""Anthropic's keep-alive (its clients skip it); sent instead of SSE comments."""
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def usage(done: DoneEvent) -> UsageOut:
    return UsageOut(
        input_tokens=done.prompt_tokens - done.cached_tokens,
        output_tokens=done.completion_tokens,
        cache_read_input_tokens=done.cached_tokens,
    )


def _tool_use(call: ToolCall) -> ToolUseBlockOut:
    """The worker's calls carry their arguments as a JSON object's text (worker/tools.py
    normalizes parsed ones); a call cut short by max_tokens has as much of its input as
    closes into an object."""
    return ToolUseBlockOut(
        id=call.id, name=call.function.name, input=arguments_object(call.function.arguments) or {}
    )


def message(message_id: str, model: str, done: DoneEvent) -> MessageOut:
    """The whole message of a request that does not stream."""
    choice = done.choices[0]
    content: list[TextBlockOut | ToolUseBlockOut] = []
    if choice.text:
        content.append(TextBlockOut(text=choice.text))
    content += [_tool_use(call) for call in choice.tool_calls or []]
    return MessageOut(
        id=message_id,
        model=model,
        content=content,
        stop_reason=STOP_REASONS[choice.finish_reason],
        usage=usage(done),
    )


def _event(name: str, **fields: Any) -> str:
    return sse_json({"type": name, **fields}, name)


class _Blocks:
    """The content blocks of a streamed message, indexed from 0 as in the answer: a text
    block opened by the first text, a tool_use block by each call's first piece, its input
    streamed as ``input_json_delta``s (a forced call's as it is decoded); the open block
    is closed by the next one or by the end."""

    def __init__(self) -> None:
        self._count = 0
        self._open: str | None = None  # "text", or the id ("call_...") of the open call
        self._calls_sent: set[str] = set()

    def text(self, text: str) -> list[str]:
        frames = []
        if self._open != "text":
            frames = self.close()
            self._open = "text"
            block = {"type": "text", "text": ""}
            frames.append(_event("content_block_start", index=self._count, content_block=block))
        delta = {"type": "text_delta", "text": text}
        frames.append(_event("content_block_delta", index=self._count, delta=delta))
        return frames

    def tool_calls(self, pieces: list[ToolCall]) -> list[str]:
        frames = []
        for piece in pieces:
            if piece.id != self._open:
                frames += self.close()
                self._open = piece.id
                self._calls_sent.add(piece.id)
                block = {
                    "type": "tool_use",
                    "id": piece.id,
                    "name": piece.function.name,
                    "input": {},
                }
                frames.append(_event("content_block_start", index=self._count, content_block=block))
            if piece.function.arguments:
                delta = {"type": "input_json_delta", "partial_json": piece.function.arguments}
                frames.append(_event("content_block_delta", index=self._count, delta=delta))
        return frames

    def unsent(self, calls: list[ToolCall]) -> list[ToolCall]:
        """The answer's calls that no piece announced (the final event has them whole)."""
        return [call for call in calls if call.id not in self._calls_sent]

    def close(self) -> list[str]:
        if self._open is None:
            return []
        self._open = None
        self._count += 1
        return [_event("content_block_stop", index=self._count - 1)]


class MessageStream(StreamRenderer):
    """message_start, the content blocks, message_delta (stop reason and usage),
    message_stop; ``event: ping`` while the job waits; an error is the stream's last event.

    message_start goes out when a worker accepts the job, with the prompt's token count as
    the worker tokenized it (``StartedEvent.prompt_tokens``). Which of them come from the
    prefix cache is known only at the end: message_delta then splits them into
    ``input_tokens`` and ``cache_read_input_tokens`` (Anthropic's clients take the later
    count). A job still queued when the first keep-alive is due starts the message with 0
    input tokens, so that message_start always comes first."""

    def __init__(self, message_id: str, model: str) -> None:
        self._message_id = message_id
        self._model = model
        self._blocks = _Blocks()
        self._started = False

    def _message_start(self, input_tokens: int) -> list[str]:
        self._started = True
        start: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return [_event("message_start", message=start), PING_FRAME]

    def started(self, event: StartedEvent) -> Iterable[str]:
        return [] if self._started else self._message_start(event.prompt_tokens or 0)

    def keepalive(self) -> Iterable[str]:
        return [PING_FRAME] if self._started else self._message_start(0)

    def token(self, event: TokenEvent) -> Iterable[str]:
        if event.index != 0:
            return []
        frames = [] if self._started else self._message_start(0)
        if event.text and event.channel == "content":
            frames += self._blocks.text(event.text)
        return frames + self._blocks.tool_calls(event.tool_calls or [])

    def done(self, event: DoneEvent) -> Iterable[str]:
        choice = event.choices[0]
        calls = self._blocks.unsent(choice.tool_calls or [])
        frames = [] if self._started else self._message_start(event.prompt_tokens)
        frames += [*self._blocks.tool_calls(calls), *self._blocks.close()]
        delta = {"stop_reason": STOP_REASONS[choice.finish_reason], "stop_sequence": None}
        frames.append(_event("message_delta", delta=delta, usage=usage(event).model_dump()))
        frames.append(_event("message_stop"))
        return frames

    def error(self, exc: MlxqError) -> Iterable[str]:
        body = error_body(exc.http_status, str(exc.code), exc.message)
        return [sse_json(body, "error")]


def error_body(status: int, code: str, message: str, partial: str | None = None) -> dict:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}``."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def invalid_input(exc: RequestValidationError) -> Response:
    body = error_body(400, ErrorCode.INVALID_REQUEST, validation_summary(exc))
    return JSONResponse(body, status_code=400)
