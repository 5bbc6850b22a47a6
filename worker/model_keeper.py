"""What a worker does about its models, on its main thread: serve the queues of the models it
holds, apply the placement rule (worker/placement.py) four times a second, load and unload,
and answer at once the jobs of a model that cannot be loaded.

- ``turn`` (every turn of the loop): loads that finished are held and their queues served
  from now on; a failed load is refused and its waiting jobs answered; and every
  PLACEMENT_INTERVAL_S, for the models this worker may load and does not hold, the fleet's
  demand decides whether it loads one (a Redis read of the queues' depths; the fleet's
  records only when there is demand);
- ``tick`` (with the heartbeat, once a second): idle models past their keep-alive, or asked
  to unload, are unloaded; the catalogue is read again when due.

Every decision is logged, and written to the fleet's placement log (``/fleet``, the page,
``mlxq status``).
"""

import logging
import socket
import time

import redis

from shared import protocol, rq_bridge
from shared.errors import ErrorCode
from shared.keys import model_queue_of
from shared.protocol import Decision
from shared.schemas import ErrorEvent
from shared.settings import Settings
from worker.model_host import ModelHost
from worker.model_loader import Loaded, LoadFailed
from worker.model_queues import ModelQueues
from worker.placement import WorkerView, choose, crowded

log = logging.getLogger(__name__)

CLAIM_TTL_S = 10.0
"""A load claim lasts until the loader's heartbeat (1 s) shows the model loading."""
PLACEMENT_INTERVAL_S = 0.25
"""How often a worker looks for demand it should load a model for: a request for a model no
worker holds waits this long at most before its load starts (the worker's dequeue waits no
longer than this while its catalogue has models it does not hold)."""
CATALOGUE_REWRITE_S = 10.0
"""The catalogue record is rewritten this often even unchanged (a Redis restarted without
persistence lost it)."""


class ModelKeeper:
    def __init__(
        self,
        connection: redis.Redis,
        worker_name: str,
        host: ModelHost,
        queues: ModelQueues,
        settings: Settings,
    ) -> None:
        self._connection = connection
        self._name = worker_name
        self._host = self.host = host
        self._queues = self.queues = queues
        self._settings = settings
        self._host_name = socket.gethostname()
        self._crowded_since: dict[str, float] = {}
        self._wishes_seen: dict[str, float] = {}
        """Model -> the time of the last load request whose keep-alive was applied."""
        self._catalogue_sent_at = float("-inf")
        self._placed_at = float("-inf")
        self.catalogue_changed = True
        """The heartbeat rewrites the catalogue record when set (``catalogue_entries``)."""

    def catalogue_entries(self) -> list[protocol.CatalogueEntry] | None:
        """The catalogue, for the heartbeat to write: None when the record is up to date."""
        stale = time.monotonic() - self._catalogue_sent_at >= CATALOGUE_REWRITE_S
        return self._host.catalogue.entries() if self.catalogue_changed or stale else None

    def catalogue_sent(self, entries: list[protocol.CatalogueEntry] | None) -> None:
        """The heartbeat wrote ``entries``: unless the catalogue changed again meanwhile."""
        if entries is not None:
            self._catalogue_sent_at = time.monotonic()
            if entries == self._host.catalogue.entries():
                self.catalogue_changed = False

    # -- every turn of the loop ---------------------------------------------------------------

    def start(self) -> None:
        """The models held at start-up (the default one) are served from the first dequeue."""
        for model in self._host.held():
            self._queues.add(model)

    def turn(self) -> None:
        for result in self._host.collect():
            if isinstance(result, Loaded):
                self._loaded(result)
            else:
                self._failed(result)
        if time.monotonic() - self._placed_at < PLACEMENT_INTERVAL_S:
            return
        self._placed_at = time.monotonic()
        try:
            self._place()
            self._answer_refused()
        except redis.RedisError as exc:  # the next turn tries again
            log.warning("placement: cannot read the fleet (%s)", exc)

    @property
    def may_load_more(self) -> bool:
        """The catalogue has models this worker may load and does not hold."""
        held = set(self._host.held()) | set(self._host.loading())
        return any(e.servable and e.model not in held for e in self._host.catalogue.entries())

    def _loaded(self, result: Loaded) -> None:
        oversized = self._host.refuse_oversized(result.model)
        if oversized is not None:
            self._decide(result.model, "fail", oversized)
            self._publish_catalogue()
            self._answer_waiting(result.model, ErrorCode.MODEL_TOO_LARGE, oversized)
            return
        self._queues.add(result.model)
        self.catalogue_changed = True  # its measured size replaces the estimate
        self._decide(result.model, "loaded", f"in {result.seconds:.1f} s")
        for model in self._host.overflow(keep=result.model):
            self.unload(
                model, f"evicted (least recently used): {result.model} took more than estimated"
            )

    def _failed(self, result: LoadFailed) -> None:
        self._host.catalogue.refuse(result.model, result.code, result.why)
        self._decide(result.model, "fail", result.why)
        self._publish_catalogue()
        self._answer_waiting(result.model, result.code, result.why)

    def _publish_catalogue(self) -> None:
        """Write the catalogue now (a refusal: the API refuses new requests for the model
        from the moment its waiting ones are answered), not at the next beat."""
        entries = self._host.catalogue.entries()
        ttl = self._settings.job_timeout + protocol.STATS_GRACE_S
        try:
            with self._connection.pipeline(transaction=False) as pipeline:
                protocol.add_catalogue(pipeline, self._name, entries, ttl)
                pipeline.execute()
        except redis.RedisError as exc:  # the next beat writes it
            log.warning("could not publish the catalogue (%s)", exc)
            self.catalogue_changed = True
            return
        self.catalogue_sent(entries)

    def unload(self, model: str, why: str) -> None:
        self._queues.remove(model)
        self._host.unload(model)
        self._decide(model, "unload", why)

    # -- once a second, with the heartbeat; and placement ----------------------------------------

    def tick(self) -> None:
        now = time.time()
        try:
            asked = protocol.read_unload_marks(self._connection, self._host.held())
        except redis.RedisError:
            asked = {}
        self._apply_wished_keep_alive()
        for model, why in self._host.expired(now, asked):
            self.unload(model, why)
        if self._host.catalogue.due(time.monotonic()) and self._host.catalogue.scan():
            self.catalogue_changed = True
        for model in self._host.held():
            if self._host.catalogue.item(model) is None and not self._host.is_busy(model):
                self.unload(model, "gone from the catalogue (its files were removed)")

    def _apply_wished_keep_alive(self) -> None:
        """A load request for a model held here sets its keep-alive (once per request)."""
        try:
            wishes = protocol.read_wishes(self._connection, self._host.held())
        except redis.RedisError:
            return
        for model, (at, keep_alive) in wishes.items():
            if keep_alive is not None and at > self._wishes_seen.get(model, 0.0):
                self._wishes_seen[model] = at
                self._host.set_keep_alive(model, keep_alive)

    def _place(self) -> None:
        demand = self._demand()
        if not demand:
            self._crowded_since.clear()
            return
        views = self._fleet()
        now = time.monotonic()
        for model, waiting in sorted(demand.items()):
            if crowded(model, waiting, views):
                self._crowded_since.setdefault(model, now)
            else:
                self._crowded_since.pop(model, None)
            crowded_for = now - self._crowded_since.get(model, now)
            choice = choose(model, waiting, views, crowded_for)
            if choice is not None and choice.worker == self._name:
                self._load(model, choice.reason)
                return  # one decision per beat: the next sees this one's effect

    def _demand(self) -> dict[str, int]:
        """Jobs waiting (and load requests) for each model this worker may load and does
        not hold or load."""
        catalogue = self._host.catalogue
        mine = {
            model
            for model in catalogue.models()
            if (item := catalogue.item(model)) is not None
            and item.entry.servable
            and model not in self._host.held()
            and model not in self._host.loading()
        }
        return self._waiting(mine, wishes=True)

    def _answer_refused(self) -> None:
        """Jobs that came for a model this worker refuses after its refusal was answered
        (they were enqueued before the API saw it) are answered too, within a beat."""
        catalogue = self._host.catalogue
        refused = {e.model: e for e in catalogue.entries() if not e.servable}
        for model in self._waiting(set(refused), wishes=False):
            entry = refused[model]
            code = entry.refusal or ErrorCode.MODEL_LOAD_FAILED
            self._answer_waiting(model, code, entry.refused or "")

    def _waiting(self, models: set[str], wishes: bool) -> dict[str, int]:
        """Model -> jobs waiting in its queues (and a load request, with ``wishes``), for
        those of ``models`` with any."""
        if not models:
            return {}
        by_queue = {self._settings.queue_of(model): model for model in models}
        names = [
            n for n in rq_bridge.queue_names(self._connection) if model_queue_of(n) in by_queue
        ]
        waiting = dict.fromkeys(models, 0)
        if names:
            with self._connection.pipeline(transaction=False) as pipeline:
                for name in names:
                    pipeline.llen(rq_bridge.queue_key(name))
                for name, depth in zip(names, pipeline.execute(), strict=True):
                    waiting[by_queue[model_queue_of(name)]] += int(depth)
        for model in protocol.read_wishes(self._connection, sorted(models)) if wishes else []:
            waiting[model] += 1
        return {model: count for model, count in waiting.items() if count}

    def _fleet(self) -> list[WorkerView]:
        names = [name for name, _ in protocol.live_worker_beats(self._connection)]
        stats = protocol.read_stats(self._connection, names)
        catalogues = protocol.read_catalogues(self._connection, names)
        return [
            WorkerView.of(name, s, c) for name, s, c in zip(names, stats, catalogues, strict=True)
        ]

    def _load(self, model: str, reason: str) -> None:
        item = self._host.catalogue.item(model)
        if item is None:
            return
        evict = self._host.make_room(item.entry.memory_bytes or 0)
        if evict is None:
            return  # the fleet's view was a beat old: this worker has no room after all
        if not protocol.claim_load(self._connection, model, self._name, CLAIM_TTL_S):
            return  # another worker took this load
        for other in evict:
            self.unload(other, f"evicted (least recently used) to make room for {model}")
        self._host.order_load(item)
        self._decide(model, "load", reason)

    # -- a model that cannot be loaded ---------------------------------------------------------

    def _answer_waiting(self, model: str, code: ErrorCode, why: str) -> None:
        """Unless another live worker may still load ``model``, answer every job waiting
        for it with the reason, now, rather than at its deadline."""
        try:
            if self._others_may_serve(model):
                return
            answered = self._fail_queued(model, ErrorEvent(seq=0, code=code, message=why))
        except redis.RedisError as exc:
            log.warning("could not answer the jobs waiting for %s (%s)", model, exc)
            return
        if answered:
            log.info("%d request(s) waiting for %s answered: %s", answered, model, why)

    def _others_may_serve(self, model: str) -> bool:
        return any(
            view.name != self._name
            and view.takes_jobs
            and (view.holds(model) or (model in view.catalogue and view.catalogue[model].servable))
            for view in self._fleet()
        )

    def _fail_queued(self, model: str, event: ErrorEvent) -> int:
        shared = self._settings.queue_of(model)
        names = [n for n in rq_bridge.queue_names(self._connection) if model_queue_of(n) == shared]
        answered = 0
        for name in names:
            for job_id in rq_bridge.queued_job_ids(self._connection, name):
                if not self._connection.eval(*rq_bridge.withdraw_queued_job(job_id, name)):
                    continue  # a worker took it meanwhile: it answers it
                protocol.publish_event(self._connection, job_id, event, self._settings.event_ttl)
                answered += 1
        return answered

    # -- the record of decisions --------------------------------------------------------------

    def _decide(self, model: str, action: str, reason: str) -> None:
        log.info("placement: %s %s: %s", action, model, reason)
        decision = Decision(
            at=time.time(),
            worker=self._name,
            host=self._host_name,
            model=model,
            action=action,
            reason=reason,
        )
        try:
            protocol.log_decision(self._connection, decision)
        except redis.RedisError as exc:  # the log line above stays
            log.debug("could not record a placement decision (%s)", exc)
