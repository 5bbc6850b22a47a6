"""A busy fleet shared between API keys in turn, not first come first served.

Each API key's requests wait in a queue of the key's own beside the model's shared queue
(``<queue>:k:<key name>``, shared/keys.py; requests without a made key, anonymous or with
MLXQ_API_KEY, wait in the shared queue, which takes its turn like a key). At every dequeue
a worker offers RQ the queues starting with the one after the queue it served last
(``Rotation``), so a key with 64 requests waiting and a key with one take turns: the lone
request waits for the next free slot, not behind the 64. A key of weight 2 (``mlxq keys
create --weight 2``) has two turns per round.

This is round robin in each worker, over the queues RQ already has: ``rq info`` shows each
key's queue and its depth, and nothing central schedules. Batch lanes share the slots left
to batches the same way, owner by owner, then batch by batch (worker/lanes.py).
"""

import logging
import time
from collections.abc import Callable

import redis
from rq.queue import Queue

from shared.api_keys import key_weights
from shared.keys import key_queue_name

log = logging.getLogger(__name__)

KEYS_REFRESH_S = 1.0
"""How often a worker reads the keys and their weights (a new key is served within this)."""
SHARED = ""
"""The shared queue's place in the rotation: requests without a key."""


class Rotation:
    """Names served in turn, each as often per round as its weight; each offer starts after
    the name served last, so every name with work gets its turn. One thread's own."""

    def __init__(self) -> None:
        self._slots: list[str] = []
        self._turn = 0

    def set(self, weights: dict[str, int]) -> None:
        """The names and their weights, spread over a round (a weight-2 name twice, apart)."""
        places = [((i + 0.5) / w, name) for name, w in weights.items() for i in range(w)]
        slots = [name for _, name in sorted(places)]
        if slots != self._slots:
            self._slots = slots
            self._turn %= max(1, len(slots))

    def order(self) -> list[str]:
        """Every name once, the next in turn first."""
        turned = self._slots[self._turn :] + self._slots[: self._turn]
        return list(dict.fromkeys(turned))

    def served(self, name: str) -> None:
        """``name`` was just served: the next offer starts after its slot."""
        count = len(self._slots)
        for step in range(count):
            if self._slots[(self._turn + step) % count] == name:
                self._turn = (self._turn + step + 1) % count
                return


class KeyQueues:
    """The model's shared queue and every key's queue of it, in turn. The main thread's own
    (it dequeues)."""

    def __init__(self, shared_queue: Queue, clock: Callable[[], float] = time.monotonic) -> None:
        self._shared = shared_queue
        self._clock = clock
        self._rotation = Rotation()
        self._rotation.set({SHARED: 1})
        self._queues: dict[str, Queue] = {SHARED: shared_queue}
        self._names: dict[str, str] = {shared_queue.name: SHARED}
        self._looked_at = float("-inf")

    def in_turn(self) -> list[Queue]:
        """The queues to offer RQ, the next in turn first (a Redis call at most once per
        KEYS_REFRESH_S)."""
        if self._clock() - self._looked_at >= KEYS_REFRESH_S:
            self._looked_at = self._clock()
            self._refresh()
        return [self._queues[name] for name in self._rotation.order()]

    def served(self, queue_name: str) -> None:
        """A job was taken from ``queue_name``: the next dequeue starts after it."""
        name = self._names.get(queue_name)
        if name is not None:
            self._rotation.served(name)

    def _refresh(self) -> None:
        try:
            weights = key_weights(self._shared.connection)
        except redis.RedisError as exc:  # the dequeue will say so too, and back off
            log.debug("cannot read the keys (%s); serving the queues known", exc)
            return
        weights = {SHARED: 1, **weights}
        for name in weights:
            if name not in self._queues:
                queue = Queue(
                    key_queue_name(self._shared.name, name),
                    connection=self._shared.connection,
                    serializer=self._shared.serializer,
                )
                self._queues[name] = queue
                self._names[queue.name] = name
        self._rotation.set(weights)
