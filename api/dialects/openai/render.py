"""OpenAI's answers, from a job's events: whole, as stream chunks, and as errors.

Chat completions and text completions differ in how a choice looks (a message or a text, and
two shapes of logprobs), so each has a ``Renderer`` that the answer and the stream share;
``OpenAIStream`` drives one as chunks ending with ``data: [DONE]``.
"""

import time
from collections.abc import Iterable
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.core.frames import StreamRenderer, sse_frame, sse_json
from shared.errors import ErrorCode, MlxqError
from shared.schemas import Choice, DoneEvent, PromptLogprob, TokenEvent, TokenLogprob, ToolCall


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
        self._call_index: dict[int, dict[str, int]] = {}
        """Per choice: each call's id -> its index among the choice's calls."""

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
            delta["tool_calls"] = [self._call_delta(event.index, c) for c in event.tool_calls]
        return {
            "index": event.index,
            "delta": delta,
            "logprobs": _chat_logprobs(event.logprobs),
            "finish_reason": None,
        }

    def _call_delta(self, choice: int, call: ToolCall) -> dict[str, Any]:
        """OpenAI's delta of a call's piece: its first with id, type and name; later ones
        (more of its arguments) with the index alone."""
        known = self._call_index.setdefault(choice, {})
        if call.id in known:
            return {"index": known[call.id], "function": {"arguments": call.function.arguments}}
        known[call.id] = len(known)
        return {"index": known[call.id], **call.model_dump(mode="json")}

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
            "logprobs": _legacy_logprobs(choice.prompt_logprobs, choice.logprobs),
            "finish_reason": choice.finish_reason,
        }

    def opening(self) -> list[dict[str, Any]]:
        return []

    def piece(self, event: TokenEvent) -> dict[str, Any]:
        return {
            "index": event.index,
            "text": event.text,
            "logprobs": _legacy_logprobs(event.prompt_logprobs, event.logprobs),
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


def _legacy_logprobs(
    prompt: list[PromptLogprob] | None, logprobs: list[TokenLogprob] | None
) -> dict[str, Any] | None:
    """/v1/completions' older shape: parallel lists, alternatives as {token: logprob}. With
    ``echo``, the prompt's tokens come first, the first of them with null (it has no
    context), as OpenAI and vLLM write it."""
    if prompt is None and logprobs is None:
        return None
    entries: list[PromptLogprob | TokenLogprob] = [*(prompt or []), *(logprobs or [])]
    offsets, offset = [], 0
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [
            None if entry.top_logprobs is None else {t.token: t.logprob for t in entry.top_logprobs}
            for entry in entries
        ],
        "text_offset": offsets,
    }


class OpenAIStream(StreamRenderer):
    """``chat.completion.chunk`` / ``text_completion`` chunks, then ``data: [DONE]``; an
    error after the response began is the stream's last event."""

    def __init__(self, header: ResponseHeader, renderer: Renderer, include_usage: bool) -> None:
        self._header = header
        self._renderer = renderer
        self._include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]]) -> str:
        return sse_json({**self._header.fields(self._renderer.chunk_object), "choices": choices})

    def opening(self) -> Iterable[str]:
        opening = self._renderer.opening()
        return [self._chunk(opening)] if opening else []

    def token(self, event: TokenEvent) -> Iterable[str]:
        return [self._chunk([self._renderer.piece(event)])]

    def done(self, event: DoneEvent) -> Iterable[str]:
        frames = [self._chunk([self._renderer.ending(choice) for choice in event.choices])]
        if self._include_usage:
            fields = self._header.fields(self._renderer.chunk_object)
            frames.append(sse_json({**fields, "choices": [], "usage": usage(event)}))
        return frames

    def closing(self) -> Iterable[str]:
        return [sse_frame("[DONE]")]

    def error(self, exc: MlxqError) -> Iterable[str]:
        return [sse_json(error_for(exc))]


# -- errors -----------------------------------------------------------------------------------


def error_body(status: int, code: str, message: str, partial: str | None = None) -> dict:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``, with the text
    generated before a deadline as ``partial_content``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    param = "model" if code == ErrorCode.MODEL_NOT_FOUND else None
    body: dict[str, Any] = {"message": message, "type": kind, "param": param, "code": code}
    if partial is not None:
        body["partial_content"] = partial
    return {"error": body}


def error_for(exc: MlxqError) -> dict:
    return error_body(exc.http_status, str(exc.code), exc.message, exc.partial)


def invalid_input(exc: RequestValidationError) -> Response:
    """A 400 naming every invalid field (``param``: the first), never FastAPI's 422."""
    problems = exc.errors()
    first = problems[0] if problems else {}
    param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
        for e in problems
    )
    body = error_body(400, ErrorCode.INVALID_REQUEST, message)
    body["error"]["param"] = param
    return JSONResponse(body, status_code=400)
