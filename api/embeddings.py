"""Embeddings at the HTTP edge: the request bodies of OpenAI's and Ollama's embedding routes,
and the one way they all run a job (an EmbeddingRequest on the model's queue).

The vectors come back in the job's DoneEvent; OpenAI's ``encoding_format: "base64"`` (which
the official client asks for by default) is the little-endian float32 bytes, base64-encoded.
"""

import base64
import struct
import time
import uuid
from typing import Literal

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.disconnect import unless_disconnected
from api.jobs import JobRunner
from shared.errors import InvalidRequest
from shared.schemas import MAX_EMBEDDING_INPUTS, DoneEvent, EmbeddingRequest
from shared.settings import Settings


class _Request(BaseModel):
    # As the other routes: JSON types as the schema says, unknown fields refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class EmbeddingsBody(_Request):
    """OpenAI's ``POST /v1/embeddings``."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    """Only the model's own size is accepted (the worker refuses others with a 400)."""
    user: str | None = None
    """Accepted and ignored (OpenAI uses it for abuse monitoring)."""


class OllamaEmbedBody(_Request):
    """Ollama's ``POST /api/embed``; ``options`` and ``keep_alive`` are accepted no-ops (a
    worker keeps its model loaded; an embedding has nothing to sample)."""

    model: str
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: dict | None = None
    keep_alive: str | int | float | None = None


class OllamaEmbeddingsBody(_Request):
    """Ollama's older ``POST /api/embeddings``: one prompt, one vector."""

    model: str
    prompt: str
    options: dict | None = None
    keep_alive: str | int | float | None = None


def openai_inputs(given: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """OpenAI's four input shapes as a list of inputs: a token list is one input."""
    if isinstance(given, str):
        return [given]
    if given and all(isinstance(item, int) for item in given):
        return [[int(item) for item in given]]  # type: ignore[arg-type]
    return list(given)  # type: ignore[arg-type]


def embedding_request(
    settings: Settings,
    *,
    model: str,
    inputs: list[str | list[int]],
    truncate: bool,
    dimensions: int | None = None,
) -> EmbeddingRequest:
    if not inputs:
        raise InvalidRequest("input must not be empty.")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"input holds {len(inputs)} items; at most {MAX_EMBEDDING_INPUTS}.")
    for i, item in enumerate(inputs):
        if not item:
            raise InvalidRequest(f"input[{i}] is empty: there is nothing to embed.")
    return EmbeddingRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        inputs=inputs,
        truncate=truncate,
        dimensions=dimensions,
        deadline=time.time() + settings.request_timeout,
    )


async def run_embedding(
    http_request: Request, runner: JobRunner, request: EmbeddingRequest
) -> DoneEvent | Response:
    """The job's answer (its ``embeddings`` set), or the 499 of a client that went away."""
    return await unless_disconnected(http_request, runner.run(request))


def vectors(done: DoneEvent) -> list[list[float]]:
    if done.embeddings is None:
        raise AssertionError("an embedding job answers with embeddings")
    return done.embeddings


def base64_vector(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the float32 values, little-endian, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
