"""How a worker group's ranks watch each other (worker/group/watch.py), on a real Redis: a
rank that stops beating, one that never beat, and one that records why it cannot go on each
end the other ranks, with a line that says which and why."""

import threading
import uuid

import redis

from worker.group.watch import RankWatch

TIMEOUT_S = 3.0
"""Several beat intervals (1 s): a beat a little late on a busy machine is not silence."""
WAIT_S = 10.0
"""Long enough for the timeout and a check (1 s apart), with room for a slow machine."""


class Ended:
    """Stands in for the process exit: records the line the watch would print."""

    def __init__(self) -> None:
        self.why: str | None = None
        self.event = threading.Event()

    def __call__(self, why: str) -> None:
        self.why = why
        self.event.set()


def watches(redis_url: str, size: int = 2) -> tuple[list[RankWatch], list[Ended]]:
    connection = redis.Redis.from_url(redis_url)
    group = uuid.uuid4().hex
    ended = [Ended() for _ in range(size)]
    ranks = [RankWatch(connection, group, r, size, TIMEOUT_S, ended[r]) for r in range(size)]
    return ranks, ended


def test_ranks_that_beat_keep_each_other_and_a_silent_one_ends_the_rest(redis_url: str) -> None:
    (rank0, rank1), (ended0, ended1) = watches(redis_url)
    rank0.start()
    rank1.start()
    try:
        assert not ended0.event.wait(TIMEOUT_S + 1.5) and not ended1.event.is_set()
        rank1.stop()  # it beats no more, as a killed or sleeping rank
        assert ended0.event.wait(WAIT_S)
        assert ended0.why is not None
        assert "rank 1 of worker group" in ended0.why and "stopped beating" in ended0.why
    finally:
        rank0.stop()
        rank1.stop()


def test_a_rank_that_never_beats_ends_the_others(redis_url: str) -> None:
    (rank0, _), (ended0, _) = watches(redis_url)
    rank0.start()
    try:
        assert ended0.event.wait(WAIT_S)
        assert ended0.why is not None and "rank 1" in ended0.why and "never beat" in ended0.why
    finally:
        rank0.stop()


def test_the_line_of_a_rank_that_cannot_go_on_reaches_every_other_rank(redis_url: str) -> None:
    (rank0, rank1, rank2), (ended0, _, ended2) = watches(redis_url, size=3)
    for rank in (rank0, rank1, rank2):
        rank.start()
    line = "rank 1 (mac-b): could not load its share of m: no such file"
    try:
        rank1.record_end(line)  # what a rank that failed at start-up does before exiting
        assert ended0.event.wait(WAIT_S) and ended2.event.wait(WAIT_S)
        assert ended0.why == line and ended2.why == line
    finally:
        for rank in (rank0, rank1, rank2):
            rank.stop()
