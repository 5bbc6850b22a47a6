"""``api.core.event_hub.JobEvents``: one job's events in order, each once, whatever pub/sub
delivered.

Pub/sub is played by hand (the test puts messages in the reader's inbox); the job's durable
stream is real, in the test's Redis, written with ``shared.protocol.add_event`` as workers
write it. No process, no worker."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from api.core import event_hub as events_module
from api.core.event_hub import JobEvents
from shared import protocol
from shared.redis_clients import async_command_client
from shared.schemas import JobEvent, StartedEvent, TokenEvent

pytestmark = pytest.mark.anyio

JOB = "job-under-test"


def job_events(n_tokens: int) -> list[JobEvent]:
    """started, then n tokens: seq 0 .. n_tokens (the reader does not care about types)."""
    tokens = [TokenEvent(seq=i + 1, text=f"t{i}") for i in range(n_tokens)]
    return [StartedEvent(seq=0, worker="w"), *tokens]


def message(event: JobEvent) -> bytes:
    """The event as pub/sub carries it (what add_event publishes)."""
    return event.model_dump_json().encode()


def write_stream(redis_url: str, events: list[JobEvent]) -> None:
    """The job's stream as a worker leaves it (the publishes reach nobody here)."""
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=False) as pipeline:
        for event in events:
            protocol.add_event(pipeline, JOB, event, ttl_s=60)
        pipeline.execute()


@pytest.fixture
async def connection(anyio_backend: str, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = async_command_client(redis_url)
    yield client
    await client.aclose()


async def read_all(reader: JobEvents, timeout: float = 0.2) -> list[JobEvent]:
    """Events until none comes within ``timeout``."""
    received = []
    while (event := await reader.next(timeout)) is not None:
        received.append(event)
    return received


async def test_events_come_in_order_each_once(connection: aioredis.Redis) -> None:
    sent = job_events(4)
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    for event in sent:
        inbox.put_nowait(message(event))
    assert await read_all(JobEvents(JOB, inbox, connection)) == sent


async def test_a_gap_in_seq_is_filled_from_the_jobs_stream(
    connection: aioredis.Redis, redis_url: str
) -> None:
    sent = job_events(5)  # seq 0..5
    write_stream(redis_url, sent)
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    for event in (sent[0], sent[3], sent[5]):  # pub/sub lost 1, 2 and 4
        inbox.put_nowait(message(event))
    reader = JobEvents(JOB, inbox, connection)
    assert [e.seq for e in await read_all(reader)] == [0, 1, 2, 3, 4, 5]


async def test_duplicates_and_stale_events_are_dropped(connection: aioredis.Redis) -> None:
    sent = job_events(3)  # seq 0..3
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    for i in (0, 0, 1, 0, 1, 2, 2, 3, 1, 3):
        inbox.put_nowait(message(sent[i]))
    assert await read_all(JobEvents(JOB, inbox, connection)) == sent


async def test_nothing_within_the_timeout_is_none(connection: aioredis.Redis) -> None:
    reader = JobEvents(JOB, asyncio.Queue(), connection)
    started = time.monotonic()
    assert await reader.next(0.3) is None
    assert 0.3 <= time.monotonic() - started < 1.0


async def test_the_stream_is_read_after_silence_when_pubsub_lost_everything(
    connection: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "CATCH_UP_AFTER_S", 0.1)
    sent = job_events(1)
    write_stream(redis_url, sent)
    reader = JobEvents(JOB, asyncio.Queue(), connection)  # no message ever arrives
    started = time.monotonic()
    assert await reader.next(5) == sent[0]
    assert time.monotonic() - started < 1.0  # after the silence, not the whole timeout
    assert await read_all(reader) == sent[1:]


async def test_events_after_a_catch_up_are_not_repeated(
    connection: aioredis.Redis, redis_url: str
) -> None:
    """Pub/sub delivers late what the catch-up already read: each still comes once."""
    sent = job_events(3)  # seq 0..3
    write_stream(redis_url, sent[:3])
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    inbox.put_nowait(message(sent[2]))  # gap: 0 and 1 come from the stream
    reader = JobEvents(JOB, inbox, connection)
    assert [e.seq for e in await read_all(reader)] == [0, 1, 2]
    for late in (sent[1], sent[2], sent[3]):
        inbox.put_nowait(message(late))
    assert await read_all(reader) == [sent[3]]


async def test_a_redis_blip_during_a_catch_up_is_waited_out(redis_url: str) -> None:
    """The catch-up read fails while Redis is briefly unreachable: the reader keeps waiting
    (the job may well complete) instead of failing its request."""
    unreachable = async_command_client("redis://127.0.0.1:1/0")  # nothing listens there
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    reader = JobEvents(JOB, inbox, unreachable)
    try:
        assert await reader.next(0.2) is None  # a catch-up failed inside, and was retried
        inbox.put_nowait(message(StartedEvent(seq=0, worker="w")))
        assert (await reader.next(1.0)) == StartedEvent(seq=0, worker="w")
    finally:
        await unreachable.aclose()
