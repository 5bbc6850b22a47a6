"""A stream whose client stopped reading is dropped after MLXQ_STREAM_WRITE_TIMEOUT, and its
frames (and so its job) are closed. The client is played by an ASGI ``send`` that never
returns, as a full socket buffer makes it."""

import asyncio
import time

import pytest

from api.core.frames import StreamResponse

pytestmark = pytest.mark.anyio


async def test_a_write_that_waits_too_long_ends_the_stream() -> None:
    closed = asyncio.Event()

    async def frames():
        try:
            for i in range(1000):
                yield f"data: {i}\n\n"
        finally:
            closed.set()  # the runner cancels the job here

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) > 3:
            await asyncio.Event().wait()  # the client stopped reading

    async def receive() -> dict:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    response = StreamResponse(frames(), write_timeout_s=0.3)
    started = time.monotonic()
    await asyncio.wait_for(
        response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send), 5
    )
    assert time.monotonic() - started < 2
    assert closed.is_set()
    assert not any(m.get("more_body") is False for m in sent)  # never finished
