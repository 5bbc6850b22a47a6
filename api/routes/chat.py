"""``POST /v1/chat/completions``: OpenAI chat completions, streamed or not."""

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.fleet import check_model
from api.openai_requests import ChatCompletionRequest, MessageIn
from api.openai_responses import (
    ERROR_STATUSES,
    SSE_RESPONSE,
    ChatCompletion,
    ChatRenderer,
    OpenAIError,
    ResponseHeader,
    answer,
)
from api.openai_stream import openai_frames
from api.requests import generation_request, openai_sampling
from api.respond import respond
from api.sse import JobStream
from shared.schemas import (
    ChatMessage,
    DoneEvent,
    FunctionCall,
    GenerationRequest,
    ResponseFormat,
    ToolCall,
    ToolDefinition,
)
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["openai"])

_RESPONSES: dict[int | str, dict] = {
    200: {"model": ChatCompletion, **SSE_RESPONSE},
    **{status: {"model": OpenAIError} for status in ERROR_STATUSES},
}


@router.post("/chat/completions", response_model=None, responses=_RESPONSES)
async def chat_completions(
    body: ChatCompletionRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    await check_model(redis, settings, body.model)
    request = chat_request(body, settings)
    header = ResponseHeader("chatcmpl", request.request_id, body.model)
    renderer = ChatRenderer(request.n)

    def frames(stream: JobStream) -> AsyncIterator[str]:
        return openai_frames(stream, header, renderer, body.include_usage)

    whole = chat_answer(body, request)
    return await respond(http_request, runner, request, settings, answer=whole, frames=frames)


def chat_request(body: ChatCompletionRequest, settings: Settings) -> GenerationRequest:
    """The job of a chat completion (a live request, or a line of a batch)."""
    response_format = None
    if body.response_format is not None and body.response_format.type != "text":
        schema = body.response_format.json_schema
        response_format = ResponseFormat(
            type=body.response_format.type,
            json_schema=schema.model_dump(by_alias=True) if schema is not None else None,
        )
    return generation_request(
        settings,
        model=body.model,
        timeout=body.timeout,
        messages=[_message(m) for m in body.messages],
        n=body.choices,
        max_tokens=body.token_limit,
        sampling=openai_sampling(body),
        stop=body.stops,
        logprobs=body.logprob_count,
        response_format=response_format,
        tools=[ToolDefinition.model_validate(t.model_dump()) for t in body.tools or []] or None,
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        stream=body.streaming,
        chat_template_kwargs=body.chat_template_kwargs,
    )


def chat_answer(
    body: ChatCompletionRequest, request: GenerationRequest
) -> Callable[[DoneEvent], dict]:
    """The non-streamed chat.completion body, from the job's DoneEvent."""
    header = ResponseHeader("chatcmpl", request.request_id, body.model)
    renderer = ChatRenderer(request.n)
    return lambda done: answer(header, renderer, done)


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
