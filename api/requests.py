"""Building the one internal request model every route enqueues."""

import time
import uuid

from shared.errors import InvalidRequest
from shared.schemas import ChatMessage, GenerationRequest, JSONScalar, SamplingParams
from shared.settings import Settings


def generation_request(
    settings: Settings,
    *,
    model: str,
    messages: list[ChatMessage] | None = None,
    prompt: str | None = None,
    max_tokens: int | None = None,
    sampling: SamplingParams | None = None,
    stop: list[str] | None = None,
    stream: bool = False,
    chat_template_kwargs: dict[str, JSONScalar] | None = None,
    timeout: float | None = None,
) -> GenerationRequest:
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_tokens={max_tokens} is above this server's limit of "
            f"{settings.max_tokens_cap} (MLXQ_MAX_TOKENS_CAP)."
        )
    return GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=sampling or SamplingParams(),
        stop=stop or [],
        stream=stream,
        chat_template_kwargs=chat_template_kwargs or {},
        deadline=time.time() + (timeout or settings.request_timeout),
    )
