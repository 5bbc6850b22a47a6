"""What each answer used, by key: counted once, when the job's answer arrives.

The runner (api/core/runner.py) calls ``answered`` for every job that ends with its answer,
live or a batch's line, before the client sees it. In one round trip it adds the usage to
the key's day (shared/usage.py) and, for a live request of a made key, takes the tokens
from its tokens-per-minute bucket (api/access/limits.py); and it counts them in this
process's ``/metrics``, labelled by key name. A batch line's tokens count in its owner's
usage but not against its tokens per minute (batches run in the slots live requests leave).
"""

import logging
import time

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from api.access.limits import add_charge
from shared.api_keys import ANONYMOUS
from shared.schemas import DoneEvent, JobRequest
from shared.usage import add_usage

log = logging.getLogger(__name__)


class Accounting:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mlxq_key_requests",
            "Answered requests by API key (batch lines included).",
            ["key"],
            registry=registry,
        )
        self.tokens = Counter(
            "mlxq_key_tokens",
            "Tokens of answered requests by API key and kind: prompt, completion, cached "
            "(prompt tokens served from a worker's prefix cache).",
            ["key", "kind"],
            registry=registry,
        )
        self.refused = Counter(
            "mlxq_key_rate_limited",
            "Requests refused (429) by a key's limits, by key and limit.",
            ["key", "limit"],
            registry=registry,
        )

    async def answered(
        self, connection: aioredis.Redis, request: JobRequest, done: DoneEvent, batch: bool
    ) -> None:
        name = request.owner or ANONYMOUS
        figures = {
            "requests": 1,
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "cached_tokens": done.cached_tokens,
        }
        self.requests.labels(key=name).inc()
        for kind in ("prompt", "completion", "cached"):
            self.tokens.labels(key=name, kind=kind).inc(figures[f"{kind}_tokens"])
        try:
            async with connection.pipeline(transaction=False) as pipeline:
                add_usage(pipeline, name, figures, time.time())
                if request.owner is not None and not batch:
                    add_charge(pipeline, request.owner, done.prompt_tokens + done.completion_tokens)
                await pipeline.execute()
        except RedisError as exc:  # the answer is there; only its bookkeeping is lost
            log.warning("key %s: could not record an answer's usage (%s)", name, exc)
