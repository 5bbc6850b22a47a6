"""A Responses API request as mlxq's neutral request: instructions first (a system message),
then the input items as chat messages."""

from typing import Any

from api.core.neutral import generation_request
from api.dialects.openai.translate import openai_sampling
from api.dialects.responses.items import (
    ResponsesFunctionCallItem,
    ResponsesFunctionCallOutputItem,
    ResponsesMessageItem,
)
from api.dialects.responses.schemas import (
    ResponseRequest,
    ResponsesFormatJsonSchema,
    ResponsesFormatText,
    ResponsesFunctionTool,
)
from shared.schemas import (
    ChatMessage,
    FunctionCall,
    GenerationRequest,
    ResponseFormat,
    ToolCall,
    ToolDefinition,
    ToolFunction,
)
from shared.settings import Settings


def responses_request(body: ResponseRequest, settings: Settings, model: str) -> GenerationRequest:
    """The job of ``POST /v1/responses``."""
    return generation_request(
        settings,
        model=model,
        timeout=body.timeout,
        messages=chat_messages(body),
        max_tokens=body.max_output_tokens,
        max_tokens_field="max_output_tokens",
        sampling=openai_sampling(body),
        response_format=_response_format(body),
        tools=[_tool(tool) for tool in body.tools or []] or None,
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        stream=bool(body.stream),
        chat_template_kwargs=body.chat_template_kwargs,
        speculative=body.speculative,
    )


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
    """A function tool in chat's shape (no parameters: it takes none)."""
    fields = tool.model_dump(exclude={"type"}, exclude_none=True)
    return ToolDefinition(function=ToolFunction.model_validate(fields))
