"""The queues a worker serves: those of the models it holds loaded, and only those.

Each model has its shared queue, its API keys' queues, its batches' lanes
(worker/fair_share.py, worker/lanes.py) and this worker's own queue of it (requests routed
here for its prefix cache). A model the worker merely may load is not served: its jobs wait
until the placement (worker/placement.py) has a worker load it, so that not every worker
loads every model asked for.

At each dequeue the worker offers RQ its own queues first, then the models' interactive
queues model by model in turn (a flood for one model does not starve another's requests),
then the batch lanes the same way. The main thread's own (it dequeues, adds and removes).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq.queue import Queue

from shared.keys import worker_queue_name
from shared.rq_bridge import release_queue
from worker.fair_share import KeyQueues, Rotation
from worker.lanes import BatchLanes

log = logging.getLogger(__name__)


@dataclass
class _ModelQueues:
    shared: Queue
    own: Queue
    keys: KeyQueues
    lanes: BatchLanes


class ModelQueues:
    def __init__(
        self,
        connection: redis.Redis,
        serializer: Any,
        worker_name: str,
        queue_of: Callable[[str], str],
    ) -> None:
        """``queue_of``: a model's shared queue name (Settings.queue_of)."""
        self._connection = connection
        self._serializer = serializer
        self._worker_name = worker_name
        self._queue_of = queue_of
        self._models: dict[str, _ModelQueues] = {}
        self._turns = Rotation()
        self._owners: dict[str, str] = {}
        """Shared queue name -> model."""

    def __contains__(self, model: str) -> bool:
        return model in self._models

    @property
    def empty(self) -> bool:
        return not self._models

    def add(self, model: str) -> None:
        if model in self._models:
            return
        shared = Queue(
            self._queue_of(model), connection=self._connection, serializer=self._serializer
        )
        own = Queue(
            worker_queue_name(shared.name, self._worker_name),
            connection=self._connection,
            serializer=self._serializer,
        )
        self._models[model] = _ModelQueues(shared, own, KeyQueues(shared), BatchLanes(shared))
        self._owners[shared.name] = model
        self._turns.set(dict.fromkeys(self._models, 1))

    def remove(self, model: str) -> None:
        """Stop serving ``model``'s queues; requests routed to this worker's own queue of it
        go to its shared queue, for the workers that still hold it (or the next to load it)."""
        queues = self._models.pop(model, None)
        if queues is None:
            return
        del self._owners[queues.shared.name]
        self._turns.set(dict.fromkeys(self._models, 1))
        try:
            moved = release_queue(self._connection, queues.own.name)
        except redis.RedisError as exc:  # the API moves them after MLXQ_ROUTE_WAIT anyway
            log.warning("could not hand %s's routed requests on (%s)", model, exc)
            return
        if moved:
            log.info("%d request(s) routed here for %s go to its shared queue", moved, model)

    def model_of(self, queue_name: str) -> str | None:
        """The model whose queue ``queue_name`` is (its shared queue, a key's, a lane, this
        worker's own)."""
        from shared.keys import model_queue_of

        return self._owners.get(model_queue_of(queue_name))

    def interactive(self) -> list[Queue]:
        """This worker's own queues, then each model's keys' and shared queues, in turn."""
        ordered = [self._models[model] for model in self._turns.order()]
        return [q.own for q in ordered] + [queue for q in ordered for queue in q.keys.in_turn()]

    def lanes(self) -> list[Queue]:
        return [
            lane for model in self._turns.order() for lane in self._models[model].lanes.in_turn()
        ]

    def served(self, queue_name: str) -> None:
        """A job was taken from ``queue_name``: the next dequeue starts after its model, and
        the model's next after that queue."""
        model = self.model_of(queue_name)
        if model is None:
            return
        self._turns.served(model)
        self._models[model].keys.served(queue_name)
        self._models[model].lanes.served(queue_name)

    def names(self) -> list[str]:
        """The queues served, for the heartbeat: each model's shared queue and own queue."""
        return [name for q in self._models.values() for name in (q.shared.name, q.own.name)]

    def own_queues(self) -> list[str]:
        return [q.own.name for q in self._models.values()]
