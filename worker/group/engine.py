"""The MLX engine of a worker group: every rank runs the same turns of MLXEngine, rank 0
deciding what each turn holds.

A turn (``MLXEngine._turn``) starts the requests admitted, ends the jobs cancelled or out of
time, and runs one step of the batch; everything else in it follows from the tokens, so ranks
that run the same turns make the same batches, caches and drafts, and each step's forward pass
(whose collectives join the ranks' shares of the model) lines up. Rank 0 (the leader) takes
requests from the worker, decides, and shares its plan before each turn; the other ranks
(followers) prepare the same requests from the plan and take the same turn, answering no one.
What could differ between machines is taken from rank 0: its settings (shared at start-up) and
its prefix cache budget (scaled to each rank's layers, so the same entries fit everywhere).
A turn that fails ends the group (a lost rank fails the others' next collective). While the
group has no jobs, followers wait for the next plan in Redis (worker/group/wake.py).
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from shared.errors import Cancelled, GenerationFailed, MlxqError
from shared.schemas import JobRequest
from shared.settings import Settings
from worker.draft_model import DraftModel
from worker.engine_api import Emit, EngineRequest
from worker.engine_thread import SHUT_DOWN_MESSAGE
from worker.group.ranks import GroupInfo, share
from worker.mlx_engine import MLXEngine
from worker.model import LoadedModel

log = logging.getLogger(__name__)

IDLE_TURN_S = 5.0
"""An idle leader still shares an empty plan this often (waking the followers first): a
follower whose wake-up was lost joins the collective after WAKE_WAIT_S and waits no longer."""
FOLLOWER_TIMEOUT_S = 10.0 * 365 * 24 * 3600
"""A follower's copy of a job never times out by itself: rank 0 says when it ends."""


@dataclass
class Plan:
    """What rank 0 decided for the next turn."""

    arrivals: list[tuple[str, JobRequest]] = field(default_factory=list)
    endings: list[str] = field(default_factory=list)
    """Jobs ended (cancelled, out of time) before the turn's step."""
    stop: bool = False


class GroupEngine(MLXEngine):
    def __init__(
        self,
        settings: Settings,
        emit: Emit,
        *,
        loaded: LoadedModel,
        draft: DraftModel | None,
        group: GroupInfo,
    ) -> None:
        self.group = group
        self._shared = 0
        """Plans shared so far: the same count on every rank (a wake-up names its turn)."""
        super().__init__(settings, emit, loaded=loaded, draft=draft)

    def join(self) -> None:
        """Wait until the engine thread ends (a follower's main thread)."""
        self._thread.join()

    def _prefix_cache_bytes(self, settings: Settings) -> int:
        """Rank 0's budget, per layer, times this rank's layers: every rank's cache then
        keeps and evicts the same entries (an entry's bytes are proportional to its layers)."""
        layers = len(self._model.layers)
        own = (super()._prefix_cache_bytes(settings), layers) if self.group.leads else None
        leader_bytes, leader_layers = share(self.group.group, own)
        return leader_bytes // leader_layers * layers

    def _run(self) -> None:
        try:
            self._lead() if self.group.leads else self._follow()
        except Exception as exc:  # a plan could not be shared: a rank is lost
            log.debug("the group's plan could not be shared", exc_info=True)
            self._fail_all(GenerationFailed(f"the ranks lost touch: {exc}"))
        self._fail_all(GenerationFailed(SHUT_DOWN_MESSAGE))

    def _share(self, plan: Plan | None) -> Plan | None:
        """Rank 0's plan on every rank, shared on the stream the model runs on: its
        collectives then queue behind the forward pass mlx-lm may still be computing ahead
        (generate_step evaluates the next token asynchronously), in the same order on every
        rank. On another stream they would race it, and the ranks' messages would cross."""
        from mlx_lm.generate import generation_stream

        self._shared += 1
        return share(self.group.group, plan, stream=generation_stream)

    def _lead(self) -> None:
        while True:
            idle = not self._jobs
            arrivals = self._arrivals(wait=idle, timeout=IDLE_TURN_S)
            if idle and self.group.wake is not None:  # the followers wait in Redis (wake.py)
                self.group.wake.wake_followers(self._shared + 1)
            if arrivals is None:
                self._stop_followers()
                return
            admitted = [request for request in arrivals if not self._refused_late(request)]
            endings = self._endings()
            plan = None
            if admitted or endings:
                plan = Plan(
                    [(r.job_id, r.request) for r in admitted], [job_id for job_id, _ in endings]
                )
            self._share(plan)
            self._turn(admitted, endings)

    def _stop_followers(self) -> None:
        try:
            self._share(Plan(stop=True))
        except Exception as exc:  # a rank is lost already: end now, do not wait for the watch
            self._fail_all(GenerationFailed(f"could not tell the other ranks to stop: {exc}"))
        if self.group.watch is not None:  # the others stop now: not a loss
            self.group.watch.stop()

    def _follow(self) -> None:
        while True:
            if not self._jobs and self.group.wake is not None:  # as rank 0 sees it: in step
                self.group.wake.wait(self._shared + 1)
            plan = self._share(None)
            if plan is not None and plan.stop:
                return
            admitted: list[EngineRequest[Any]] = []
            endings: list[tuple[str, MlxqError]] = []
            if plan is not None:
                admitted = [
                    self.prepare(job_id, request, FOLLOWER_TIMEOUT_S)
                    for job_id, request in plan.arrivals
                ]
                endings = [(job_id, Cancelled("Ended by rank 0.")) for job_id in plan.endings]
            self._turn(admitted, endings)

    def _fail_all(self, error: MlxqError) -> None:
        """A failed turn ends the whole group, on any rank: a lost peer fails every rank's
        next collective, and a rank whose turn failed alone would no longer be in step. The
        jobs are not failed here: the fleet retries them, as a lost worker's."""
        if error.message != SHUT_DOWN_MESSAGE and self.group.watch is not None:
            self.group.watch.end_group(
                f"rank {self.group.rank} of worker group {self.group.name}: a generation step "
                f"failed ({error.message}); the group ends and its jobs go back to the fleet"
            )
        super()._fail_all(error)
