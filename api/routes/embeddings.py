"""``POST /v1/embeddings``: OpenAI embeddings, answered by an embedding worker."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.embeddings import (
    EmbeddingsBody,
    base64_vector,
    embedding_request,
    openai_inputs,
    run_embedding,
    vectors,
)
from api.fleet import check_model
from api.openai_responses import ERROR_STATUSES, OpenAIError
from api.respond import WORKER_HEADER
from shared.schemas import DoneEvent, EmbeddingRequest
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["openai"])

_RESPONSES: dict[int | str, dict] = {status: {"model": OpenAIError} for status in ERROR_STATUSES}


@router.post("/embeddings", response_model=None, responses=_RESPONSES)
async def embeddings(
    body: EmbeddingsBody,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> Response:
    """A vector per input; inputs longer than the model reads are refused (400), as OpenAI
    does."""
    await check_model(redis, settings, body.model)
    done = await run_embedding(http_request, runner, embeddings_request(body, settings))
    if isinstance(done, Response):
        return done
    headers = {WORKER_HEADER: done.worker} if done.worker else None
    return JSONResponse(embeddings_answer(body, done), headers=headers)


def embeddings_request(body: EmbeddingsBody, settings: Settings) -> EmbeddingRequest:
    """The job of an embeddings request (a live request, or a line of a batch)."""
    return embedding_request(
        settings,
        model=body.model,
        inputs=openai_inputs(body.input),
        truncate=False,
        dimensions=body.dimensions,
    )


def embeddings_answer(body: EmbeddingsBody, done: DoneEvent) -> dict:
    """OpenAI's embeddings list, from the job's DoneEvent."""
    encode = base64_vector if body.encoding_format == "base64" else list
    data = [
        {"object": "embedding", "index": i, "embedding": encode(vector)}
        for i, vector in enumerate(vectors(done))
    ]
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens},
    }
