"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API."""

from fastapi import APIRouter
from fastapi.responses import Response

from api.core.error_handlers import ERROR_STATUSES
from api.deps import JobExchangeDep
from api.dialects.anthropic.answers import STREAM_EVENTS, AnthropicError, MessageOut, TokenCount
from api.dialects.anthropic.render import MessageStream, message
from api.dialects.anthropic.schemas import CountTokensRequest, MessagesRequest
from api.dialects.anthropic.translate import count_tokens_request, messages_request

router = APIRouter(prefix="/v1", tags=["anthropic"])

_ERRORS: dict[int | str, dict] = {
    **{status: {"model": AnthropicError} for status in ERROR_STATUSES},
    # Every 4xx is Anthropic's error body (invalid input is a 400, never FastAPI's 422; a
    # documented range also keeps FastAPI from documenting its 422 here).
    "4XX": {"model": AnthropicError, "description": "Anthropic's error body."},
}
_SSE = {
    "text/event-stream": {
        "schema": {  # one event: a name and its JSON data
            "type": "object",
            "required": ["data"],
            "properties": {"event": {"enum": list(STREAM_EVENTS)}, "data": {"type": "string"}},
        }
    }
}
_MESSAGE_RESPONSES: dict[int | str, dict] = {
    200: {
        "model": MessageOut,
        "description": 'The message; with "stream": true, Anthropic\'s named Server-Sent '
        "Events, from message_start to message_stop.",
        "content": _SSE,
    },
    **_ERRORS,
}
_COUNT_RESPONSES: dict[int | str, dict] = {200: {"model": TokenCount}, **_ERRORS}


@router.post("/messages", response_model=None, responses=_MESSAGE_RESPONSES)
async def messages(body: MessagesRequest, job: JobExchangeDep) -> Response:
    model = await job.model(body.model)
    request = messages_request(body, job.settings, model)
    message_id = f"msg_{request.request_id}"
    return await job.respond(
        request,
        answer=lambda done: message(message_id, body.model, done),
        renderer=MessageStream(message_id, body.model),
    )


@router.post("/messages/count_tokens", response_model=None, responses=_COUNT_RESPONSES)
async def count_tokens(body: CountTokensRequest, job: JobExchangeDep) -> Response:
    """The prompt's length in tokens, as the model's tokenizer and chat template make it.

    The API has no tokenizer (it never imports MLX), so this runs the prompt as a greedy
    one-token generation on a worker and reports its prompt tokens. Its cost is that of a
    request: a place in the queue and the prompt's prefill (then kept in the worker's prefix
    cache, so the request that follows with the same prompt prefills little)."""
    model = await job.model(body.model)
    request = count_tokens_request(body, job.settings, model)
    return await job.respond(
        request,
        answer=lambda done: TokenCount(input_tokens=done.prompt_tokens),
    )
