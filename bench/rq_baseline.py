"""The bare RQ baseline for the overhead benchmark: a trivial job and a stock SimpleWorker.

``python -m bench.rq_baseline REDIS_URL QUEUE`` runs RQ's own ``SimpleWorker`` (no fork, so
it is the cheapest stock RQ worker) on QUEUE until it is terminated.
"""

import sys

import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker


def echo(text: str) -> str:
    """The job: as close to zero work as a job can be, like mlxq's echo engine."""
    return text


def main(redis_url: str, queue_name: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=connection, serializer=JSONSerializer)
    # INFO: RQ's default, like mlxq's default MLXQ_LOG_LEVEL (both log a line per job).
    worker.work(burst=False, logging_level="INFO")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
