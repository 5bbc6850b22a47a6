"""``POST /ask``: the seed contract, answered whole or streamed."""

from fastapi import APIRouter
from fastapi.responses import Response

from api.core.error_handlers import ERROR_STATUSES
from api.core.neutral import generation_request
from api.deps import JobExchangeDep
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
async def ask(body: AskRequest, job: JobExchangeDep) -> Response:
    model = await job.model(body.model or job.settings.model)
    request = generation_request(
        job.settings,
        model=model,
        messages=[ChatMessage(role="user", content=body.question)],
        max_tokens=body.max_tokens,
        stream=body.stream,
        timeout=body.timeout,
        speculative=body.speculative,
    )
    return await job.respond(
        request,
        answer=lambda done: AskResponse(answer=done.text),
        renderer=AskStream(),
    )
