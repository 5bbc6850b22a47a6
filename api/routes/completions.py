"""``POST /v1/completions``: OpenAI text completions of a raw prompt (no chat template)."""

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.fleet import check_model
from api.openai_schemas import (
    ERROR_STATUSES,
    SSE_RESPONSE,
    Completion,
    CompletionRequest,
    OpenAIError,
    ResponseHeader,
    usage,
)
from api.openai_stream import openai_frames
from api.requests import generation_request
from api.respond import respond
from api.sse import JobStream
from shared.schemas import DoneEvent, SamplingParams

router = APIRouter(prefix="/v1", tags=["openai"])

_RESPONSES: dict[int | str, dict] = {
    200: {"model": Completion, **SSE_RESPONSE},
    **{status: {"model": OpenAIError} for status in ERROR_STATUSES},
}


def _choice(text: str | None, finish_reason: str | None) -> dict:
    return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}


@router.post("/completions", response_model=None, responses=_RESPONSES)
async def completions(
    body: CompletionRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    await check_model(redis, settings, body.model)
    request = generation_request(
        settings,
        model=body.model,
        prompt=body.prompt_text,
        max_tokens=body.max_tokens,
        sampling=SamplingParams(temperature=body.temperature, top_p=body.top_p, seed=body.seed),
        stop=body.stops,
        stream=body.stream,
        timeout=body.timeout,
    )
    header = ResponseHeader("cmpl", request.request_id, body.model)

    def answer(done: DoneEvent) -> dict:
        choice = _choice(done.text, done.finish_reason)
        return {**header.fields("text_completion"), "choices": [choice], "usage": usage(done)}

    def frames(stream: JobStream) -> AsyncIterator[str]:
        return openai_frames(stream, header, "text_completion", _choice, body.include_usage)

    return await respond(
        http_request, runner, request, settings.stream_keepalive, answer=answer, frames=frames
    )
