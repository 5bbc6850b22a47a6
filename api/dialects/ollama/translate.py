"""Ollama's bodies as mlxq's neutral requests."""

import json
from typing import Any

from api.core.neutral import generation_request, temperature_and_top_p
from api.dialects.ollama.options import OLLAMA_DEFAULTS, OllamaOptions
from api.dialects.ollama.schemas import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaGeneration,
    OllamaMessageIn,
    OllamaToolIn,
)
from shared.schemas import (
    ChatMessage,
    FunctionCall,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    ToolCall,
    ToolDefinition,
)
from shared.settings import Settings


def chat_request(body: OllamaChatRequest, settings: Settings, model: str) -> GenerationRequest:
    """The job of ``POST /api/chat``."""
    return _request(
        settings,
        body,
        model,
        messages=chat_messages(body.messages),
        tools=_tools(body.tools),
        chat_template_kwargs=_thinking(body),
    )


def generate_request(
    body: OllamaGenerateRequest, settings: Settings, model: str
) -> GenerationRequest:
    """The job of ``POST /api/generate``: the prompt in the chat template (after ``system``),
    or as it is with ``raw``; with ``suffix``, a fill-in-the-middle prompt (no template)."""
    if body.suffix:
        return _request(settings, body, model, prompts=[body.prompt or ""], suffix=body.suffix)
    if body.raw:
        return _request(settings, body, model, prompts=[body.prompt])
    messages = [ChatMessage(role="user", content=body.prompt or "")]
    if body.system:
        messages.insert(0, ChatMessage(role="system", content=body.system))
    return _request(settings, body, model, messages=messages, chat_template_kwargs=_thinking(body))


def _request(
    settings: Settings, body: OllamaGeneration, model: str, **fields: Any
) -> GenerationRequest:
    options = body.settings
    return generation_request(
        settings,
        model=model,
        max_tokens=options.max_tokens,
        max_tokens_field="options.num_predict",
        sampling=sampling(options),
        stop=options.stops,
        logprobs=body.logprob_count,
        response_format=response_format(body.format),
        stream=body.streaming,
        keep_alive=body.keep_alive_s,
        **fields,
    )


def sampling(options: OllamaOptions) -> SamplingParams:
    """Ollama's options; absent ones take Ollama's defaults (``OLLAMA_DEFAULTS``)."""

    def given(value: float | None, name: str) -> float:
        return OLLAMA_DEFAULTS[name] if value is None else value

    temperature, top_p = temperature_and_top_p(
        given(options.temperature, "temperature"), given(options.top_p, "top_p")
    )
    return SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=int(given(options.top_k, "top_k")),
        min_p=options.min_p or 0.0,
        presence_penalty=options.presence_penalty or 0.0,
        frequency_penalty=options.frequency_penalty or 0.0,
        repetition_penalty=given(options.repeat_penalty, "repeat_penalty"),
        seed=options.seed if options.seed is not None and options.seed >= 0 else None,
    )


def response_format(fmt: str | dict[str, Any] | None) -> ResponseFormat | None:
    """``format``: "json" is any JSON object; an object is a JSON Schema to follow."""
    if not fmt:
        return None
    if fmt == "json":
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", json_schema={"name": "response", "schema": fmt})


def _thinking(body: OllamaGeneration) -> dict[str, Any] | None:
    """think: false switches a reasoning model's thinking off in its template."""
    return {"enable_thinking": False} if body.think is False else None


def _tools(tools: list[OllamaToolIn] | None) -> list[ToolDefinition] | None:
    return [
        ToolDefinition.model_validate(t.model_dump(exclude_none=True)) for t in tools or []
    ] or None


def chat_messages(messages: list[OllamaMessageIn]) -> list[ChatMessage]:
    """Ollama's history as the worker reads it. Ollama's tool calls have no ids: each gets a
    stable one by its place in the conversation (``call_0``, ``call_1``...), and a tool
    message answers the first open call of its ``tool_name`` (or, unnamed, the next one)."""
    out: list[ChatMessage] = []
    open_calls: list[ToolCall] = []
    numbered = 0
    for message in messages:
        calls = []
        for call in message.tool_calls or []:
            calls.append(
                ToolCall(
                    id=call.id or f"call_{numbered}",
                    function=FunctionCall(
                        name=call.function.name,
                        arguments=json.dumps(call.function.arguments, ensure_ascii=False),
                    ),
                )
            )
            numbered += 1
        if message.role == "assistant":
            open_calls = list(calls)
        answered = _answered(open_calls, message.tool_name) if message.role == "tool" else None
        out.append(
            ChatMessage(
                role=message.role,
                content=message.content or "",
                tool_calls=calls or None,
                tool_call_id=answered.id if answered else None,
            )
        )
    return out


def _answered(open_calls: list[ToolCall], tool_name: str | None) -> ToolCall | None:
    for i, call in enumerate(open_calls):
        if tool_name is None or call.function.name == tool_name:
            return open_calls.pop(i)
    return None
