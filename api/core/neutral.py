"""Building mlxq's neutral job requests, which every dialect translates into.

A dialect reads its own body and names its own fields; the rules that hold for all of them
live here: the server's cap on tokens (refused in the dialect's own words), ``top_p`` 0 as
greedy, and the request's id and deadline.
"""

import time
import uuid
from typing import Any

from api.core.validators import schema_depth_problem
from shared.errors import InvalidRequest
from shared.schemas import (
    MAX_EMBEDDING_INPUTS,
    EmbeddingRequest,
    GenerationRequest,
    TokenizeRequest,
)
from shared.settings import Settings


def generation_request(
    settings: Settings,
    *,
    model: str,
    timeout: float | None = None,
    max_tokens_field: str = "max_tokens",
    **fields: Any,
) -> GenerationRequest:
    """A generation job's request: ``fields`` are GenerationRequest's (None ones are left to
    its defaults); the id and deadline are set here. ``max_tokens_field`` is what the
    dialect calls ``max_tokens`` (``num_predict``, ``max_output_tokens``...), for the
    refusal of a value over MLXQ_MAX_TOKENS_CAP."""
    max_tokens = fields.get("max_tokens")
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise InvalidRequest(
            f"{max_tokens_field}={max_tokens} is above this server's limit of "
            f"{settings.max_tokens_cap} (MLXQ_MAX_TOKENS_CAP)."
        )
    request = GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        deadline=time.time() + (timeout or settings.request_timeout),
        **{k: v for k, v in fields.items() if v is not None},
    )
    _check_schemas(request)
    return request


def _check_schemas(request: GenerationRequest) -> None:
    """The JSON schemas a worker will compile into grammars must not nest too deeply."""
    schemas: list[tuple[object, str]] = []
    if request.response_format is not None and request.response_format.json_schema:
        schemas.append((request.response_format.json_schema, "the response format's schema"))
    for tool in request.tools or []:
        schemas.append((tool.function.parameters, f"the parameters of tool {tool.function.name!r}"))
    for schema, where in schemas:
        problem = schema_depth_problem(schema, where)
        if problem is not None:
            raise InvalidRequest(problem)


def embedding_request(
    settings: Settings,
    *,
    model: str,
    inputs: list[str | list[int]],
    truncate: bool,
    dimensions: int | None = None,
    keep_alive: float | None = None,
) -> EmbeddingRequest:
    """An embedding job's request: a vector per input, none of them empty."""
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
        keep_alive=keep_alive,
    )


def tokenize_request(settings: Settings, *, model: str, **fields: Any) -> TokenizeRequest:
    """A tokenizer job's request (``fields`` are TokenizeRequest's; None ones are left to
    its defaults); the id and deadline are set here."""
    return TokenizeRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        deadline=time.time() + settings.request_timeout,
        **{k: v for k, v in fields.items() if v is not None},
    )


def temperature_and_top_p(temperature: float, top_p: float | None) -> tuple[float, float]:
    """``top_p`` 0 keeps only the likeliest token: greedy (temperature 0). An absent or zero
    ``top_p`` is then no filter (1.0), as every dialect's clients mean it."""
    if top_p == 0.0:
        return 0.0, 1.0
    return temperature, top_p if top_p else 1.0
