"""``api.fleet.beat.RedisWatch``: silent workers are judged dead only once Redis has taken
beats for long enough (it was away: nobody could heartbeat into it)."""

from api.fleet.beat import REAP_GRACE_S, RedisWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_process_judges_workers_from_its_first_beat_unless_redis_just_started() -> None:
    clock = Clock()
    watch = RedisWatch(clock)
    assert not watch.workers_judgeable()  # nothing known yet
    watch.answered(uptime_s=3600)
    assert watch.workers_judgeable()
    fresh = RedisWatch(clock)
    fresh.answered(uptime_s=1)  # Redis itself started a second ago
    assert not fresh.workers_judgeable()
    clock.now += REAP_GRACE_S
    fresh.answered(uptime_s=1 + REAP_GRACE_S)
    assert fresh.workers_judgeable()


def test_an_outage_starts_the_grace_again() -> None:
    clock = Clock()
    watch = RedisWatch(clock)
    watch.answered(uptime_s=3600)
    clock.now += REAP_GRACE_S
    watch.failed()
    assert not watch.workers_judgeable()
    clock.now += 1
    watch.answered(uptime_s=3600)
    assert not watch.workers_judgeable()
    clock.now += REAP_GRACE_S
    assert watch.workers_judgeable()


def test_a_restart_between_two_beats_is_seen_in_the_uptime() -> None:
    clock = Clock()
    watch = RedisWatch(clock)
    watch.answered(uptime_s=3600)
    clock.now += REAP_GRACE_S
    assert watch.workers_judgeable()
    clock.now += 1
    watch.answered(uptime_s=0.5)  # Redis restarted since the last beat, unseen
    assert not watch.workers_judgeable()
    clock.now += REAP_GRACE_S
    watch.answered(uptime_s=0.5 + REAP_GRACE_S)
    assert watch.workers_judgeable()
