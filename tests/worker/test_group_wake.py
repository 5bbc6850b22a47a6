"""Idle followers wait for rank 0 in Redis (worker/group/wake.py), on a real Redis: each
wake-up lets each follower go once, and a follower never waits past WAKE_WAIT_S for one lost."""

import threading
import time
import uuid

import pytest
import redis

from worker.group import wake
from worker.group.wake import IdleWake


def ranks(redis_url: str, size: int) -> list[IdleWake]:
    connection = redis.Redis.from_url(redis_url)
    group = uuid.uuid4().hex
    return [IdleWake(connection, group, rank, size) for rank in range(size)]


def test_each_wake_up_lets_every_follower_go_once(redis_url: str) -> None:
    leader, *followers = ranks(redis_url, 3)
    gone = [threading.Event() for _ in followers]
    threads = [
        threading.Thread(target=lambda f=f, g=g: (f.wait(), g.set()), daemon=True)
        for f, g in zip(followers, gone, strict=True)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert not any(event.is_set() for event in gone)  # waiting, not polling a collective
    leader.wake_followers()
    assert all(event.wait(5) for event in gone)

    leader.wake_followers()  # one more wake-up: each follower goes once more, at once
    started = time.monotonic()
    for follower in followers:
        follower.wait()
    assert time.monotonic() - started < 1


def test_a_lost_wake_up_costs_a_follower_wake_wait_s(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wake, "WAKE_WAIT_S", 1)
    _, follower = ranks(redis_url, 2)
    started = time.monotonic()
    follower.wait()
    assert 0.9 < time.monotonic() - started < 3
