"""``POST /ask``: the seed contract, answered whole or streamed."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.core.error_handlers import ERROR_STATUSES
from api.core.models import resolve_model
from api.core.neutral import generation_request
from api.core.respond import respond
from api.deps import RedisDep, RunnerDep, SettingsDep
from api.dialects.ask.render import AskStream
from api.dialects.ask.schemas import AskRequest, AskResponse, ErrorBody
from shared.schemas import ChatMessage

router = APIRouter(tags=["ask"])

_RESPONSES: dict[int | str, dict] = {
    200: {
        "description": 'The answer; with "stream": true, Server-Sent Events.',
        "content": {
            "text/event-stream": {
                "schema": {  # one event: a piece of text, then "done" or "error" with JSON
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "event": {"enum": ["message", "done", "error"]},
                        "data": {"type": "string"},
                    },
                }
            }
        },
    },
    **{status: {"model": ErrorBody} for status in ERROR_STATUSES},
}


@router.post("/ask", response_model=AskResponse, responses=_RESPONSES)
async def ask(
    body: AskRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> Response:
    model = await resolve_model(redis, settings, body.model or settings.model)
    request = generation_request(
        settings,
        model=model,
        messages=[ChatMessage(role="user", content=body.question)],
        max_tokens=body.max_tokens,
        stream=body.stream,
        timeout=body.timeout,
    )
    return await respond(
        http_request,
        runner,
        request,
        settings,
        answer=lambda done: AskResponse(answer=done.text),
        renderer=AskStream(),
    )
