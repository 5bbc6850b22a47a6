"""Continuous batching on mlx-lm, owned by one thread (MLX is touched from that thread only).

A lone one-choice request runs through mlx-lm's single-stream ``generate_step``, which is
faster than ``BatchGenerator`` at batch size 1. As soon as more is asked, the lone stream is
moved, KV cache and all, into the ``BatchGenerator``, and new sequences join it between
decode steps. When the batch drains, the next lone request runs single-stream again.

Every sequence starts from the longest prefix of its prompt that the prefix cache holds
(worker/prefix_cache.py). The choices of one prompt (``n`` > 1) share one prefill: the first
is prefilled, and the others start from a copy of its cache once its prompt is processed.
"""

import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, generate_step
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from shared.errors import Cancelled, GenerationFailed, JobTimedOut, MlxqError
from shared.schemas import Choice, JobRequest, SamplingParams
from shared.settings import Settings
from worker.engine_api import (
    Emit,
    EngineRequest,
    Failed,
    Finished,
    PrefixCacheReport,
    TokenOutput,
    refuse_other_kind,
)
from worker.logprobs import LogprobReader
from worker.model import LoadedModel, load_model
from worker.prefix_cache import PrefixCache, default_cache_bytes, kv_bytes_per_token
from worker.request_checks import RequestPreparer
from worker.sampling import make_logits_processors, make_request_sampler
from worker.sequence import Released, Sequence

log = logging.getLogger(__name__)

PREFILL_BATCH_SIZE = 8
"""Prompts prefilled together by BatchGenerator (mlx-lm's default)."""
ENGINE_JOIN_S = 30.0
"""How long ``stop`` waits for the engine thread to fail what it still holds and exit."""
STORE_PROMPT_MIN_TOKENS = 64
"""A freshly prefilled prompt goes into the prefix cache at once only when it is at least this
long (shorter ones cost little to prefill again; every sequence is stored when it ends)."""


class _Stop:
    """Put in the inbox by ``stop``: the engine thread ends after it."""


@dataclass
class _Job:
    """The sequences of one job; it ends when the last of them has."""

    request: EngineRequest
    sequences: list[Sequence]
    choices: dict[int, Choice] = field(default_factory=dict)
    cached_tokens: int = 0

    @property
    def job_id(self) -> str:
        return self.request.job_id


@dataclass
class _SingleStream:
    sequence: Sequence
    cache: list[Any]
    steps: Any  # the generate_step generator


@dataclass
class _Follower:
    """A sequence waiting for a leader's prompt to be prefilled, to start from a copy of its
    cache: another choice of the same prompt, or a request that shares a long prefix with a
    prompt being prefilled right now."""

    sequence: Sequence
    shared: int
    """Leading prompt tokens it shares with the leader."""


class MLXEngine:
    """Built like every engine, ``MLXEngine(settings, emit)``: it loads MLXQ_MODEL itself.
    ``loaded`` hands it a model already loaded (tests, benchmarks)."""

    def __init__(self, settings: Settings, emit: Emit, *, loaded: LoadedModel | None = None):
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
        self.model_id = loaded.model_id
        self.context_length = loaded.context_length
        self.suggested_temperature = loaded.temperature
        self._model = loaded.model
        self._tokenizer = loaded.tokenizer
        self._eos = set(loaded.tokenizer.eos_token_ids)
        self._preparer = RequestPreparer(loaded, settings.max_tokens_cap)
        self._max_batch = settings.worker_concurrency
        self._emit = emit
        self._inbox: queue.Queue[EngineRequest | _Stop] = queue.Queue()
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._single: _SingleStream | None = None
        self._batch: BatchGenerator | None = None
        self._in_batch: dict[int, Sequence] = {}
        self._followers: dict[int, list[_Follower]] = {}
        self._prefilling: dict[int, list[int]] = {}
        """Leaders being prefilled (uid -> prompt), for later arrivals to follow."""
        self._peak = 0
        self._generated = 0
        self._single_ok = can_trim_prompt_cache(make_prompt_cache(self._model))
        cache_bytes = settings.prefix_cache_bytes
        if cache_bytes is None:
            cache_bytes = default_cache_bytes(kv_bytes_per_token(self._model), self.context_length)
        self.prefix_cache = PrefixCache(self._model, cache_bytes)
        self._logprobs = LogprobReader(loaded.tokenizer)
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)

    # -- called from the RQ side -------------------------------------------------------------

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest:
        generation = refuse_other_kind(request, self.model_id)
        return self._preparer.prepare(job_id, generation, time.monotonic() + timeout_s)

    def submit(self, request: EngineRequest) -> None:
        self._inbox.put(request)

    def cancel(self, job_id: str) -> None:
        """Stop generating for a job; takes effect before the next decode step."""
        with self._cancel_lock:
            self._cancelled.add(job_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(_Stop())
        self._thread.join(timeout=ENGINE_JOIN_S)

    @property
    def peak_batch_size(self) -> int:
        return self._peak

    def prefix_cache_report(self) -> PrefixCacheReport:
        stats = self.prefix_cache.stats  # counters: a slightly stale read is fine
        return PrefixCacheReport(stats.queried_tokens, stats.hit_tokens, self.prefix_cache.nbytes)

    @property
    def generated_tokens(self) -> int:
        return self._generated

    # -- the engine thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            arrivals = self._take_arrivals()
            if arrivals is None:
                break
            try:
                self._place(arrivals)
            except Exception as exc:  # the batch itself broke: fail what is in it
                log.exception("could not add requests to the batch")
                self._fail_all(GenerationFailed(f"Generation failed: {exc}"))
            if not self._jobs:
                continue
            try:
                self._drop_cancelled()
                self._expire_timed_out()
                if self._single is not None:
                    self._step_single()
                elif self._in_batch or self._followers:
                    self._step_batch()
            except Exception as exc:  # one broken step fails the requests in it, not the worker
                log.exception("generation step failed")
                self._fail_all(GenerationFailed(f"Generation failed: {exc}"))
        self._fail_all(GenerationFailed("The worker shut down before the answer was complete."))

    def _take_arrivals(self) -> list[EngineRequest] | None:
        """New requests; blocks only when there is nothing to generate."""
        arrivals: list[EngineRequest] = []
        try:
            item = self._inbox.get(block=not self._jobs)
            while True:
                if isinstance(item, _Stop):
                    return None
                arrivals.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return arrivals

    def _place(self, arrivals: list[EngineRequest]) -> None:
        jobs = [job for job in map(self._admit, arrivals) if job is not None]
        if not jobs:
            return
        busy = self._single is not None or bool(self._in_batch) or bool(self._followers)
        lone = len(jobs) == 1 and len(jobs[0].sequences) == 1
        if not busy and lone and self._single_ok:
            self._start_single(jobs[0])
        else:
            if self._single is not None:
                self._move_single_into_batch()
            joining = busy and len(jobs) == 1  # one request joins a batch already running
            for job in jobs:
                self._insert_job(job, joining)
        running = len(self._in_batch) + (self._single is not None)
        self._peak = max(self._peak, running)

    def _admit(self, request: EngineRequest) -> _Job | None:
        """The job's sequences, or None when it is refused (with its Failed sent)."""
        if self._take_cancelled({request.job_id}):
            self._emit(Failed(request.job_id, Cancelled("The client went away.")))
            return None
        if time.monotonic() >= request.timeout_at:
            self._emit(Failed(request.job_id, JobTimedOut("The job timed out before it started.")))
            return None
        try:
            job = _Job(request, self._new_sequences(request))
        except Exception as exc:  # e.g. sampling settings MLX rejects: this request alone fails
            log.exception("job %s: could not start", request.job_id)
            self._emit(Failed(request.job_id, GenerationFailed(f"Could not start: {exc}")))
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
                    )
                )
        return sequences

    def _send_echo(self, job: _Job) -> None:
        """Completions with ``echo``: each choice's answer starts with its prompt."""
        if not (job.request.request.echo and job.request.request.stream):
            return
        for sequence in job.sequences:
            text = self._tokenizer.decode(sequence.prompt)
            self._emit(TokenOutput(job.job_id, text, index=sequence.index))

    def _take_cancelled(self, job_ids: set[str]) -> set[str]:
        with self._cancel_lock:
            found = self._cancelled & job_ids
            self._cancelled -= found
            return found

    def _drop_cancelled(self) -> None:
        for job_id in self._take_cancelled(set(self._jobs)):
            self._drop(self._jobs[job_id], Cancelled("The client went away."))

    def _expire_timed_out(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._jobs.values() if now >= j.request.timeout_at]:
            message = "The request's time limit passed while generating."
            self._drop(job, JobTimedOut(message, partial=job.sequences[0].text_so_far()))

    # single stream

    def _start_single(self, job: _Job) -> None:
        (sequence,) = job.sequences
        cache, cached = self.prefix_cache.fetch(sequence.prompt)
        job.cached_tokens = cached
        cache = cache or make_prompt_cache(self._model)
        steps = generate_step(
            mx.array(sequence.prompt[cached:]),
            self._model,
            max_tokens=sequence.max_tokens,
            sampler=sequence.sampler,
            logits_processors=sequence.processors,
            prompt_cache=cache,
        )
        self._single = _SingleStream(sequence, cache, steps)

    def _step_single(self) -> None:
        assert self._single is not None
        single = self._single
        token, logprobs = next(single.steps)
        if self._accept(single.sequence, token, logprobs, None):
            self._single = None
            # generate_step feeds each token before yielding the next: the cache holds them all
            self.prefix_cache.store(single.sequence.prompt + single.sequence.tokens, single.cache)

    def _move_single_into_batch(self) -> None:
        """generate_step has already fed its last yielded token into the cache: take it back
        out and hand that token to the batch as a one-token prompt, so nothing is lost."""
        assert self._single is not None
        single, self._single = self._single, None
        sequence = single.sequence
        trim_prompt_cache(single.cache, 1)
        if hasattr(sequence.sampler, "rewind"):
            sequence.sampler.rewind()
        (sequence.uid,) = self._batch_generator().insert(
            [[sequence.tokens[-1]]],
            max_tokens=[sequence.max_tokens - len(sequence.tokens)],
            caches=[single.cache],
            all_tokens=[sequence.prompt + sequence.tokens[:-1]],
            samplers=[sequence.sampler],
            logits_processors=[sequence.processors],
        )
        self._in_batch[sequence.uid] = sequence

    # batch

    def _batch_generator(self) -> BatchGenerator:
        if self._batch is None:
            self._batch = BatchGenerator(
                self._model,
                stop_tokens=[[t] for t in self._eos],
                completion_batch_size=self._max_batch,
                prefill_batch_size=min(PREFILL_BATCH_SIZE, self._max_batch),
            )
        return self._batch

    def _insert_job(self, job: _Job, joining: bool = False) -> None:
        """Each prompt's first choice starts from the prefix cache, or follows a prompt being
        prefilled that shares more of it; its other choices follow it (one prefill).
        ``joining``: the job alone joins a running batch (see ``_insert_prefilled``)."""
        n = job.request.request.n
        for start in range(0, len(job.sequences), n):
            group = job.sequences[start : start + n]
            leader, others = group[0], group[1:]
            cache, cached = self.prefix_cache.fetch(leader.prompt)
            followed = self._follow_prefill(leader, cached)
            if followed is None:
                job.cached_tokens += cached
            else:
                shared = self._followers[followed][-1].shared
                self._followers[followed] += [_Follower(other, shared) for other in others]
                continue
            if len(leader.prompt) - cached > 1 and (
                others or len(leader.prompt) - cached >= STORE_PROMPT_MIN_TOKENS
            ):
                self._insert([leader], cache, cached)
                assert leader.uid is not None
                self._prefilling[leader.uid] = leader.prompt
                self._followers[leader.uid] = [_Follower(o, len(o.prompt) - 1) for o in others]
            elif joining and not others and len(leader.prompt) - cached > 1:
                self._insert_prefilled(leader, cache, cached)
            else:
                self._insert(group, cache, cached)

    def _follow_prefill(self, sequence: Sequence, cached: int) -> int | None:
        """The uid of a prompt being prefilled that shares a longer prefix with this one than
        the prefix cache gave (by STORE_PROMPT_MIN_TOKENS or more); the sequence then waits."""
        best_uid, best = None, cached + STORE_PROMPT_MIN_TOKENS - 1
        for uid, prompt in self._prefilling.items():
            shared = min(_common_prefix(prompt, sequence.prompt), len(sequence.prompt) - 1)
            if shared > best:
                best_uid, best = uid, shared
        if best_uid is not None:
            self._followers[best_uid].append(_Follower(sequence, best))
        return best_uid

    def _insert(self, sequences: list[Sequence], cache: list[Any] | None, cached: int) -> None:
        """Insert sequences that share one prompt, each from its own copy of ``cache``."""
        caches = [cache] + [copy.deepcopy(cache) for _ in sequences[1:]] if cache else None
        uids = self._batch_generator().insert(
            [s.prompt[cached:] for s in sequences],
            max_tokens=[s.max_tokens for s in sequences],
            caches=caches,
            all_tokens=[list(s.prompt[:cached]) for s in sequences],
            samplers=[s.sampler for s in sequences],
            logits_processors=[s.processors for s in sequences],
        )
        for uid, sequence in zip(uids, sequences, strict=True):
            sequence.uid = uid
            self._in_batch[uid] = sequence

    def _insert_prefilled(self, sequence: Sequence, cache: list[Any] | None, cached: int) -> None:
        """Prefill a short uncached tail here, at once, and let the sequence join with its last
        token only. Given the whole tail, BatchGenerator would prefill it after the batch's
        next decode step and start it one call later, after another decode step: this way
        the sequence's first token comes one decode step of the batch sooner (the time to
        first token of a chat's later turn, docs/benchmarks.md section g). The batch does the
        same work either way."""
        cache = cache or make_prompt_cache(self._model)
        with mx.stream(self._batch_generator().stream):
            self._model(mx.array(sequence.prompt[cached:-1])[None], cache=cache)
            mx.eval([c.state for c in cache])
        self._insert([sequence], cache, len(sequence.prompt) - 1)

    def _step_batch(self) -> None:
        batch = self._batch_generator()
        prompt_responses, responses = batch.next()
        for prompt_response in prompt_responses:
            if prompt_response.end_of_segment and not prompt_response.end_of_prompt:
                self._prompt_prefilled(prompt_response.uid)
        for response in responses:
            sequence = self._in_batch.get(response.uid)
            if sequence is None:
                continue
            if self._accept(sequence, response.token, response.logprobs, response.finish_reason):
                del self._in_batch[response.uid]
                tokens = sequence.prompt + sequence.tokens
                if response.finish_reason is None:  # a stop string: the batch does not know
                    caches = batch.remove([response.uid], return_prompt_caches=True)
                    if response.uid in caches:
                        self.prefix_cache.store(tokens, caches[response.uid][0])
                elif response.prompt_cache is not None:
                    self.prefix_cache.store(tokens, response.prompt_cache)

    def _prompt_prefilled(self, uid: int) -> None:
        """A leader's prompt (all but its last token) is in the KV cache: start the sequences
        that wait for it from copies, and keep one for later requests with the same prefix."""
        self._prefilling.pop(uid, None)
        followers = self._followers.pop(uid, None)
        if followers is None:
            return
        extracted = self._batch_generator().extract_cache([uid]).get(uid)
        if extracted is None:  # the leader is gone: its followers start on their own
            self._start_followers(followers, None)
            return
        cache, tokens = extracted[0], list(extracted[1])
        self._start_followers(followers, (cache, tokens))
        self.prefix_cache.store(tokens, cache)

    def _start_followers(
        self, followers: list[_Follower], prefilled: tuple[list[Any], list[int]] | None
    ) -> None:
        for follower in followers:
            sequence = follower.sequence
            if self._jobs.get(sequence.job_id) is None:
                continue  # its job ended meanwhile
            if prefilled is None:
                cache, cached = self.prefix_cache.fetch(sequence.prompt)
            else:
                cached = min(follower.shared, len(prefilled[1]))
                cache = copy.deepcopy(prefilled[0])
                trim_prompt_cache(cache, len(prefilled[1]) - cached)
                job = self._jobs[sequence.job_id]
                if sequence.index % job.request.request.n == 0:  # a leader of its own prompt
                    job.cached_tokens += cached
            self._insert([sequence], cache, cached)

    # shared by both paths

    def _accept(
        self,
        sequence: Sequence,
        token: int,
        logprobs: Any,
        finish_reason: Literal["stop", "length"] | None,
    ) -> bool:
        """Take one generated token; returns True when the sequence is finished."""
        self._generated += 1
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
        choice = sequence.choice(reason)
        if job.request.request.echo:
            echo = self._tokenizer.decode(sequence.prompt)
            choice = choice.model_copy(update={"text": echo + choice.text})
        job.choices[sequence.index] = choice
        if len(job.choices) == len(job.sequences):
            del self._jobs[job.job_id]
            choices = [job.choices[i] for i in sorted(job.choices)]
            self._emit(Finished(job.job_id, choices, job.request.prompt_tokens, job.cached_tokens))

    def _drop(self, job: _Job, error: MlxqError) -> None:
        """End a job early: take its sequences out of wherever they are."""
        for sequence in job.sequences:
            if self._single is not None and self._single.sequence is sequence:
                self._single = None
            elif sequence.uid is not None and sequence.uid in self._in_batch:
                del self._in_batch[sequence.uid]
                if self._batch is not None:
                    self._batch.remove([sequence.uid])
        del self._jobs[job.job_id]
        self._emit(Failed(job.job_id, error))
        for sequence in job.sequences:  # sequences of other jobs that waited on this one
            if sequence.uid is not None and sequence.uid in self._followers:
                self._prefilling.pop(sequence.uid, None)
                self._start_followers(self._followers.pop(sequence.uid), None)

    def _fail_all(self, error: MlxqError) -> None:
        for job in list(self._jobs.values()):
            self._emit(Failed(job.job_id, error))
        self._jobs.clear()
        self._single = None
        self._in_batch.clear()
        self._followers.clear()
        self._prefilling.clear()
        self._batch = None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


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
