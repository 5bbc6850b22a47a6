"""Ollama's answers, from a job's events: one JSON object, or newline-delimited JSON objects
the last of which has ``done: true`` (with Ollama's timings); errors as ``{"error": message}``
with the fields they name in Ollama's words."""

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.core.dialect import validation_summary
from api.core.frames import NdjsonRenderer, ndjson_line
from shared.errors import ErrorCode, MlxqError
from shared.schemas import DoneEvent, JobEvent, StartedEvent, TokenEvent, ToolCall

log = logging.getLogger(__name__)

_OLLAMA_NAMES = {"response_format": "format", "max_tokens": "num_predict"}
"""The worker's messages name GenerationRequest's fields; an Ollama client knows these."""


def in_ollama_terms(message: str) -> str:
    """A message with the fields it names in Ollama's words."""
    return re.sub(r"\b(response_format|max_tokens)\b", lambda m: _OLLAMA_NAMES[m.group(1)], message)


def error_body(status: int, code: str, message: str, partial: str | None = None) -> dict:
    """Ollama's ``{"error": message}``."""
    return {"error": in_ollama_terms(message)}


def invalid_input(exc: RequestValidationError) -> Response:
    body = error_body(400, ErrorCode.INVALID_REQUEST, validation_summary(exc))
    return JSONResponse(body, status_code=400)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Ollama's calls: arguments as an object, not JSON text."""
    return [
        {"function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
        for c in calls
    ]


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        log.warning("a tool call's arguments are not JSON: %.200r", text)
        return {}
    return value if isinstance(value, dict) else {"value": value}


@dataclass
class Clock:
    """Ollama's timings (nanoseconds) of one request, as the API sees its job's events."""

    received: int
    started: int | None = None
    first_token: int | None = None
    load_duration: int = 0
    """What the job waited for its model to load, as its worker measured it."""

    def see(self, event: JobEvent) -> None:
        now = time.perf_counter_ns()
        if isinstance(event, StartedEvent) and self.started is None:
            self.started = now
            self.load_duration = int(event.load_s * 1e9)
        elif isinstance(event, TokenEvent) and self.first_token is None:
            self.first_token = now

    def stats(self, done: DoneEvent) -> dict[str, Any]:
        """A stream splits prefill (until the first piece) from decoding; a non-streamed
        answer has no first piece to time, so its prompt_eval_duration is 0 and eval_duration
        counts the worker's whole time, prefill included."""
        now = time.perf_counter_ns()
        started = self.started or self.received
        decoding_from = self.first_token or started
        return {
            "total_duration": now - self.received,
            "load_duration": self.load_duration,
            "prompt_eval_count": done.prompt_tokens,
            "prompt_eval_duration": decoding_from - started,
            "eval_count": done.completion_tokens,
            "eval_duration": now - decoding_from,
        }


@dataclass
class Shape(ABC):
    """How one endpoint writes its pieces and its final object."""

    model: str

    def head(self, done: bool) -> dict[str, Any]:
        return {"model": self.model, "created_at": _now(), "done": done}

    @abstractmethod
    def body(
        self, content: str, thinking: str | None, calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        """The endpoint's own fields: a chat message, or a generated response."""

    def piece(self, event: TokenEvent) -> dict[str, Any] | None:
        reasoning = event.channel == "reasoning"
        if not (event.text or event.tool_calls or event.logprobs):
            return None
        line = {
            **self.head(False),
            **self.body(
                "" if reasoning else event.text, event.text if reasoning else None, event.tool_calls
            ),
        }
        if event.logprobs:
            line["logprobs"] = [lp.model_dump(mode="json") for lp in event.logprobs]
        return line

    def final(self, done: DoneEvent, clock: Clock, whole: bool) -> dict[str, Any]:
        """The last object: the whole answer when not streamed, else empty text."""
        choice = done.choices[0]
        if whole:
            body = self.body(choice.text, choice.reasoning or None, choice.tool_calls)
        else:
            body = self.body("", None, None)
        answer = {
            **self.head(True),
            **body,
            "done_reason": "length" if choice.finish_reason == "length" else "stop",
            **clock.stats(done),
        }
        if whole and choice.logprobs is not None:
            answer["logprobs"] = [lp.model_dump(mode="json") for lp in choice.logprobs]
        return answer

    def loaded(self, reason: str = "load") -> dict[str, Any]:
        """The answer to a request with nothing to answer (Ollama's way to load a model, or
        with keep_alive 0 to unload it)."""
        return {**self.head(True), **self.body("", None, None), "done_reason": reason}


class ChatShape(Shape):
    def body(
        self, content: str, thinking: str | None, calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = _tool_calls(calls)
        return {"message": message}


class GenerateShape(Shape):
    def body(
        self, content: str, thinking: str | None, calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"response": content}
        if thinking:
            answer["thinking"] = thinking
        return answer


class OllamaLines(NdjsonRenderer):
    """A streamed answer: a line per piece, then the final line with the timings; an error
    after the response began is the last line."""

    def __init__(self, shape: Shape, clock: Clock) -> None:
        self._shape = shape
        self._clock = clock

    def started(self, event: StartedEvent) -> Iterable[str]:
        self._clock.see(event)
        return ()

    def token(self, event: TokenEvent) -> Iterable[str]:
        self._clock.see(event)
        piece = self._shape.piece(event)
        return [ndjson_line(piece)] if piece is not None else []

    def done(self, event: DoneEvent) -> Iterable[str]:
        return [ndjson_line(self._shape.final(event, self._clock, whole=False))]

    def error(self, exc: MlxqError) -> Iterable[str]:
        return [ndjson_line(error_body(exc.http_status, str(exc.code), exc.message))]
