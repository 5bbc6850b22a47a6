"""``POST /ask``: the seed contract, ``{"question", "max_tokens"?}`` -> ``{"answer"}``."""

import time
import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import RunnerDep, SettingsDep
from shared.errors import InvalidRequest
from shared.schemas import ChatMessage, GenerationRequest

router = APIRouter(tags=["ask"])


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="The question; must not be blank.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Most tokens to generate; omitted: until the model stops (bounded by the "
        "context window and the server's cap).",
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


_ERRORS = {status: {"model": ErrorBody} for status in (400, 500, 502, 503, 504)}


@router.post("/ask", response_model=AskResponse, responses=_ERRORS)
async def ask(body: AskRequest, runner: RunnerDep, settings: SettingsDep) -> AskResponse:
    if body.max_tokens is not None and body.max_tokens > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_tokens={body.max_tokens} is above this server's limit of "
            f"{settings.max_tokens_cap} (MLXQ_MAX_TOKENS_CAP)."
        )
    request = GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=settings.model,
        messages=[ChatMessage(role="user", content=body.question)],
        max_tokens=body.max_tokens,
        deadline=time.time() + settings.queue_timeout,
    )
    done = await runner.run(request)
    return AskResponse(answer=done.text)
