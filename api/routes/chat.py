"""``POST /v1/chat/completions``: OpenAI chat completions, streamed or not."""

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.fleet import check_model
from api.openai_schemas import (
    ERROR_STATUSES,
    SSE_RESPONSE,
    ChatCompletion,
    ChatCompletionRequest,
    OpenAIError,
    ResponseHeader,
    usage,
)
from api.openai_stream import openai_frames
from api.requests import generation_request
from api.respond import respond
from api.sse import JobStream
from shared.schemas import ChatMessage, DoneEvent, SamplingParams

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
    request = generation_request(
        settings,
        model=body.model,
        messages=[
            ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
            for m in body.messages
        ],
        max_tokens=body.token_limit,
        sampling=SamplingParams(temperature=body.temperature, top_p=body.top_p, seed=body.seed),
        stop=body.stops,
        stream=body.stream,
        timeout=body.timeout,
        chat_template_kwargs=body.chat_template_kwargs,
    )
    header = ResponseHeader("chatcmpl", request.request_id, body.model)

    def answer(done: DoneEvent) -> dict:
        message = {"role": "assistant", "content": done.text}
        choice = {"index": 0, "message": message, "finish_reason": done.finish_reason}
        return {**header.fields("chat.completion"), "choices": [choice], "usage": usage(done)}

    def frames(stream: JobStream) -> AsyncIterator[str]:
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return openai_frames(
            stream, header, "chat.completion.chunk", _delta, body.include_usage, first
        )

    return await respond(
        http_request, runner, request, settings.stream_keepalive, answer=answer, frames=frames
    )


def _delta(text: str | None, finish_reason: str | None) -> dict:
    delta = {"content": text} if text is not None else {}
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}
