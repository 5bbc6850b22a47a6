"""Relaying a job's events as OpenAI streaming chunks, ending with ``data: [DONE]``."""

from collections.abc import AsyncIterator
from typing import Any

from api.errors import openai_error_for
from api.jobs import KEEPALIVE
from api.openai_responses import Renderer, ResponseHeader, usage
from api.sse import KEEPALIVE_FRAME, JobStream, data_frame, json_frame
from shared.errors import MlxqError
from shared.schemas import DoneEvent, TokenEvent


async def openai_frames(
    stream: JobStream, header: ResponseHeader, renderer: Renderer, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(choices: list[dict[str, Any]]) -> str:
        return json_frame({**header.fields(renderer.chunk_object), "choices": choices})

    try:
        opening = renderer.opening()
        if opening:
            yield chunk(opening)
        async for item in stream:
            if item is KEEPALIVE:
                yield KEEPALIVE_FRAME
            elif isinstance(item, TokenEvent):
                yield chunk([renderer.piece(item)])
            elif isinstance(item, DoneEvent):
                yield chunk([renderer.ending(choice) for choice in item.choices])
                if include_usage:
                    fields = header.fields(renderer.chunk_object)
                    yield json_frame({**fields, "choices": [], "usage": usage(item)})
        yield data_frame("[DONE]")
    except MlxqError as exc:  # after the response began, an error is the stream's last event
        yield json_frame(openai_error_for(exc))
    finally:
        await stream.aclose()
