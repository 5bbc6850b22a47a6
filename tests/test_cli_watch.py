"""``mlxq status --watch``: one frame, rendered to text, from a real heartbeat's records."""

import time
from collections.abc import Iterator

import pytest
import redis

from mlxq_cli.watch import render_frame, sparkline
from shared import history
from shared.fleet_view import snapshot
from shared.history import ApiTally, add_worker_sample, read_history, record_api_beat
from shared.protocol import WorkerStats, add_heartbeat


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_sparkline_scales_to_its_maximum_and_shows_gaps() -> None:
    assert sparkline([0, 5, 10, None, 10]) == "▁▅█ █"
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([]) == ""
    assert len(sparkline(list(range(100)))) == 30  # the last minute only


def test_a_frame_shows_workers_queues_and_their_last_minute(connection: redis.Redis) -> None:
    stats = WorkerStats(
        model="model-w", queues=["mlxq:model-w"], host="box", pid=7, slots=8, running=3
    )
    now = time.time()
    # The last minute: tokens/s rising, then the queue filling up.
    for back in range(60, 0, -history.HISTORY_STEP_S):
        at = now - back
        stats.tokens_per_s = float(60 - back)
        with connection.pipeline(transaction=False) as pipeline:
            add_worker_sample(pipeline, "worker-1", stats, at)
            pipeline.execute()
        record_api_beat(connection, ApiTally(), {"mlxq:model-w": (60 - back) // 10}, at)
    with connection.pipeline() as pipeline:  # a live worker, as its heartbeat makes it
        add_heartbeat(pipeline, "worker-1", stats, 60, [])
        pipeline.execute()

    frame = render_frame(snapshot(connection), read_history(connection))

    assert "workers (1 live)" in frame
    row = next(line for line in frame.splitlines() if "model-w" in line and "box" in line)
    assert "3/8" in row
    tokens_spark, queued_spark = row.split("│")[-3:-1]  # the last two columns
    assert tokens_spark.strip().startswith("▁") and tokens_spark.strip().endswith("█")
    assert queued_spark.strip().startswith("▁") and queued_spark.strip().endswith("█")
    assert "queues" in frame
