"""The fleet's history (shared/history.py): what beats write, what /fleet/history reads, and
that it stays bounded however long the fleet runs."""

import json
import time
from collections.abc import Iterator

import pytest
import redis

from shared import history
from shared.history import ApiTally, add_worker_sample, read_history, record_api_beat
from shared.protocol import WorkerStats


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _beat(connection: redis.Redis, name: str, at: float, tokens_per_s: float) -> None:
    stats = WorkerStats(model="m", host="h", pid=1, slots=8, running=2, tokens_per_s=tokens_per_s)
    with connection.pipeline(transaction=False) as pipeline:
        add_worker_sample(pipeline, name, stats, at)
        pipeline.execute()


def test_beats_become_aligned_series(connection: redis.Redis) -> None:
    now = 1_000_000.0
    _beat(connection, "w1", now - 5, 12.5)
    tally = ApiTally()
    for _ in range(4):
        tally.count_request()
    for seconds in (0.2, 0.3, 0.4):
        tally.observe_first_token(seconds)
    record_api_beat(connection, tally.take(), {"mlxq:m": 3}, now - 5)
    assert tally.requests == 0 and sum(tally.first_token_counts) == 0

    found = read_history(connection, now=now)

    points = history.STEPS
    assert len(found["times"]) == points and found["times"][-1] < now
    index = found["times"].index(history.step_of(now - 5) * history.HISTORY_STEP_S)
    (worker,) = found["workers"]
    assert worker["label"] == "h:1 m"
    assert worker["tokens_per_s"][index] == 12.5 and worker["running"][index] == 2
    assert worker["slots"][index] == 8 and worker["tokens_per_s"][index - 1] is None
    assert found["queues"] == [{"queue": "mlxq:m", "queued": found["queues"][0]["queued"]}]
    assert found["queues"][0]["queued"][index] == 3
    assert found["requests_per_s"][index] == 4 / history.HISTORY_STEP_S
    assert 0.25 <= found["ttft_p50_s"][index] <= 0.5  # the median, 0.3 s, within its bucket
    assert found["ttft_p50_s"][index - 1] is None and found["requests_per_s"][index - 1] is None


def test_history_stays_bounded_over_a_long_run(connection: redis.Redis) -> None:
    """Hours of beats from a churning fleet (a new worker name every minute): what is read
    back keeps one point per step of the window, and every record expires with its step."""
    start = 2_000_000.0
    hours = 3
    for second in range(0, hours * 3600, 1):
        at = start + second
        _beat(connection, f"worker-{second // 60}", at, float(second % 50))
        if second % 10 == 0:
            record_api_beat(connection, ApiTally(requests=1), {"q": second % 7}, at)

    found = read_history(connection, now=start + hours * 3600)

    assert all(len(w["tokens_per_s"]) == history.STEPS for w in found["workers"])
    # Only the workers that beat within the window are in it.
    assert len(found["workers"]) <= history.HISTORY_WINDOW_S // 60 + 1
    assert len(json.dumps(found)) < 300_000
    for key in connection.scan_iter("mlxq:history:*"):
        assert 0 < connection.ttl(key) <= history.HISTORY_WINDOW_S + 2 * history.HISTORY_STEP_S
        assert connection.hlen(key) <= 4 * 2 + 1 + 1 + len(history.FIRST_TOKEN_BOUNDS_S) + 1


def test_steps_leave_redis_with_the_window(
    connection: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same in real time with a 3 s window: old steps are gone, not merely unread."""
    monkeypatch.setattr(history, "HISTORY_STEP_S", 1)
    monkeypatch.setattr(history, "HISTORY_WINDOW_S", 3)
    monkeypatch.setattr(history, "STEPS", 3)
    deadline = time.time() + 7
    beats = 0
    while time.time() < deadline:
        _beat(connection, f"worker-{beats}", time.time(), 1.0)  # a new name each beat
        beats += 1
        time.sleep(0.05)
    assert beats > 50
    assert len(list(connection.scan_iter("mlxq:history:*"))) <= 3 + 2 + 1
    assert len(read_history(connection)["workers"]) <= 3 * 25


@pytest.mark.anyio
async def test_the_endpoint_needs_the_key_like_fleet(make_api) -> None:
    async with make_api(api_key="secret") as api:
        refused = await api.client.get("/fleet/history")
        served = await api.client.get("/fleet/history", headers={"Authorization": "Bearer secret"})
    assert refused.status_code == 401
    assert served.status_code == 200
    assert len(served.json()["times"]) == history.STEPS
