"""The order a worker takes waiting jobs in (worker/fair_share.py, worker/lanes.py): keys in
turn, weighted; batches owner by owner, then batch by batch. Jobs are real RQ jobs in a real
Redis, taken with RQ's own dequeue, as the worker takes them."""

import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.api_keys import KeyRecord, create_key
from shared.job_functions import GENERATE_FUNCTION
from shared.keys import batch_lane_name, key_queue_name
from worker.fair_share import KeyQueues, Rotation
from worker.lanes import BatchLanes

SHARED = "mlxq-test"


def queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def fill(connection: redis.Redis, name: str, jobs: int) -> None:
    for n in range(jobs):
        queue(connection, name).enqueue(GENERATE_FUNCTION, job_id=f"{name}-{n}".replace(":", "_"))


def take(connection: redis.Redis, offer, served, jobs: int) -> list[str]:
    """The queues ``jobs`` dequeues take from, the way the worker dequeues."""
    taken = []
    for _ in range(jobs):
        result = Queue.dequeue_any(offer(), None, connection=connection, serializer=JSONSerializer)
        assert result is not None
        served(result[1].name)
        taken.append(result[1].name)
    return taken


def test_every_name_with_work_gets_its_turn_and_weights_count() -> None:
    rotation = Rotation()
    rotation.set({"a": 2, "b": 1, "idle": 1})
    picks = []
    for _ in range(30):
        first = next(name for name in rotation.order() if name != "idle")  # idle has no work
        rotation.served(first)
        picks.append(first)
    assert picks.count("a") == 20 and picks.count("b") == 10
    assert all(picks[i : i + 3].count("b") == 1 for i in range(0, 30, 3))  # spread out


def test_keys_take_turns_by_weight_not_by_arrival(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    create_key(connection, KeyRecord(name="flood"))
    create_key(connection, KeyRecord(name="vip", weight=2))
    fill(connection, key_queue_name(SHARED, "flood"), 20)  # queued first
    fill(connection, key_queue_name(SHARED, "vip"), 6)
    fill(connection, SHARED, 2)  # requests without a made key
    keys = KeyQueues(queue(connection, SHARED))
    taken = take(connection, keys.in_turn, keys.served, 12)
    owners = [name.rsplit(":", 1)[-1] for name in taken]
    assert owners.count("vip") == 6  # twice per round
    assert owners.count("flood") == 4 and owners.count(SHARED) == 2
    assert "vip" in owners[:2] and SHARED in owners[:4]  # nobody waits behind the flood


def test_batch_lanes_are_shared_by_owner_then_by_batch(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    many = [batch_lane_name(SHARED, f"batch_x{n}", "x") for n in range(3)]
    one = batch_lane_name(SHARED, "batch_y0", "y")
    for lane in many:
        fill(connection, lane, 4)
    fill(connection, one, 4)
    lanes = BatchLanes(queue(connection, SHARED))
    taken = take(connection, lanes.in_turn, lanes.served, 8)
    assert taken[1::2] == [one] * 4 or taken[0::2] == [one] * 4  # y every other line
    x_lines = [lane for lane in taken if lane != one]
    assert sorted(x_lines[:3]) == sorted(many)  # x's batches in turn among x's share
