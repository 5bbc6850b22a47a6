"""``POST /ask``: the seed contract, ``{"question", "max_tokens"?}`` -> ``{"answer"}``.

With ``"stream": true`` the answer comes as Server-Sent Events instead: one event per text
piece (the data is the plain text), then ``event: done`` with the whole answer as JSON, or
``event: error`` with ``{"detail", "code"}``.
"""

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.fleet import check_model
from api.jobs import KEEPALIVE
from api.requests import generation_request
from api.respond import respond
from api.sse import KEEPALIVE_FRAME, JobStream, data_frame, json_frame
from shared.errors import MlxqError
from shared.schemas import ChatMessage, DoneEvent, TokenEvent

router = APIRouter(tags=["ask"])


class AskRequest(BaseModel):
    # strict: JSON types as the schema says them ("max_tokens": true or "5" is no integer)
    # allow_inf_nan: NaN and Infinity (and 1e400, which JSON parsers read as Infinity) are
    # no numbers a request can mean.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    question: str = Field(min_length=1, description="The question; must not be blank.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Most tokens to generate; omitted: until the model stops (bounded by the "
        "context window and the server's cap).",
    )
    model: str | None = Field(
        None, min_length=1, description="Model to ask; default: the server's MLXQ_MODEL."
    )
    stream: bool = Field(False, description="Answer as Server-Sent Events, piece by piece.")
    timeout: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="Seconds until the request's deadline (default MLXQ_REQUEST_TIMEOUT); "
        "past it the answer is a 504 and generation stops.",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("question must not be blank")
        return question


class AskResponse(BaseModel):
    answer: str


class ErrorBody(BaseModel):
    detail: str
    code: str


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
    # 401: the API key; 413: the body limit; 429: the queue is full; the rest: the job.
    **{status: {"model": ErrorBody} for status in (400, 401, 404, 413, 429, 500, 502, 503, 504)},
}


@router.post("/ask", response_model=AskResponse, responses=_RESPONSES)
async def ask(
    body: AskRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> AskResponse | Response:
    model = body.model or settings.model
    await check_model(redis, settings, model)
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
        frames=_frames,
    )


async def _frames(stream: JobStream) -> AsyncIterator[str]:
    try:
        async for item in stream:
            if item is KEEPALIVE:
                yield KEEPALIVE_FRAME
            elif isinstance(item, TokenEvent):
                yield data_frame(item.text)
            elif isinstance(item, DoneEvent):
                done = {
                    "answer": item.text,
                    "finish_reason": item.finish_reason,
                    "prompt_tokens": item.prompt_tokens,
                    "completion_tokens": item.completion_tokens,
                    "cached_tokens": item.cached_tokens,
                }
                yield json_frame(done, event="done")
    except MlxqError as exc:
        yield json_frame({"detail": exc.message, "code": str(exc.code)}, event="error")
    finally:
        await stream.aclose()
