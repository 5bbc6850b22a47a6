"""Idle followers wait for rank 0 in Redis (worker/group/wake.py), on a real Redis: a wake-up
lets every follower go into its turn, one for an earlier turn lets none go, and a follower
never waits past WAKE_WAIT_S for one lost."""

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


def waiting(followers: list[IdleWake], turn: int) -> list[threading.Event]:
    """Each follower waiting for ``turn`` on a thread; each event is set when it goes."""
    gone = [threading.Event() for _ in followers]
    for follower, event in zip(followers, gone, strict=True):
        thread = threading.Thread(target=lambda f=follower, e=event: (f.wait(turn), e.set()))
        thread.daemon = True
        thread.start()
    return gone


def test_a_wake_up_lets_every_follower_go_into_its_turn(redis_url: str) -> None:
    leader, *followers = ranks(redis_url, 3)
    gone = waiting(followers, turn=1)
    time.sleep(0.3)
    assert not any(event.is_set() for event in gone)  # waiting, not polling a collective
    leader.wake_followers(1)
    assert all(event.wait(5) for event in gone)


def test_a_late_wake_up_is_not_taken_for_the_next_turn(redis_url: str) -> None:
    """A follower that gave up on turn 1's wake-up (and joined the collective anyway) finds
    it in its list when it waits for turn 2: it drops it and waits on."""
    leader, follower = ranks(redis_url, 2)
    leader.wake_followers(1)  # late: the follower already went into turn 1
    gone = waiting([follower], turn=2)
    assert not gone[0].wait(1.5)
    leader.wake_followers(2)
    assert gone[0].wait(5)


def test_a_lost_wake_up_costs_a_follower_wake_wait_s(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wake, "WAKE_WAIT_S", 1)
    _, follower = ranks(redis_url, 2)
    started = time.monotonic()
    follower.wait(1)
    assert 0.9 < time.monotonic() - started < 3
