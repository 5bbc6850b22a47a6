"""Relaying a job's events as OpenAI streaming chunks, ending with ``data: [DONE]``."""

from collections.abc import AsyncIterator, Callable

from api.errors import openai_error_for
from api.jobs import KEEPALIVE
from api.openai_schemas import ResponseHeader, usage
from api.sse import KEEPALIVE_FRAME, JobStream, data_frame, json_frame
from shared.errors import MlxqError
from shared.schemas import DoneEvent, TokenEvent

Choice = Callable[[str | None, str | None], dict]
"""(text piece or None, finish_reason or None) -> one choice object of a chunk."""


async def openai_frames(
    stream: JobStream,
    header: ResponseHeader,
    chunk_object: str,
    choice: Choice,
    include_usage: bool,
    first_choice: dict | None = None,
) -> AsyncIterator[str]:
    def chunk(choice_object: dict) -> str:
        return json_frame({**header.fields(chunk_object), "choices": [choice_object]})

    try:
        if first_choice is not None:
            yield chunk(first_choice)
        async for item in stream:
            if item is KEEPALIVE:
                yield KEEPALIVE_FRAME
            elif isinstance(item, TokenEvent):
                yield chunk(choice(item.text, None))
            elif isinstance(item, DoneEvent):
                yield chunk(choice(None, item.finish_reason))
                if include_usage:
                    fields = header.fields(chunk_object)
                    yield json_frame({**fields, "choices": [], "usage": usage(item)})
        yield data_frame("[DONE]")
    except MlxqError as exc:  # after the response began, an error is the stream's last event
        yield json_frame(openai_error_for(exc))
    finally:
        await stream.aclose()
