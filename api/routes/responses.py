"""``POST /v1/responses``: OpenAI's Responses API, stateless, streamed or not.

The request becomes the same internal GenerationRequest as a chat completion (instructions
first as the system message, input items as chat messages). The answer is a Response object
whose output items are the answer's reasoning (for reasoning models), its text (one
``message``) and its tool calls (``function_call`` items); streamed, it is built by OpenAI's
typed events (``response.created`` ... ``response.completed``, or ``response.incomplete``
when ``max_output_tokens`` cut the answer short), each with a ``sequence_number``.
"""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.errors import openai_error_for
from api.fleet import check_model
from api.jobs import KEEPALIVE
from api.openai_responses import ERROR_STATUSES, OpenAIError
from api.requests import OPENAI_DEFAULT_TEMPERATURE, generation_request, openai_sampling
from api.respond import respond
from api.responses_schemas import (
    OutputItem,
    ResponseObject,
    ResponseRequest,
    ResponsesFormatJsonSchema,
    ResponsesFormatText,
    ResponsesFunctionCallItem,
    ResponsesFunctionCallOut,
    ResponsesFunctionCallOutputItem,
    ResponsesFunctionTool,
    ResponsesIncompleteDetails,
    ResponsesInputTokensDetails,
    ResponsesMessageItem,
    ResponsesMessageOut,
    ResponsesOutputTextOut,
    ResponsesOutputTokensDetails,
    ResponsesReasoningOut,
    ResponsesReasoningTextOut,
    ResponseUsage,
)
from api.sse import KEEPALIVE_FRAME, JobStream, json_frame
from shared.errors import InvalidRequest, MlxqError
from shared.schemas import (
    ChatMessage,
    Choice,
    DoneEvent,
    FunctionCall,
    ResponseFormat,
    TokenEvent,
    ToolCall,
    ToolDefinition,
    ToolFunction,
)

router = APIRouter(prefix="/v1", tags=["openai"])

_SSE = {
    "description": 'The Response; with "stream": true, Server-Sent Events named as their '
    "data's type (response.created, response.output_text.delta, ..., response.completed).",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
            }
        }
    },
}
_RESPONSES: dict[int | str, dict] = {
    200: {"model": ResponseObject, **_SSE},
    **{status: {"model": OpenAIError} for status in ERROR_STATUSES},
}


@router.post("/responses", response_model=None, responses=_RESPONSES)
async def create_response(
    body: ResponseRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    await check_model(redis, settings, body.model)
    if body.max_output_tokens is not None and body.max_output_tokens > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_output_tokens={body.max_output_tokens} is above this server's limit of "
            f"{settings.max_tokens_cap} (MLXQ_MAX_TOKENS_CAP)."
        )
    request = generation_request(
        settings,
        model=body.model,
        timeout=body.timeout,
        messages=chat_messages(body),
        max_tokens=body.max_output_tokens,
        sampling=openai_sampling(body),
        response_format=_response_format(body),
        tools=[_tool(tool) for tool in body.tools or []] or None,
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        stream=bool(body.stream),
        chat_template_kwargs=body.chat_template_kwargs,
    )
    shape = ResponseShape(body, request.request_id)

    def frames(stream: JobStream) -> AsyncIterator[str]:
        return response_frames(stream, shape)

    return await respond(
        http_request, runner, request, settings, answer=shape.answer, frames=frames
    )


# -- the request, as the worker reads it ----------------------------------------------------


def chat_messages(body: ResponseRequest) -> list[ChatMessage]:
    """Instructions first (a system message), then the input items in order: "developer" is
    the system prompt, a run of function_call items is one assistant turn's tool calls (with
    the assistant message just before it), a function_call_output is a tool message.
    Reasoning items are not rendered."""
    turns: list[dict[str, Any]] = []
    if body.instructions is not None:
        turns.append({"role": "system", "content": body.instructions})
    items = body.input
    if isinstance(items, str):
        items = [ResponsesMessageItem(role="user", content=items)]
    for item in items:
        if isinstance(item, ResponsesMessageItem):
            role = "system" if item.role == "developer" else item.role
            turns.append({"role": role, "content": item.text()})
        elif isinstance(item, ResponsesFunctionCallItem):
            call = ToolCall(
                id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)
            )
            last = turns[-1] if turns else None
            if last is not None and last["role"] == "assistant":
                last["tool_calls"] = [*last.get("tool_calls", []), call]
            else:
                turns.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, ResponsesFunctionCallOutputItem):
            turns.append({"role": "tool", "content": item.text(), "tool_call_id": item.call_id})
    return [ChatMessage(**turn) for turn in turns]


def _response_format(body: ResponseRequest) -> ResponseFormat | None:
    fmt = body.text_format
    if isinstance(fmt, ResponsesFormatJsonSchema):
        spec = fmt.model_dump(by_alias=True, exclude={"type"})
        return ResponseFormat(type="json_schema", json_schema=spec)
    if isinstance(fmt, ResponsesFormatText):
        return None
    return ResponseFormat(type="json_object")


def _tool(tool: ResponsesFunctionTool) -> ToolDefinition:
    """A function tool in chat's shape (no parameters: any object)."""
    fields = tool.model_dump(exclude={"type"}, exclude_none=True)
    return ToolDefinition(function=ToolFunction.model_validate(fields))


# -- the answer ---------------------------------------------------------------------------


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _status(choice: Choice) -> Literal["completed", "incomplete"]:
    return "incomplete" if choice.finish_reason == "length" else "completed"


class ResponseShape:
    """What every Response of one request shares (id, creation time, the request's settings
    echoed back), and the finished Response from a job's DoneEvent."""

    def __init__(self, body: ResponseRequest, request_id: str) -> None:
        self.id = f"resp_{request_id}"
        self.created_at = int(time.time())
        temperature = body.temperature
        choice = body.tool_choice or "auto"
        self._echo: dict[str, Any] = {
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "temperature": OPENAI_DEFAULT_TEMPERATURE if temperature is None else temperature,
            "top_p": 1.0 if body.top_p is None else body.top_p,
            "text": {"format": body.text_format.model_dump(by_alias=True, exclude_none=True)},
            "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
            "tools": [tool.model_dump() for tool in body.tools or []],
            "user": body.user,
            "metadata": body.metadata or {},
        }

    def response(self, status: str, output: list[OutputItem] | None = None) -> ResponseObject:
        """The Response while it is generated (``response.created``, ``.in_progress``)."""
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            status=status,
            output=output or [],
            **self._echo,
        )

    def finished(self, done: DoneEvent, output: list[OutputItem]) -> ResponseObject:
        response = self.response(_status(done.choices[0]), output)
        response.completed_at = int(time.time())
        if response.status == "incomplete":
            response.incomplete_details = ResponsesIncompleteDetails(reason="max_output_tokens")
        response.usage = ResponseUsage(
            input_tokens=done.prompt_tokens,
            input_tokens_details=ResponsesInputTokensDetails(cached_tokens=done.cached_tokens),
            output_tokens=done.completion_tokens,
            output_tokens_details=ResponsesOutputTokensDetails(reasoning_tokens=0),
            total_tokens=done.prompt_tokens + done.completion_tokens,
        )
        return response

    def answer(self, done: DoneEvent) -> dict[str, Any]:
        """The whole Response of a request that does not stream."""
        choice = done.choices[0]
        output: list[OutputItem] = []
        if choice.reasoning is not None:
            output.append(
                ResponsesReasoningOut(
                    id=_item_id("rs"),
                    content=[ResponsesReasoningTextOut(text=choice.reasoning)],
                    status="completed",
                )
            )
        if choice.text or not choice.tool_calls:
            output.append(
                ResponsesMessageOut(
                    id=_item_id("msg"),
                    status=_status(choice),
                    content=[ResponsesOutputTextOut(text=choice.text)],
                )
            )
        output += [_function_call(call) for call in choice.tool_calls or []]
        return self.finished(done, output).model_dump(mode="json")


def _function_call(call: ToolCall, status: str = "completed") -> ResponsesFunctionCallOut:
    return ResponsesFunctionCallOut(
        id=_item_id("fc"),
        call_id=call.id,
        name=call.function.name,
        arguments=call.function.arguments,
        status=status,
    )


# -- streaming ----------------------------------------------------------------------------


class ResponseEvents:
    """A streamed Response: the typed events that open, fill and close its output items, in
    order, numbered from 0. One item is open at a time (a reasoning or a message item); a
    tool call closes it and is sent whole, as one item of its own."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.output: list[OutputItem] = []
        self._sequence = 0
        self._open: str | None = None  # "reasoning" or "message"
        self._open_id = ""
        self._open_text: list[str] = []
        self._sent: dict[str, list[str]] = {"reasoning": [], "message": []}
        self._calls_sent: set[str] = set()

    def event(self, kind: str, **payload: Any) -> str:
        frame = json_frame({"type": kind, "sequence_number": self._sequence, **payload}, kind)
        self._sequence += 1
        return frame

    def start(self) -> list[str]:
        response = self.shape.response("in_progress").model_dump(mode="json")
        return [
            self.event("response.created", response=response),
            self.event("response.in_progress", response=response),
        ]

    def piece(self, event: TokenEvent) -> list[str]:
        frames = self.text("reasoning" if event.channel == "reasoning" else "message", event.text)
        return frames + self.calls(event.tool_calls or [])

    def text(self, kind: str, delta: str) -> list[str]:
        if not delta:
            return []
        frames = [] if self._open == kind else self.close("completed") + self._open_item(kind)
        self._open_text.append(delta)
        self._sent[kind].append(delta)
        where = {"item_id": self._open_id, "output_index": len(self.output), "content_index": 0}
        if kind == "message":
            frames.append(
                self.event("response.output_text.delta", **where, delta=delta, logprobs=[])
            )
        else:
            frames.append(self.event("response.reasoning_text.delta", **where, delta=delta))
        return frames

    def _open_item(self, kind: str) -> list[str]:
        self._open, self._open_id, self._open_text = kind, _item_id(_PREFIX[kind]), []
        item: dict[str, Any] = {"type": kind, "id": self._open_id, "status": "in_progress"}
        if kind == "message":
            item |= {"role": "assistant", "content": []}
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            part["logprobs"] = []
        else:
            item |= {"summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        index = len(self.output)
        return [
            self.event("response.output_item.added", output_index=index, item=item),
            self.event(
                "response.content_part.added",
                item_id=self._open_id,
                output_index=index,
                content_index=0,
                part=part,
            ),
        ]

    def close(self, status: Literal["completed", "incomplete"]) -> list[str]:
        """Closes the open item, if any: its text's done events, then the item's."""
        if self._open is None:
            return []
        text = "".join(self._open_text)
        where = {"item_id": self._open_id, "output_index": len(self.output), "content_index": 0}
        item: OutputItem
        if self._open == "message":
            message = ResponsesOutputTextOut(text=text)
            item = ResponsesMessageOut(id=self._open_id, status=status, content=[message])
            done = self.event("response.output_text.done", **where, text=text, logprobs=[])
            part = message.model_dump(mode="json")
        else:
            reasoning = ResponsesReasoningTextOut(text=text)
            item = ResponsesReasoningOut(id=self._open_id, content=[reasoning], status="completed")
            done = self.event("response.reasoning_text.done", **where, text=text)
            part = reasoning.model_dump(mode="json")
        frames = [
            done,
            self.event("response.content_part.done", **where, part=part),
            self.event(
                "response.output_item.done",
                output_index=len(self.output),
                item=item.model_dump(mode="json"),
            ),
        ]
        self.output.append(item)
        self._open = None
        return frames

    def calls(self, calls: list[ToolCall]) -> list[str]:
        frames: list[str] = []
        for call in calls:
            if call.id in self._calls_sent:
                continue
            self._calls_sent.add(call.id)
            frames += self.close("completed")
            item = _function_call(call)
            index = len(self.output)
            where = {"item_id": item.id, "output_index": index}
            opened = item.model_copy(update={"arguments": "", "status": "in_progress"})
            frames += [
                self.event(
                    "response.output_item.added",
                    output_index=index,
                    item=opened.model_dump(mode="json"),
                ),
                self.event("response.function_call_arguments.delta", **where, delta=item.arguments),
                self.event(
                    "response.function_call_arguments.done",
                    **where,
                    name=item.name,
                    arguments=item.arguments,
                ),
                self.event(
                    "response.output_item.done",
                    output_index=index,
                    item=item.model_dump(mode="json"),
                ),
            ]
            self.output.append(item)
        return frames

    def finish(self, done: DoneEvent) -> list[str]:
        """What the stream did not carry (text decided only at the end, such as a forced
        tool call cut short), the last item closed, and the finished Response."""
        choice = done.choices[0]
        frames = self.text("reasoning", _rest(self._sent["reasoning"], choice.reasoning or ""))
        frames += self.text("message", _rest(self._sent["message"], choice.text))
        frames += self.calls(choice.tool_calls or [])
        if not self.output and self._open is None:  # an empty answer is an empty message
            frames += self._open_item("message")
        frames += self.close(_status(choice))
        response = self.shape.finished(done, self.output)
        kind = f"response.{response.status}"
        return [*frames, self.event(kind, response=response.model_dump(mode="json"))]

    def error(self, exc: MlxqError) -> str:
        details = openai_error_for(exc)["error"]
        return self.event(
            "error", code=details["code"], message=details["message"], param=details["param"]
        )


_PREFIX = {"message": "msg", "reasoning": "rs"}


def _rest(sent: list[str], final: str) -> str:
    """The part of the final text that the stream has not sent yet."""
    text = "".join(sent)
    return final[len(text) :] if final.startswith(text) else ""


async def response_frames(stream: JobStream, shape: ResponseShape) -> AsyncIterator[str]:
    events = ResponseEvents(shape)
    try:
        for frame in events.start():
            yield frame
        async for item in stream:
            if item is KEEPALIVE:
                yield KEEPALIVE_FRAME
                continue
            frames: list[str] = []
            if isinstance(item, TokenEvent):
                frames = events.piece(item)
            elif isinstance(item, DoneEvent):
                frames = events.finish(item)
            for frame in frames:
                yield frame
    except MlxqError as exc:  # after the response began, an error is the stream's last event
        yield events.error(exc)
    finally:
        await stream.aclose()
