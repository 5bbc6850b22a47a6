"""A Response, from a job's DoneEvent: its output items are the answer's reasoning (for
reasoning models), its text (one ``message``) and its tool calls (``function_call`` items);
the request's settings are echoed back, as OpenAI does."""

import json
import time
import uuid
from typing import Any, Literal

from api.dialects.openai.translate import OPENAI_DEFAULT_TEMPERATURE
from api.dialects.responses.answers import (
    OutputItem,
    ResponseObject,
    ResponsesFunctionCallOut,
    ResponsesIncompleteDetails,
    ResponsesInputTokensDetails,
    ResponsesMessageOut,
    ResponsesOutputTextOut,
    ResponsesOutputTokensDetails,
    ResponsesReasoningOut,
    ResponsesReasoningTextOut,
    ResponseUsage,
)
from api.dialects.responses.schemas import ResponseRequest
from shared.schemas import Choice, DoneEvent, ToolCall


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def status_of(choice: Choice) -> Literal["completed", "incomplete"]:
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
        response = self.response(status_of(done.choices[0]), output)
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
                    id=item_id("rs"),
                    content=[ResponsesReasoningTextOut(text=choice.reasoning)],
                    status="completed",
                )
            )
        if choice.text or not choice.tool_calls:
            output.append(
                ResponsesMessageOut(
                    id=item_id("msg"),
                    status=status_of(choice),
                    content=[ResponsesOutputTextOut(text=choice.text)],
                )
            )
        output += [
            function_call(call, call_status(call, status_of(choice)))
            for call in choice.tool_calls or []
        ]
        return self.finished(done, output).model_dump(mode="json")


def call_status(
    call: ToolCall, answer: Literal["completed", "incomplete"]
) -> Literal["completed", "incomplete"]:
    """A call is incomplete when the answer is and its arguments were cut short (they are
    no JSON yet: a forced call that max_output_tokens cut)."""
    if answer == "completed":
        return answer
    try:
        json.loads(call.function.arguments)
    except ValueError:
        return "incomplete"
    return "completed"


def function_call(call: ToolCall, status: str = "completed") -> ResponsesFunctionCallOut:
    return ResponsesFunctionCallOut(
        id=item_id("fc"),
        call_id=call.id,
        name=call.function.name,
        arguments=call.function.arguments,
        status=status,
    )
