"""Continuous batching on mlx-lm, owned by one thread (MLX is touched from that thread only).

The engine admits each request as a job of sequences (one per prompt and choice, each with
its sampler, logits processors and stop rules), reads every generated token (stops,
reasoning, tool calls, logprobs: worker/sequence.py), streams it, and ends each job with its
choices or an error. Where the sequences run (single stream or batch) and from which KV cache
they start (the prefix cache, a shared prefill) is the scheduler's work (worker/scheduler.py).
Its inbox, cancel set and thread are worker/engine_thread.py's.
"""

import logging
import time
from typing import Any, Literal

from shared.errors import Cancelled, GenerationFailed, JobTimedOut, MlxqError
from shared.schemas import (
    Choice,
    JobRequest,
    PromptLogprob,
    SamplingParams,
    SpeculationStats,
    TokenizeRequest,
)
from shared.settings import Settings
from worker.draft_model import DraftModel, load_draft_model
from worker.engine_api import (
    Emit,
    EngineRequest,
    Failed,
    Finished,
    KvCacheReport,
    PrefixCacheReport,
    SpeculationCounts,
    TokenOutput,
    refuse_other_kind,
)
from worker.engine_thread import SHUT_DOWN_MESSAGE, ThreadedEngine
from worker.logprobs import LogprobReader
from worker.model import LoadedModel, load_model
from worker.prefix_cache import PrefixCache, default_cache_bytes, kv_bytes_per_token
from worker.prompt_lookup import Drafter
from worker.prompt_scoring import score_prompt
from worker.request_checks import RequestPreparer
from worker.sampling import make_logits_processors, make_request_sampler
from worker.scheduler import ScheduledJob, Scheduler
from worker.sequence import Released, Sequence
from worker.tokenize_job import run_tokenize

log = logging.getLogger(__name__)


class MLXEngine(ThreadedEngine):
    """Built like every engine, ``MLXEngine(settings, emit)``: it loads MLXQ_MODEL itself.
    ``loaded`` hands it a model already loaded (tests, benchmarks)."""

    reuses_prefixes = True

    def __init__(
        self,
        settings: Settings,
        emit: Emit,
        *,
        loaded: LoadedModel | None = None,
        draft: DraftModel | None = None,
    ):
        super().__init__(emit, "mlx-engine")
        if loaded is None:
            loaded = load_model(
                settings.model, settings.cache_dir, cpu_dequantize=settings.cpu_dequantize
            )
            log.info(
                "loaded %s from %s (context %s tokens)",
                loaded.model_id,
                loaded.path,
                loaded.context_length,
            )
            draft = load_draft_model(settings, loaded, is_default=True)
        self.model_id = loaded.model_id
        self.context_length = loaded.context_length
        self.suggested_temperature = loaded.temperature
        self.facts = loaded.facts
        self.peak_batch_size = 0
        self.generated_tokens = 0
        self.draft_tokens = SpeculationCounts()
        self._tokenizer = loaded.tokenizer
        self._model = loaded.model
        self._eos = set(loaded.tokenizer.eos_token_ids)
        self._preparer = RequestPreparer(loaded, settings.max_tokens_cap)
        self._speculation = settings.speculation
        self._draft = draft
        self._jobs: dict[str, ScheduledJob] = {}
        self._kv_per_token = kv_bytes_per_token(loaded.model)
        self._kv_budget = (
            settings.worker_concurrency
            * (self.context_length or settings.max_tokens_cap)
            * self._kv_per_token
        )
        self.prefix_cache = PrefixCache(loaded.model, self._prefix_cache_bytes(settings))
        self.scheduler = Scheduler(
            loaded.model, self.prefix_cache, self._eos, settings.worker_concurrency, self._jobs.get
        )
        self._logprobs = LogprobReader(loaded.tokenizer)

    def _prefix_cache_bytes(self, settings: Settings) -> int:
        """MLXQ_PREFIX_CACHE_BYTES, or a default from the model and the machine."""
        if settings.prefix_cache_bytes is not None:
            return settings.prefix_cache_bytes
        return default_cache_bytes(self._kv_per_token, self.context_length)

    # -- called from the RQ side -------------------------------------------------------------

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest[Any]:
        timeout_at = time.monotonic() + timeout_s
        if isinstance(request, TokenizeRequest):  # answered on this thread, in submit
            vocab_size = self._preparer.vocab_size
            tokenized = run_tokenize(self._tokenizer, request, self.context_length, vocab_size)
            return EngineRequest(job_id, request, [], [], timeout_at, payload=tokenized)
        generation = refuse_other_kind(request, self.model_id)
        return self._preparer.prepare(job_id, generation, timeout_at)

    def submit(self, request: EngineRequest[Any]) -> None:
        """A tokenizer job is answered at once (the model is not needed); the rest go to the
        engine thread."""
        if isinstance(request.request, TokenizeRequest):
            self._emit(Finished(request.job_id, [], 0, tokenized=request.payload))
            return
        super().submit(request)

    def prefix_cache_report(self) -> PrefixCacheReport:
        stats = self.prefix_cache.stats  # counters: a slightly stale read is fine
        cache = self.prefix_cache
        budget = cache.max_bytes if cache.enabled else 0
        return PrefixCacheReport(stats.queried_tokens, stats.hit_tokens, cache.nbytes, budget)

    def kv_cache_report(self) -> KvCacheReport:
        """The running sequences' tokens (prompt and generated) times the KV bytes a token
        takes; read from the main thread (a snapshot of the jobs: a stale read is fine)."""
        tokens = sum(
            len(sequence.prompt) + len(sequence.tokens)
            for job in list(self._jobs.copy().values())
            for sequence in job.sequences
        )
        return KvCacheReport(tokens * self._kv_per_token, self._kv_budget)

    def speculation_report(self) -> SpeculationCounts:
        counts = self.draft_tokens  # two counters: a slightly stale read is fine
        return SpeculationCounts(counts.proposed, counts.accepted)

    # -- the engine thread ---------------------------------------------------------------

    def _run(self) -> None:
        while (arrivals := self._arrivals(wait=not self._jobs)) is not None:
            admitted = [request for request in arrivals if not self._refused_late(request)]
            self._turn(admitted, self._endings())
        self._fail_all(GenerationFailed(SHUT_DOWN_MESSAGE))

    def _turn(self, admitted: list[EngineRequest], endings: list[tuple[str, MlxqError]]) -> None:
        """One turn of the engine thread: start the admitted requests, end the jobs named in
        ``endings``, run one step. A group's ranks each run the same turns (worker/group)."""
        try:
            self._place(admitted)
        except Exception as exc:  # the batch itself broke: fail what is in it
            log.exception("could not add requests to the batch")
            self._fail_all(GenerationFailed(f"Generation failed: {exc}"))
        if not self._jobs:
            return
        try:
            for job_id, error in endings:
                if job_id in self._jobs:
                    self._drop(self._jobs[job_id], error)
            if self._jobs:
                self.scheduler.step(self._accept)
        except Exception as exc:  # one broken step fails the requests in it, not the worker
            log.exception("generation step failed")
            self._fail_all(GenerationFailed(f"Generation failed: {exc}"))

    def _place(self, admitted: list[EngineRequest]) -> None:
        jobs = [job for job in map(self._start, admitted) if job is not None]
        if not jobs:
            return
        self.scheduler.place(jobs)
        self.peak_batch_size = max(self.peak_batch_size, self.scheduler.running)

    def _refused_late(self, request: EngineRequest) -> bool:
        """A request cancelled or out of time before it started: answered here, not run."""
        if self._take_cancelled({request.job_id}):
            self._emit(Failed(request.job_id, Cancelled("The client went away.")))
            return True
        if time.monotonic() >= request.timeout_at:
            self._emit(Failed(request.job_id, JobTimedOut("The job timed out before it started.")))
            return True
        return False

    def _start(self, request: EngineRequest) -> ScheduledJob | None:
        """The job's sequences, or None when it could not start (with its Failed sent) or
        is already answered (a completion's echoed prompt alone)."""
        try:
            job = ScheduledJob(request, self._new_sequences(request))
            body = request.request
            if body.echo and body.logprobs is not None:
                job.prompt_logprobs = [
                    score_prompt(self._model, prompt, self._logprobs, body.logprobs)
                    for prompt in request.prompts
                ]
        except Exception as exc:  # e.g. sampling settings MLX rejects: this request alone fails
            log.exception("job %s: could not start", request.job_id)
            self._emit(Failed(request.job_id, GenerationFailed(f"Could not start: {exc}")))
            return None
        if request.request.max_tokens == 0:  # only the echoed prompt, scored
            self._send_echo(job)
            choices = [self._echoed(job, s, s.choice("length")) for s in job.sequences]
            self._emit(Finished(job.job_id, choices, request.prompt_tokens))
            return None
        self._jobs[request.job_id] = job
        self._send_echo(job)
        return job

    def _new_sequences(self, request: EngineRequest) -> list[Sequence]:
        spec = self._preparer.sequence_spec(request)
        n = request.request.n
        sequences = []
        limits = zip(request.prompts, request.max_tokens, strict=True)
        for p, (prompt, max_tokens) in enumerate(limits):
            for j in range(n):
                processors = make_logits_processors(request.request.sampling)
                if request.constraint is not None:
                    processors.append(request.constraint())
                detokenizer = self._tokenizer.detokenizer
                if request.request.prompts is not None:
                    _keep_leading_space(detokenizer)
                sequences.append(
                    Sequence(
                        request.job_id,
                        p * n + j,
                        prompt,
                        max_tokens,
                        detokenizer=detokenizer,
                        sampler=make_request_sampler(_choice_sampling(request, j)),
                        processors=processors,
                        spec=spec,
                        drafter=self._drafter(prompt, request),
                    )
                )
        return sequences

    def _drafter(self, prompt: list[int], request: EngineRequest) -> Drafter | None:
        """A sequence's guesser of its next tokens (None: it decodes plainly)."""
        if not (self._speculation and request.request.speculative):
            return None
        return Drafter(prompt, self._draft.session() if self._draft else None)

    def _send_echo(self, job: ScheduledJob) -> None:
        """Completions with ``echo``: each choice's answer starts with its prompt (and, with
        ``logprobs``, its prompt's scores)."""
        if not (job.request.request.echo and job.request.request.stream):
            return
        for sequence in job.sequences:
            text = self._tokenizer.decode(sequence.prompt)
            scores = self._prompt_scores(job, sequence)
            self._emit(TokenOutput(job.job_id, text, index=sequence.index, prompt_logprobs=scores))

    def _prompt_scores(self, job: ScheduledJob, sequence: Sequence) -> list[PromptLogprob] | None:
        if job.prompt_logprobs is None:
            return None
        return job.prompt_logprobs[sequence.index // job.request.request.n]

    def _echoed(self, job: ScheduledJob, sequence: Sequence, choice: Choice) -> Choice:
        """A choice of a completion with ``echo``: its prompt, then its answer."""
        if not job.request.request.echo:
            return choice
        echo = self._tokenizer.decode(sequence.prompt)
        scores = self._prompt_scores(job, sequence)
        return choice.model_copy(update={"text": echo + choice.text, "prompt_logprobs": scores})

    def _endings(self) -> list[tuple[str, MlxqError]]:
        """The running jobs to end before the next step: cancelled, or out of time."""
        endings: list[tuple[str, MlxqError]] = [
            (job_id, Cancelled("The client went away."))
            for job_id in self._take_cancelled(set(self._jobs))
        ]
        now = time.monotonic()
        for job in self._jobs.values():
            if now >= job.request.timeout_at:
                message = "The request's time limit passed while generating."
                partial = job.sequences[0].text_so_far()
                endings.append((job.job_id, JobTimedOut(message, partial=partial)))
        return endings

    # reading what was generated

    def _accept(
        self,
        sequence: Sequence,
        token: int,
        logprobs: Any,
        finish_reason: Literal["stop", "length"] | None,
    ) -> bool:
        """Take one generated token; returns True when the sequence is finished."""
        self.generated_tokens += 1
        job = self._jobs.get(sequence.job_id)
        if job is not None:
            job.last_token_at = time.monotonic()
            job.first_token_at = job.first_token_at or job.last_token_at
        if token in self._eos:
            self._finish(sequence, "stop", sequence.end())
            return True
        logprob = None
        if sequence.spec.logprobs is not None:
            logprob = self._logprobs.entry(token, logprobs, sequence.spec.logprobs)
        released, stopped = sequence.add(token, logprob)
        if stopped:
            self._finish(sequence, "stop", released)
            return True
        if finish_reason is not None or len(sequence.tokens) >= sequence.max_tokens:
            reason: Literal["stop", "length"] = "stop" if finish_reason == "stop" else "length"
            tail = sequence.end()
            released.content += tail.content
            released.reasoning += tail.reasoning
            released.tool_calls += tail.tool_calls
            self._finish(sequence, reason, released)
            return True
        self._send(sequence, released)
        return False

    def _send(self, sequence: Sequence, released: Released) -> None:
        job = self._jobs.get(sequence.job_id)
        if job is None or not job.request.request.stream or not released:
            return
        if released.reasoning:
            self._emit(
                TokenOutput(
                    sequence.job_id, released.reasoning, index=sequence.index, channel="reasoning"
                )
            )
        if released.content or released.tool_calls or released.logprobs:
            self._emit(
                TokenOutput(
                    sequence.job_id,
                    released.content,
                    index=sequence.index,
                    logprobs=released.logprobs or None,
                    tool_calls=released.tool_calls or None,
                )
            )

    def _finish(self, sequence: Sequence, reason: Literal["stop", "length"], last: Released):
        self._send(sequence, last)
        job = self._jobs[sequence.job_id]
        job.choices[sequence.index] = self._echoed(job, sequence, sequence.choice(reason))
        if len(job.choices) == len(job.sequences):
            del self._jobs[job.job_id]
            choices = [job.choices[i] for i in sorted(job.choices)]
            speculation = self._count_drafts(job)
            self._emit(
                Finished(
                    job.job_id,
                    choices,
                    job.request.prompt_tokens,
                    job.cached_tokens,
                    first_token_s=_since(job.request.received_at, job.first_token_at),
                    last_token_s=_since(job.request.received_at, job.last_token_at),
                    speculation=speculation,
                )
            )

    def _drop(self, job: ScheduledJob, error: MlxqError) -> None:
        """End a job early: take its sequences out of wherever they are."""
        del self._jobs[job.job_id]
        self._count_drafts(job)
        self.scheduler.remove(job)
        self._emit(Failed(job.job_id, error))

    def _count_drafts(self, job: ScheduledJob) -> SpeculationStats | None:
        """Add an ended job's draft tokens to the worker's counts; its own (None when it was
        decoded without speculation)."""
        proposed = sum(s.drafted for s in job.sequences)
        accepted = sum(s.accepted for s in job.sequences)
        self.draft_tokens.proposed += proposed
        self.draft_tokens.accepted += accepted
        if not any(s.speculative for s in job.sequences):
            return None
        return SpeculationStats.of(proposed, accepted)

    def _fail_all(self, error: MlxqError) -> None:
        for job in list(self._jobs.values()):
            self._emit(Failed(job.job_id, error))
        self._jobs.clear()
        self.scheduler.reset()


def _since(start: float, at: float | None) -> float | None:
    return None if at is None else round(at - start, 6)


def _choice_sampling(request: EngineRequest, choice: int) -> SamplingParams:
    """A seeded request's choices differ from each other: choice j draws with seed + j."""
    sampling = request.request.sampling
    if sampling.seed is None or choice == 0:
        return sampling
    return sampling.model_copy(update={"seed": (sampling.seed + choice) % 2**64})


def _keep_leading_space(detokenizer: Any) -> None:
    """mlx-lm's detokenizers drop the leading space of a text's first token, right for a chat
    answer but wrong for a raw completion (" Paris" continues "The capital of France is")."""
    if hasattr(detokenizer, "trim_space"):  # SPMStreamingDetokenizer
        detokenizer.trim_space = False
    elif hasattr(detokenizer, "_maybe_trim_space"):  # BPEStreamingDetokenizer
        detokenizer._maybe_trim_space = lambda text: text
