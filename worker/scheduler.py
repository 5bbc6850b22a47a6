"""Where each sequence of the MLX engine runs, and from which KV cache it starts; owned by the
engine thread, like everything MLX.

A lone one-choice request runs single-stream, which is faster than ``BatchGenerator`` at batch
size 1: speculatively (worker/speculative_stream.py: guessed tokens checked in one forward
pass), or through mlx-lm's ``generate_step`` when the request turned speculation off. As soon
as more is asked, the lone stream is moved, KV cache and all, into the ``BatchGenerator``, and
new sequences join it between decode steps; a batch step checks its sequences' guesses when
they pay (worker/batch_speculation.py). When the batch drains, the next lone request runs
single-stream again.

Every sequence starts from the longest prefix of its prompt that the prefix cache holds
(worker/prefix_cache.py). The choices of one prompt (``n`` > 1) share one prefill: the first
is prefilled, and the others follow it, starting from a copy of its cache once its prompt is
processed; a request that arrives while another with a long common prefix is being
prefilled follows it the same way.

The engine (worker/mlx_engine.py) decides what each token means (``accept``) and when a job
ends; the scheduler only places sequences, steps them and keeps their caches.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, generate_step
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from shared.schemas import Choice, PromptLogprob
from worker.batch_speculation import plan_drafts, speculative_next
from worker.engine_api import EngineRequest
from worker.prefix_cache import PrefixCache, common_prefix
from worker.sequence import Sequence
from worker.speculative_stream import SpeculativeStream

PREFILL_BATCH_SIZE = 8
"""Prompts prefilled together by BatchGenerator (mlx-lm's default)."""
STORE_PROMPT_MIN_TOKENS = 64
"""A freshly prefilled prompt goes into the prefix cache at once only when it is at least this
long (shorter ones cost little to prefill again; every sequence is stored when it ends)."""

Accept = Callable[[Sequence, int, Any, Literal["stop", "length"] | None], bool]
"""The engine's reading of one generated token (sequence, token, logprobs, the batch's finish
reason); True when the sequence has ended."""


@dataclass
class ScheduledJob:
    """The sequences of one job; it ends when the last of them has."""

    request: EngineRequest
    sequences: list[Sequence]
    choices: dict[int, Choice] = field(default_factory=dict)
    cached_tokens: int = 0
    first_token_at: float | None = None
    """time.monotonic() of its first generated token (the engine's accept sets both)."""
    last_token_at: float | None = None
    prompt_logprobs: list[list[PromptLogprob]] | None = None
    """``echo`` with ``logprobs``: each prompt's tokens scored (worker/prompt_scoring.py)."""

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


class Scheduler:
    """``job_of`` finds a job the engine still runs (None once it ended)."""

    def __init__(
        self,
        model: Any,
        prefix_cache: PrefixCache,
        eos: set[int],
        max_batch: int,
        job_of: Callable[[str], ScheduledJob | None],
    ) -> None:
        self._model = model
        self.prefix_cache = prefix_cache
        self._eos = eos
        self._max_batch = max_batch
        self._job_of = job_of
        self._single: _SingleStream | SpeculativeStream | None = None
        self._batch: BatchGenerator | None = None
        self._in_batch: dict[int, Sequence] = {}
        self._followers: dict[int, list[_Follower]] = {}
        self._prefilling: dict[int, list[int]] = {}
        """Leaders being prefilled (uid -> prompt), for later arrivals to follow."""
        self._single_ok = can_trim_prompt_cache(make_prompt_cache(model))

    @property
    def running(self) -> int:
        """Sequences generating now."""
        return len(self._in_batch) + (self._single is not None)

    def place(self, jobs: list[ScheduledJob]) -> None:
        """Start newly admitted jobs: a lone one-choice job alone on the single stream, the
        rest in the batch (the lone stream moves into it first)."""
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

    def step(self, accept: Accept) -> None:
        """One decode step of whichever path runs (nothing when nothing does)."""
        if self._single is not None:
            self._step_single(accept)
        elif self._in_batch or self._followers:
            self._step_batch(accept)

    def remove(self, job: ScheduledJob) -> None:
        """Take an ended job's sequences out of wherever they are; the engine has already
        forgotten the job. Sequences of other jobs that waited on them start on their own."""
        for sequence in job.sequences:
            if self._single is not None and self._single.sequence is sequence:
                self._single = None
            elif sequence.uid is not None and sequence.uid in self._in_batch:
                del self._in_batch[sequence.uid]
                if self._batch is not None:
                    self._batch.remove([sequence.uid])
        for sequence in job.sequences:
            if sequence.uid is not None and sequence.uid in self._followers:
                self._prefilling.pop(sequence.uid, None)
                self._start_followers(self._followers.pop(sequence.uid), None)

    def reset(self) -> None:
        """Drop everything (the engine failed every job): a new batch starts afresh."""
        self._single = None
        self._in_batch.clear()
        self._followers.clear()
        self._prefilling.clear()
        self._batch = None

    # single stream

    def _start_single(self, job: ScheduledJob) -> None:
        (sequence,) = job.sequences
        cache, cached = self.prefix_cache.fetch(sequence.prompt)
        job.cached_tokens = cached
        cache = cache or make_prompt_cache(self._model)
        if sequence.speculative:
            self._single = SpeculativeStream(self._model, sequence, cache, cached)
            return
        steps = generate_step(
            mx.array(sequence.prompt[cached:]),
            self._model,
            max_tokens=sequence.max_tokens,
            sampler=sequence.sampler,
            logits_processors=sequence.processors,
            prompt_cache=cache,
        )
        self._single = _SingleStream(sequence, cache, steps)

    def _step_single(self, accept: Accept) -> None:
        assert self._single is not None
        single = self._single
        if isinstance(single, SpeculativeStream):
            for token, logprobs in single.step():
                if accept(single.sequence, token, logprobs, None):
                    self._single = None
                    tokens = single.sequence.prompt + single.sequence.tokens
                    self.prefix_cache.store(tokens, single.cache_for(tokens))
                    return
            return
        token, logprobs = next(single.steps)
        if accept(single.sequence, token, logprobs, None):
            self._single = None
            # generate_step feeds each token before yielding the next: the cache holds them all
            self.prefix_cache.store(single.sequence.prompt + single.sequence.tokens, single.cache)

    def _move_single_into_batch(self) -> None:
        """generate_step has already fed its last yielded token into the cache: take it back
        out and hand that token to the batch as a one-token prompt, so nothing is lost."""
        assert self._single is not None
        single, self._single = self._single, None
        sequence = single.sequence
        if isinstance(single, _SingleStream):  # a speculative stream has not fed its last
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

    def _insert_job(self, job: ScheduledJob, joining: bool = False) -> None:
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
            shared = min(common_prefix(prompt, sequence.prompt), len(sequence.prompt) - 1)
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

    def _step_batch(self, accept: Accept) -> None:
        batch = self._batch_generator()
        prompt_responses, responses = self._next_of(batch)
        for prompt_response in prompt_responses:
            if prompt_response.end_of_segment and not prompt_response.end_of_prompt:
                self._prompt_prefilled(prompt_response.uid)
        for response in responses:
            sequence = self._in_batch.get(response.uid)
            if sequence is None:
                continue
            if accept(sequence, response.token, response.logprobs, response.finish_reason):
                del self._in_batch[response.uid]
                tokens = sequence.prompt + sequence.tokens
                if response.finish_reason is None:  # a stop string: the batch does not know
                    caches = batch.remove([response.uid], return_prompt_caches=True)
                    if response.uid in caches:
                        self.prefix_cache.store(tokens, caches[response.uid][0])
                elif response.prompt_cache is not None:
                    self.prefix_cache.store(tokens, response.prompt_cache)

    def _next_of(self, batch: BatchGenerator) -> tuple[list[Any], list[Any]]:
        """The batch's next step: its generation part speculative when drafts are worth it
        (worker/batch_speculation.py); prompts are prefilled around it as mlx-lm does."""
        generating = batch._generation_batch
        sequences = [self._in_batch.get(uid) for uid in generating.uids]
        drafts = plan_drafts(generating, sequences) if generating.uids else None
        if drafts is None:
            return batch.next()
        # for this step only, the batch's generation part is the speculative one
        generating.next = lambda: speculative_next(generating, drafts, sequences)
        try:
            return batch.next()
        finally:
            del generating.next

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
            if self._job_of(sequence.job_id) is None:
                continue  # its job ended meanwhile
            if prefilled is None:
                cache, cached = self.prefix_cache.fetch(sequence.prompt)
            else:
                cached = min(follower.shared, len(prefilled[1]))
                cache = copy.deepcopy(prefilled[0])
                trim_prompt_cache(cache, len(prefilled[1]) - cached)
                job = self._job_of(sequence.job_id)
                assert job is not None
                if sequence.index % job.request.request.n == 0:  # a leader of its own prompt
                    job.cached_tokens += cached
            self._insert([sequence], cache, cached)
