"""Ollama's generation and embedding routes: ``/api/chat``, ``/api/generate``, ``/api/embed``
and ``/api/embeddings``. Answers stream as newline-delimited JSON unless ``"stream": false``.
A chat or generate request with nothing to answer loads the model (``keep_alive: 0``:
unloads it), as Ollama's clients use it (api/core/model_loads.py).
"""

import time

import redis.asyncio as aioredis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from api.core.frames import NDJSON_MEDIA_TYPE
from api.core.model_loads import load_now, refuse_unloading_a_group, unload_now
from api.core.neutral import embedding_request
from api.core.respond import JobExchange
from api.deps import AsyncRedisDep, JobExchangeDep
from api.dialects.ollama.answers import (
    ERROR_RESPONSES,
    OllamaChatResponse,
    OllamaGenerateResponse,
)
from api.dialects.ollama.render import ChatShape, Clock, GenerateShape, OllamaLines, Shape
from api.dialects.ollama.schemas import (
    KeepAlive,
    OllamaChatRequest,
    OllamaEmbedBody,
    OllamaEmbeddingsBody,
    OllamaGenerateRequest,
)
from api.dialects.ollama.translate import chat_request, generate_request
from shared.schemas import DoneEvent, GenerationRequest

AsyncRedis = aioredis.Redis

router = APIRouter(prefix="/api", tags=["ollama"])


def _stream_doc(model: type, what: str) -> dict:
    return {
        "model": model,
        "description": f'{what}; unless "stream": false, one JSON object per line '
        '(application/x-ndjson), the last with done: true, or {"error"} after a failure.',
        "content": {NDJSON_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }


@router.post(
    "/chat",
    response_model=None,
    responses={200: _stream_doc(OllamaChatResponse, "The answer"), **ERROR_RESPONSES},
)
async def chat(body: OllamaChatRequest, job: JobExchangeDep, redis: AsyncRedisDep) -> Response:
    received = time.perf_counter_ns()
    model = await job.model(body.model)
    shape = ChatShape(body.model)
    if not body.messages:
        return await _load_or_unload(job, redis, model, body, shape, received)
    if body.keep_alive_s == 0:  # answer, then unload: a group cannot
        await refuse_unloading_a_group(redis, model)
    request = chat_request(body, job.settings, model)
    return await _answer(job, request, shape, Clock(received))


@router.post(
    "/generate",
    response_model=None,
    responses={200: _stream_doc(OllamaGenerateResponse, "The completion"), **ERROR_RESPONSES},
)
async def generate(
    body: OllamaGenerateRequest, job: JobExchangeDep, redis: AsyncRedisDep
) -> Response:
    received = time.perf_counter_ns()
    model = await job.model(body.model)
    shape = GenerateShape(body.model)
    if not body.prompt and not body.suffix:  # Ollama's load (or, keep_alive 0, unload)
        return await _load_or_unload(job, redis, model, body, shape, received)
    if body.keep_alive_s == 0:  # answer, then unload: a group cannot
        await refuse_unloading_a_group(redis, model)
    request = generate_request(body, job.settings, model)
    return await _answer(job, request, shape, Clock(received))


async def _load_or_unload(
    job: JobExchange, redis: AsyncRedis, model: str, body: KeepAlive, shape: Shape, received: int
) -> Response:
    """Nothing to answer: ``keep_alive: 0`` unloads the model (done_reason "unload"), else
    a worker loads it (done_reason "load", with the time the load took)."""
    if body.keep_alive_s == 0:
        await refuse_unloading_a_group(redis, model)
        await unload_now(redis, model)
        return JSONResponse(shape.loaded("unload"))
    settings = job.settings
    waited = await load_now(
        redis,
        model,
        body.keep_alive_s,
        time.time() + settings.request_timeout,
        settings.queue_timeout,
    )
    answer = shape.loaded("load")
    answer["total_duration"] = time.perf_counter_ns() - received
    answer["load_duration"] = int(waited * 1e9)
    return JSONResponse(answer)


async def _answer(
    job: JobExchange, request: GenerationRequest, shape: Shape, clock: Clock
) -> Response:
    def whole(done: DoneEvent) -> dict:
        return shape.final(done, clock, whole=True)

    return await job.respond(
        request,
        answer=whole,
        renderer=OllamaLines(shape, clock),
        watch=clock.see,
    )


@router.post("/embed", response_model=None, responses=ERROR_RESPONSES)
async def embed(body: OllamaEmbedBody, job: JobExchangeDep) -> Response:
    """A vector per input, from an embedding worker; inputs too long are cut to the model's
    limit unless ``truncate`` is false (Ollama's default is true)."""
    received = time.perf_counter_ns()
    model = await job.model(body.model)
    inputs: list[str | list[int]] = [body.input] if isinstance(body.input, str) else [*body.input]
    request = embedding_request(
        job.settings,
        model=model,
        inputs=inputs,
        truncate=body.truncate,
        dimensions=body.dimensions,
        keep_alive=body.keep_alive_s,
    )
    clock = Clock(received)

    def answer(done: DoneEvent) -> dict:
        return {
            "model": body.model,
            "embeddings": done.embeddings,
            "total_duration": time.perf_counter_ns() - received,
            "load_duration": clock.load_duration,
            "prompt_eval_count": done.prompt_tokens,
        }

    return await job.respond(request, answer=answer, watch=clock.see)


@router.post("/embeddings", response_model=None, responses=ERROR_RESPONSES)
async def embeddings(body: OllamaEmbeddingsBody, job: JobExchangeDep) -> Response:
    """Ollama's older route: one prompt, one vector (truncated to the model's limit, as
    Ollama does)."""
    model = await job.model(body.model)
    request = embedding_request(
        job.settings,
        model=model,
        inputs=[body.prompt],
        truncate=True,
        keep_alive=body.keep_alive_s,
    )

    def answer(done: DoneEvent) -> dict:
        return {"embedding": (done.embeddings or [[]])[0]}

    return await job.respond(request, answer=answer)
