"""Anthropic's bodies as mlxq's neutral request."""

from typing import Any

from api.core.neutral import generation_request, temperature_and_top_p
from api.dialects.anthropic.schemas import MessagesRequest, PromptRequest, ToolIn
from shared.schemas import (
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    ToolDefinition,
    ToolFunction,
)
from shared.settings import Settings

ANTHROPIC_DEFAULT_TEMPERATURE = 1.0
"""Anthropic's default when a request names no temperature."""


def messages_request(body: MessagesRequest, settings: Settings, model: str) -> GenerationRequest:
    """The job of ``POST /v1/messages``."""
    temperature = body.temperature
    if temperature is None:
        temperature = ANTHROPIC_DEFAULT_TEMPERATURE
    temperature, top_p = temperature_and_top_p(temperature, body.top_p)
    response_format = None
    if body.json_format is not None:
        field, schema = body.json_format
        response_format = ResponseFormat(
            type="json_schema", json_schema={"schema": schema}, field=field
        )
    return _request(
        settings,
        body,
        model,
        max_tokens=body.max_tokens,
        sampling=SamplingParams(temperature=temperature, top_p=top_p, top_k=body.top_k or 0),
        stop=body.stop_sequences,
        response_format=response_format,
        stream=bool(body.stream),
    )


def count_tokens_request(body: PromptRequest, settings: Settings, model: str) -> GenerationRequest:
    """``count_tokens`` as a greedy one-token generation: the worker reports the prompt's
    length (the API has no tokenizer)."""
    return _request(settings, body, model, max_tokens=1, sampling=SamplingParams(temperature=0.0))


def _request(
    settings: Settings, body: PromptRequest, model: str, **fields: Any
) -> GenerationRequest:
    return generation_request(
        settings,
        model=model,
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
