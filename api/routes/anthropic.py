"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

A thin translation onto the job path every route shares: the body becomes a
``GenerationRequest`` (api/anthropic_schemas.py), the job's answer an Anthropic message, its
events Anthropic's named SSE events. Errors come in Anthropic's shape from api/errors.py.

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

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.anthropic_schemas import (
    ANTHROPIC_DEFAULT_TEMPERATURE,
    STREAM_EVENTS,
    AnthropicError,
    CountTokensRequest,
    MessageOut,
    MessagesRequest,
    PromptRequest,
    StopReason,
    TextBlockOut,
    TokenCount,
    ToolIn,
    ToolUseBlockOut,
    UsageOut,
)
from api.deps import RedisDep, RunnerDep, SettingsDep
from api.disconnect import unless_disconnected
from api.errors import error_body
from api.fleet import check_model
from api.jobs import KEEPALIVE
from api.openai_responses import ERROR_STATUSES
from api.requests import generation_request
from api.respond import WORKER_HEADER, respond
from api.sse import JobStream, json_frame
from shared.errors import MlxqError
from shared.schemas import (
    DoneEvent,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
    ToolCall,
    ToolDefinition,
    ToolFunction,
)
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["anthropic"])

_ERRORS: dict[int | str, dict] = {
    **{status: {"model": AnthropicError} for status in ERROR_STATUSES},
    # Every 4xx is Anthropic's error body (invalid input is a 400, never FastAPI's 422; a
    # documented range also keeps FastAPI from documenting its 422 here).
    "4XX": {"model": AnthropicError, "description": "Anthropic's error body."},
}
_SSE = {
    "text/event-stream": {
        "schema": {  # one event: a name and its JSON data
            "type": "object",
            "required": ["data"],
            "properties": {"event": {"enum": list(STREAM_EVENTS)}, "data": {"type": "string"}},
        }
    }
}
_MESSAGE_RESPONSES: dict[int | str, dict] = {
    200: {
        "model": MessageOut,
        "description": 'The message; with "stream": true, Anthropic\'s named Server-Sent '
        "Events, from message_start to message_stop.",
        "content": _SSE,
    },
    **_ERRORS,
}
_COUNT_RESPONSES: dict[int | str, dict] = {200: {"model": TokenCount}, **_ERRORS}

_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
}
PING_FRAME = json_frame({"type": "ping"}, "ping")
"""Anthropic's keep-alive (its clients skip it); sent instead of SSE comments."""


@router.post("/messages", response_model=None, responses=_MESSAGE_RESPONSES)
async def messages(
    body: MessagesRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    await check_model(redis, settings, body.model)
    temperature = body.temperature
    if temperature is None:
        temperature = ANTHROPIC_DEFAULT_TEMPERATURE
    if body.top_p == 0.0:  # keeps only the likeliest token: greedy
        temperature = 0.0
    request = _request(
        settings,
        body,
        max_tokens=body.max_tokens,
        sampling=SamplingParams(
            temperature=temperature, top_p=body.top_p or 1.0, top_k=body.top_k or 0
        ),
        stop=body.stop_sequences,
        stream=bool(body.stream),
    )
    message_id = f"msg_{request.request_id}"

    def whole(done: DoneEvent) -> MessageOut:
        return _message(message_id, body.model, done)

    def frames(stream: JobStream) -> AsyncIterator[str]:
        return message_events(stream, message_id, body.model, http_request.url.path)

    return await respond(http_request, runner, request, settings, answer=whole, frames=frames)


@router.post("/messages/count_tokens", response_model=None, responses=_COUNT_RESPONSES)
async def count_tokens(
    body: CountTokensRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    """The prompt's length in tokens, as the model's tokenizer and chat template make it.

    The API has no tokenizer (it never imports MLX), so this runs the prompt as a greedy
    one-token generation on a worker and reports its prompt tokens. Its cost is that of a
    request: a place in the queue and the prompt's prefill (then kept in the worker's prefix
    cache, so the request that follows with the same prompt prefills little)."""
    await check_model(redis, settings, body.model)
    request = _request(settings, body, max_tokens=1, sampling=SamplingParams(temperature=0.0))
    done = await unless_disconnected(http_request, runner.run(request))
    if isinstance(done, Response):
        return done
    headers = {WORKER_HEADER: done.worker} if done.worker else None
    return JSONResponse(TokenCount(input_tokens=done.prompt_tokens).model_dump(), headers=headers)


def _request(settings: Settings, body: PromptRequest, **fields: Any) -> GenerationRequest:
    return generation_request(
        settings,
        model=body.model,
        messages=body.chat_messages(),
        tools=[_tool(tool) for tool in body.tools or []] or None,
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        **fields,
    )


def _tool(tool: ToolIn) -> ToolDefinition:
    return ToolDefinition(
        function=ToolFunction(
            name=tool.name,
            description=tool.description,
            parameters=tool.input_schema,
            strict=tool.strict,
        )
    )


def _usage(done: DoneEvent) -> UsageOut:
    return UsageOut(
        input_tokens=done.prompt_tokens - done.cached_tokens,
        output_tokens=done.completion_tokens,
        cache_read_input_tokens=done.cached_tokens,
    )


def _tool_use(call: ToolCall) -> ToolUseBlockOut:
    """The worker's calls carry their arguments as a JSON object's text (always an object:
    worker/tools.py normalizes them)."""
    return ToolUseBlockOut(
        id=call.id, name=call.function.name, input=json.loads(call.function.arguments)
    )


def _message(message_id: str, model: str, done: DoneEvent) -> MessageOut:
    choice = done.choices[0]
    content: list[TextBlockOut | ToolUseBlockOut] = []
    if choice.text:
        content.append(TextBlockOut(text=choice.text))
    content += [_tool_use(call) for call in choice.tool_calls or []]
    return MessageOut(
        id=message_id,
        model=model,
        content=content,
        stop_reason=_STOP_REASONS[choice.finish_reason],
        usage=_usage(done),
    )


def _event(name: str, **fields: Any) -> str:
    return json_frame({"type": name, **fields}, name)


class _Blocks:
    """The content blocks of a streamed message: a text block opened by the first text
    and closed by a tool call (a tool_use block is sent whole: start, its input's JSON in
    one delta, stop) or by the end. Block indexes count up from 0, as in the answer."""

    def __init__(self) -> None:
        self._count = 0
        self._text_open = False
        self._calls_sent: set[str] = set()

    def text(self, text: str) -> list[str]:
        frames = []
        if not self._text_open:
            self._text_open = True
            block = {"type": "text", "text": ""}
            frames.append(_event("content_block_start", index=self._count, content_block=block))
        delta = {"type": "text_delta", "text": text}
        frames.append(_event("content_block_delta", index=self._count, delta=delta))
        return frames

    def tool_calls(self, calls: list[ToolCall]) -> list[str]:
        new = [call for call in calls if call.id not in self._calls_sent]
        frames = self.close() if new else []
        for call in new:
            self._calls_sent.add(call.id)
            block = {"type": "tool_use", "id": call.id, "name": call.function.name, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": call.function.arguments}
            frames += [
                _event("content_block_start", index=self._count, content_block=block),
                _event("content_block_delta", index=self._count, delta=delta),
                _event("content_block_stop", index=self._count),
            ]
            self._count += 1
        return frames

    def close(self) -> list[str]:
        if not self._text_open:
            return []
        self._text_open = False
        self._count += 1
        return [_event("content_block_stop", index=self._count - 1)]


async def message_events(
    stream: JobStream, message_id: str, model: str, path: str
) -> AsyncIterator[str]:
    """message_start, the content blocks, message_delta (stop reason and usage),
    message_stop; ``event: ping`` while the job waits; an error is the stream's last event.
    The prompt's size is known only at the end: message_start counts 0 input tokens and
    message_delta the real ones (Anthropic's clients take the later count)."""
    blocks = _Blocks()
    try:
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        yield _event("message_start", message=start)
        yield PING_FRAME
        async for item in stream:
            if item is KEEPALIVE:
                yield PING_FRAME
            elif isinstance(item, TokenEvent) and item.index == 0:
                if item.text and item.channel == "content":
                    for frame in blocks.text(item.text):
                        yield frame
                for frame in blocks.tool_calls(item.tool_calls or []):
                    yield frame
            elif isinstance(item, DoneEvent):
                choice = item.choices[0]
                for frame in [*blocks.tool_calls(choice.tool_calls or []), *blocks.close()]:
                    yield frame
                delta = {"stop_reason": _STOP_REASONS[choice.finish_reason], "stop_sequence": None}
                yield _event("message_delta", delta=delta, usage=_usage(item).model_dump())
                yield _event("message_stop")
    except MlxqError as exc:  # after the response began, an error is the stream's last event
        yield json_frame(error_body(path, exc.http_status, str(exc.code), exc.message), "error")
    finally:
        await stream.aclose()
