"""Ollama's generation and embedding routes: ``/api/chat``, ``/api/generate``, ``/api/embed``
and ``/api/embeddings``. Answers stream as newline-delimited JSON unless ``"stream": false``.
"""

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from api.core.frames import NDJSON_MEDIA_TYPE
from api.core.neutral import embedding_request
from api.core.respond import JobExchange
from api.deps import JobExchangeDep
from api.dialects.ollama.answers import (
    ERROR_RESPONSES,
    OllamaChatResponse,
    OllamaGenerateResponse,
)
from api.dialects.ollama.render import ChatShape, Clock, GenerateShape, OllamaLines, Shape
from api.dialects.ollama.schemas import (
    OllamaChatRequest,
    OllamaEmbedBody,
    OllamaEmbeddingsBody,
    OllamaGenerateRequest,
)
from api.dialects.ollama.translate import chat_request, generate_request
from shared.schemas import DoneEvent, GenerationRequest

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
async def chat(body: OllamaChatRequest, job: JobExchangeDep) -> Response:
    received = time.perf_counter_ns()
    model = await job.model(body.model)
    shape = ChatShape(body.model)
    if not body.messages:
        return JSONResponse(shape.loaded())
    request = chat_request(body, job.settings, model)
    return await _answer(job, request, shape, Clock(received))


@router.post(
    "/generate",
    response_model=None,
    responses={200: _stream_doc(OllamaGenerateResponse, "The completion"), **ERROR_RESPONSES},
)
async def generate(body: OllamaGenerateRequest, job: JobExchangeDep) -> Response:
    received = time.perf_counter_ns()
    model = await job.model(body.model)
    shape = GenerateShape(body.model)
    if not body.prompt and not body.suffix:
        return JSONResponse(shape.loaded())
    request = generate_request(body, job.settings, model)
    return await _answer(job, request, shape, Clock(received))


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
    )

    def answer(done: DoneEvent) -> dict:
        return {
            "model": body.model,
            "embeddings": done.embeddings,
            "total_duration": time.perf_counter_ns() - received,
            "load_duration": 0,  # workers load their model once, at start-up
            "prompt_eval_count": done.prompt_tokens,
        }

    return await job.respond(request, answer=answer)


@router.post("/embeddings", response_model=None, responses=ERROR_RESPONSES)
async def embeddings(body: OllamaEmbeddingsBody, job: JobExchangeDep) -> Response:
    """Ollama's older route: one prompt, one vector (truncated to the model's limit, as
    Ollama does)."""
    model = await job.model(body.model)
    request = embedding_request(job.settings, model=model, inputs=[body.prompt], truncate=True)

    def answer(done: DoneEvent) -> dict:
        return {"embedding": (done.embeddings or [[]])[0]}

    return await job.respond(request, answer=answer)
