"""``POST /v1/responses``: OpenAI's Responses API, stateless, streamed or not."""

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import JobExchangeDep
from api.dialects.openai.answers import ERROR_RESPONSES
from api.dialects.responses.answers import ResponseObject
from api.dialects.responses.render import ResponseShape
from api.dialects.responses.schemas import ResponseRequest
from api.dialects.responses.stream import ResponseEvents
from api.dialects.responses.translate import responses_request

router = APIRouter(prefix="/v1", tags=["openai"])

_SSE = {
    "description": 'The Response; with "stream": true, Server-Sent Events named as their '
    "data's type (response.created, response.output_text.delta, ..., response.completed).",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
            }
        }
    },
}


@router.post(
    "/responses",
    response_model=None,
    responses={200: {"model": ResponseObject, **_SSE}, **ERROR_RESPONSES},
)
async def create_response(body: ResponseRequest, job: JobExchangeDep) -> Response:
    model = await job.model(body.model)
    request = responses_request(body, job.settings, model)
    shape = ResponseShape(body, request.request_id)
    return await job.respond(
        request,
        answer=shape.answer,
        renderer=ResponseEvents(shape),
    )
