"""``api.core.submitter.JobSubmitter``: enqueueing, the fleet-wide queue bound, withdrawing and
cancelling, against the test's real Redis. No process, no worker: a "worker taking a job"
is the job id leaving the queue's list, as RQ's dequeue leaves it."""

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from rq.job import Job

from api.core.submitter import QUEUE_FULL_RETRY_AFTER_S, JobSubmitter
from shared import protocol
from shared.api_keys import ENV_KEY_NAME
from shared.errors import QueueFull
from shared.keys import key_queue_name, queue_name_for_model, worker_queue_name
from shared.redis_clients import async_command_client
from shared.routing import prefix_hashes
from shared.rq_bridge import queue_key, recover_taken_job, release_queue
from shared.schemas import ChatMessage, GenerationRequest
from shared.settings import DEMO_MODEL_ID, Settings

pytestmark = pytest.mark.anyio

MAX_QUEUED = 3
QUEUE = queue_name_for_model(DEMO_MODEL_ID)
EVENT_TTL_S = 77


@pytest.fixture
async def connection(anyio_backend: str, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = async_command_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, max_queued=MAX_QUEUED, event_ttl=EVENT_TTL_S)


@pytest.fixture
def submitter(connection: aioredis.Redis, settings: Settings) -> JobSubmitter:
    return JobSubmitter(connection, settings)


def request(owner: str | None = None, content: str = "hi") -> GenerationRequest:
    return GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=DEMO_MODEL_ID,
        messages=[ChatMessage(role="user", content=content)],
        deadline=time.time() + 60,
        owner=owner,
    )


def live_holder(connection: redis.Redis, holder: str) -> str:
    """``holder`` is a live worker with a free slot that holds the conversation "hi" (as its
    heartbeat and prefix claims say); returns its own queue."""
    with connection.pipeline() as pipeline:
        stats = protocol.WorkerStats(model=DEMO_MODEL_ID, slots=2, running=0)
        protocol.add_heartbeat(pipeline, holder, stats, 60, [])
        protocol.add_prefix_claims(pipeline, holder, prefix_hashes(request()), 60)
        pipeline.execute()
    return worker_queue_name(QUEUE, holder)


async def queued_ids(connection: aioredis.Redis, settings: Settings) -> list[str]:
    return [i.decode() for i in await connection.lrange(queue_key(settings.queue_name), 0, -1)]


async def enqueue(submitter: JobSubmitter) -> str:
    job_id = uuid.uuid4().hex
    # A first conversation has no prefix any worker holds: it waits in the model's queue.
    assert await submitter.enqueue(request(), job_id) == submitter.queue_name(DEMO_MODEL_ID)
    return job_id


async def take(connection: aioredis.Redis, settings: Settings, job_id: str) -> None:
    """What a worker's dequeue does to the queue: the id leaves its list."""
    assert await connection.lrem(queue_key(settings.queue_name), 1, job_id) == 1


async def test_enqueue_writes_an_ordinary_rq_job(
    submitter: JobSubmitter, connection: aioredis.Redis, settings: Settings
) -> None:
    job_id = await enqueue(submitter)
    assert await queued_ids(connection, settings) == [job_id]
    fields = await connection.hgetall(Job.key_for(job_id))
    assert fields[b"status"] == b"queued"
    assert fields[b"origin"].decode() == settings.queue_name
    assert int(fields[b"timeout"]) == settings.job_timeout


async def test_a_job_past_max_queued_is_refused_and_the_queue_stays_at_the_bound(
    submitter: JobSubmitter, connection: aioredis.Redis, settings: Settings
) -> None:
    admitted = [await enqueue(submitter) for _ in range(MAX_QUEUED)]
    refused_id = uuid.uuid4().hex
    with pytest.raises(QueueFull) as refused:
        await submitter.enqueue(request(), refused_id)
    assert refused.value.retry_after_s == QUEUE_FULL_RETRY_AFTER_S
    assert f"({MAX_QUEUED} requests waiting" in refused.value.message
    assert await queued_ids(connection, settings) == admitted
    assert not await connection.exists(Job.key_for(refused_id))  # nothing left behind

    await take(connection, settings, admitted[0])  # a worker took one: room for one more
    admitted.append(await enqueue(submitter))
    assert await queued_ids(connection, settings) == admitted[1:]


async def test_withdraw_is_false_once_the_job_left_the_queue(
    submitter: JobSubmitter, connection: aioredis.Redis, settings: Settings
) -> None:
    taken, waiting = await enqueue(submitter), await enqueue(submitter)
    await take(connection, settings, taken)
    assert await submitter.withdraw(QUEUE, taken) is False
    assert await connection.exists(Job.key_for(taken))  # its worker still has it

    assert await submitter.withdraw(QUEUE, waiting) is True
    assert not await connection.exists(Job.key_for(waiting))
    assert await submitter.withdraw(QUEUE, waiting) is False  # already gone
    assert await queued_ids(connection, settings) == []


async def test_cancelling_a_queued_job_removes_it(
    submitter: JobSubmitter, connection: aioredis.Redis, settings: Settings
) -> None:
    kept, cancelled = await enqueue(submitter), await enqueue(submitter)
    await submitter.cancel(QUEUE, cancelled)
    assert await queued_ids(connection, settings) == [kept]
    assert not await connection.exists(Job.key_for(cancelled))
    assert not await connection.exists(protocol.job_cancel_key(cancelled))  # nothing to stop


async def test_cancelling_a_taken_job_marks_it_and_tells_the_workers(
    submitter: JobSubmitter, connection: aioredis.Redis, settings: Settings, redis_url: str
) -> None:
    job_id = await enqueue(submitter)
    await take(connection, settings, job_id)
    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(protocol.CANCEL_CHANNEL)
        await submitter.cancel(QUEUE, job_id)
        received, give_up_at = None, time.monotonic() + 5
        while received is None and time.monotonic() < give_up_at:  # skips the confirmation
            received = await pubsub.get_message(timeout=1)
    finally:
        await pubsub.aclose()
        await listener.aclose()
    assert received is not None, "nothing was published on the cancel channel"
    assert protocol.cancelled_job_id(received) == job_id
    assert await connection.get(protocol.job_cancel_key(job_id)) == b"1"
    assert 0 < await connection.ttl(protocol.job_cancel_key(job_id)) <= EVENT_TTL_S
    assert await connection.exists(Job.key_for(job_id))  # the worker ends it, not the API


async def test_a_keys_requests_wait_in_its_queue_and_routing_never_passes_them(
    submitter: JobSubmitter, connection: aioredis.Redis, redis_url: str
) -> None:
    """A live worker with a free slot holds the conversation "hi": a request of it goes to
    that worker's own queue (served ahead of every key's), but not while its key has
    requests waiting; a routed request that must leave goes back to its key's queue."""
    holder, alice = "w1", key_queue_name(QUEUE, "alice")
    own = live_holder(redis.Redis.from_url(redis_url), holder)

    routed = uuid.uuid4().hex
    assert await submitter.enqueue(request("alice"), routed) == own  # nothing of hers waits
    assert await submitter.enqueue(request("alice", "new"), uuid.uuid4().hex) == alice
    assert await submitter.enqueue(request("alice"), uuid.uuid4().hex) == alice  # not past it
    assert await submitter.enqueue(request(), uuid.uuid4().hex) == own  # no key: as before
    assert await submitter.enqueue(request(ENV_KEY_NAME, "x"), uuid.uuid4().hex) == QUEUE

    assert await submitter.to_home_queue(own, routed) == alice
    assert (await connection.lrange(queue_key(alice), 0, 0)) == [routed.encode()]  # in front
    assert (await connection.hget(Job.key_for(routed), "origin")).decode() == alice


async def test_a_request_routed_to_a_worker_reaped_meanwhile_goes_home_at_once(
    submitter: JobSubmitter,
    connection: aioredis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race the killed-worker routing test met: the placement saw the holder live, then
    the reaper took it off the live set and released its own queues, then the job was pushed
    there. Nobody serves that queue: the job must not wait there for MLXQ_ROUTE_WAIT."""
    holder, sync = "w1", redis.Redis.from_url(redis_url)
    own = live_holder(sync, holder)
    has_room = protocol.worker_has_room

    async def reaped_right_after(connection: aioredis.Redis, worker: str) -> bool:
        room = await has_room(connection, worker)
        assert protocol.claim_silent_worker(sync, worker)  # the reaper, between the two steps
        return room

    monkeypatch.setattr(protocol, "worker_has_room", reaped_right_after)
    job_id = uuid.uuid4().hex
    assert await submitter.enqueue(request(), job_id) == QUEUE
    assert await connection.lrange(queue_key(own), 0, -1) == []
    assert await connection.lrange(queue_key(QUEUE), 0, -1) == [job_id.encode()]
    assert (await connection.hget(Job.key_for(job_id), "origin")).decode() == QUEUE

    monkeypatch.setattr(protocol, "worker_has_room", has_room)  # a live holder: routed
    sync.zadd(protocol.LIVE_WORKERS, {holder: time.time()})
    assert await submitter.enqueue(request(), uuid.uuid4().hex) == own


async def test_a_routed_job_taken_and_never_started_goes_home_not_back_to_its_worker(
    submitter: JobSubmitter, connection: aioredis.Redis, redis_url: str
) -> None:
    """A worker killed as its dequeue took a routed job never starts it, and nobody serves its
    own queue after the reaper: the job goes back to its home queue. A routed job the reaper
    moved home is found there (the runner follows it)."""
    holder, sync = "w1", redis.Redis.from_url(redis_url)
    own = live_holder(sync, holder)

    def check(job_id: str) -> int:
        keys = protocol.job_owner_key(job_id), protocol.job_suspect_key(job_id)
        return sync.eval(*recover_taken_job(job_id, own, QUEUE, *keys, 60))

    taken = uuid.uuid4().hex
    assert await submitter.enqueue(request(), taken) == own
    assert sync.lrem(queue_key(own), 1, taken) == 1  # the dying worker's dequeue
    assert check(taken) == 0  # once may be a worker between its dequeue and its start
    assert check(taken) == 1
    assert sync.lrange(queue_key(QUEUE), 0, -1) == [taken.encode()]
    assert sync.hget(Job.key_for(taken), "origin").decode() == QUEUE

    moved = uuid.uuid4().hex
    assert await submitter.enqueue(request(), moved) == own
    assert release_queue(sync, own) == 1  # the reaper, or the worker leaving
    assert check(moved) == 2
    assert sync.lrange(queue_key(QUEUE), 0, 0) == [moved.encode()]
