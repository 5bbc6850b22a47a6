"""OpenAI's bodies as mlxq's neutral requests, and the job's answer as OpenAI's body.

A live request and a line of a batch (api/batch/lines.py) go through the same functions, so
the two cannot drift apart.
"""

import base64
import struct
from collections.abc import Callable
from typing import Any

from api.core.neutral import embedding_request, generation_request, temperature_and_top_p
from api.dialects.openai.render import (
    ChatRenderer,
    CompletionRenderer,
    ResponseHeader,
    answer,
)
from api.dialects.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsBody,
    MessageIn,
    ToolIn,
)
from shared.schemas import (
    ChatMessage,
    DoneEvent,
    EmbeddingRequest,
    FunctionCall,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    ToolCall,
    ToolDefinition,
)
from shared.settings import Settings

RANDOM_SEED = -1
"""A seed that asks for none: each request draws differently (vLLM's and llama.cpp's -1)."""
OPENAI_DEFAULT_TEMPERATURE = 1.0
"""OpenAI's default when a request names no temperature (/ask is greedy by default)."""


def openai_sampling(body: Any) -> SamplingParams:
    """The sampling fields of OpenAI-shaped bodies (chat, completions, Responses); absent
    (or null) ones take OpenAI's defaults."""
    temperature = body.temperature
    if temperature is None:
        temperature = OPENAI_DEFAULT_TEMPERATURE
    temperature, top_p = temperature_and_top_p(temperature, body.top_p)
    return SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        logit_bias=body.bias,
        seed=None if body.seed == RANDOM_SEED else body.seed,
    )


def chat_request(body: ChatCompletionRequest, settings: Settings, model: str) -> GenerationRequest:
    """The job of a chat completion; ``model`` is the served id the body's name stands for."""
    response_format = body.guided_format()
    if body.response_format is not None and body.response_format.type != "text":
        schema = body.response_format.json_schema
        response_format = ResponseFormat(
            type=body.response_format.type,
            json_schema=schema.model_dump(by_alias=True) if schema is not None else None,
        )
    return generation_request(
        settings,
        model=model,
        timeout=body.timeout,
        messages=chat_messages(body.messages),
        n=body.choices,
        max_tokens=body.token_limit,
        max_tokens_field="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        sampling=openai_sampling(body),
        stop=body.stops,
        logprobs=body.logprob_count,
        response_format=response_format,
        tools=tool_definitions(body.tools),
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        stream=body.streaming,
        chat_template_kwargs=body.chat_template_kwargs,
        speculative=body.speculative,
    )


def completion_request(
    body: CompletionRequest, settings: Settings, model: str
) -> GenerationRequest:
    """The job of a text completion (raw prompts, no chat template)."""
    return generation_request(
        settings,
        model=model,
        timeout=body.timeout,
        prompts=body.prompt_list,
        n=body.choices,
        max_tokens=body.max_tokens,
        sampling=openai_sampling(body),
        stop=body.stops,
        logprobs=body.logprobs,
        echo=body.echo,
        suffix=body.suffix,
        response_format=body.guided_format(),
        stream=body.streaming,
        speculative=body.speculative,
    )


def embeddings_request(body: EmbeddingsBody, settings: Settings, model: str) -> EmbeddingRequest:
    """A vector per input; inputs longer than the model reads are refused (400), as OpenAI
    does (``truncate`` off)."""
    return embedding_request(
        settings, model=model, inputs=body.inputs, truncate=False, dimensions=body.dimensions
    )


def chat_answer(
    body: ChatCompletionRequest, request: GenerationRequest
) -> Callable[[DoneEvent], dict]:
    """The non-streamed chat.completion body, from the job's DoneEvent."""
    header = ResponseHeader("chatcmpl", request.request_id, body.model)
    renderer = ChatRenderer(request.n)
    return lambda done: answer(header, renderer, done)


def completion_answer(
    body: CompletionRequest, request: GenerationRequest
) -> Callable[[DoneEvent], dict]:
    """The non-streamed text_completion body, from the job's DoneEvent."""
    header = ResponseHeader("cmpl", request.request_id, body.model)
    renderer = CompletionRenderer()
    return lambda done: answer(header, renderer, done)


def embeddings_answer(body: EmbeddingsBody, done: DoneEvent) -> dict:
    """OpenAI's embeddings list, from the job's DoneEvent."""
    if done.embeddings is None:
        raise AssertionError("an embedding job answers with embeddings")
    encode = base64_vector if body.encoding_format == "base64" else list
    data = [
        {"object": "embedding", "index": i, "embedding": encode(vector)}
        for i, vector in enumerate(done.embeddings)
    ]
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens},
    }


def base64_vector(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the float32 values, little-endian, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def chat_messages(messages: list[MessageIn]) -> list[ChatMessage]:
    return [_message(m) for m in messages]


def tool_definitions(tools: list[ToolIn] | None) -> list[ToolDefinition] | None:
    return [_tool(t) for t in tools or []] or None


def _tool(tool: ToolIn) -> ToolDefinition:
    """A function tool; without ``parameters`` it takes none (OpenAI's empty parameter list),
    the default of ToolFunction."""
    return ToolDefinition.model_validate(tool.model_dump(exclude_none=True))


def _message(message: MessageIn) -> ChatMessage:
    """OpenAI's message as the worker reads it: "developer" is the system prompt."""
    calls = [
        ToolCall(
            id=c.id,
            function=FunctionCall(name=c.function.name, arguments=c.function.arguments),
        )
        for c in message.tool_calls or []
    ]
    return ChatMessage(
        role="system" if message.role == "developer" else message.role,
        content=message.text(),
        tool_calls=calls or None,
        tool_call_id=message.tool_call_id,
    )
