"""Building the one internal request model every route enqueues."""

import time
import uuid
from typing import Any

from shared.errors import InvalidRequest
from shared.schemas import GenerationRequest, SamplingParams
from shared.settings import Settings

OPENAI_DEFAULT_TEMPERATURE = 1.0
"""OpenAI's default when a request names no temperature (/ask is greedy by default)."""


def generation_request(
    settings: Settings, *, model: str, timeout: float | None = None, **fields: Any
) -> GenerationRequest:
    """A job's request: ``fields`` are GenerationRequest's; the id and deadline are set here."""
    max_tokens = fields.get("max_tokens")
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_tokens={max_tokens} is above this server's limit of "
            f"{settings.max_tokens_cap} (MLXQ_MAX_TOKENS_CAP)."
        )
    return GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        deadline=time.time() + (timeout or settings.request_timeout),
        **{k: v for k, v in fields.items() if v is not None},
    )


def openai_sampling(body: Any) -> SamplingParams:
    """The sampling fields shared by /v1 routes; absent (or null) ones take OpenAI's defaults.
    ``top_p`` 0 keeps only the likeliest token: greedy."""
    temperature = body.temperature
    if temperature is None:
        temperature = OPENAI_DEFAULT_TEMPERATURE
    if body.top_p == 0.0:
        temperature = 0.0
    return SamplingParams(
        temperature=temperature,
        top_p=body.top_p if body.top_p else 1.0,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        logit_bias=body.bias,
        seed=body.seed,
    )
