"""``POST /v1/completions``: OpenAI text completions of raw prompts (no chat template)."""

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.fleet import check_model
from api.openai_requests import CompletionRequest
from api.openai_responses import (
    ERROR_STATUSES,
    SSE_RESPONSE,
    Completion,
    CompletionRenderer,
    OpenAIError,
    ResponseHeader,
    answer,
)
from api.openai_stream import openai_frames
from api.requests import generation_request, openai_sampling
from api.respond import respond
from api.sse import JobStream
from shared.schemas import DoneEvent, GenerationRequest
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["openai"])

_RESPONSES: dict[int | str, dict] = {
    200: {"model": Completion, **SSE_RESPONSE},
    **{status: {"model": OpenAIError} for status in ERROR_STATUSES},
}


@router.post("/completions", response_model=None, responses=_RESPONSES)
async def completions(
    body: CompletionRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    await check_model(redis, settings, body.model)
    request = completion_request(body, settings)
    header = ResponseHeader("cmpl", request.request_id, body.model)
    renderer = CompletionRenderer()

    def frames(stream: JobStream) -> AsyncIterator[str]:
        return openai_frames(stream, header, renderer, body.include_usage)

    whole = completion_answer(body, request)
    return await respond(http_request, runner, request, settings, answer=whole, frames=frames)


def completion_request(body: CompletionRequest, settings: Settings) -> GenerationRequest:
    """The job of a text completion (a live request, or a line of a batch)."""
    return generation_request(
        settings,
        model=body.model,
        timeout=body.timeout,
        prompts=body.prompt_list,
        n=body.choices,
        max_tokens=body.max_tokens,
        sampling=openai_sampling(body),
        stop=body.stops,
        logprobs=body.logprobs,
        echo=body.echo,
        stream=body.streaming,
    )


def completion_answer(
    body: CompletionRequest, request: GenerationRequest
) -> Callable[[DoneEvent], dict]:
    """The non-streamed text_completion body, from the job's DoneEvent."""
    header = ResponseHeader("cmpl", request.request_id, body.model)
    renderer = CompletionRenderer()
    return lambda done: answer(header, renderer, done)
