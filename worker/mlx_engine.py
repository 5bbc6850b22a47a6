"""Continuous batching on mlx-lm, owned by one thread (MLX is touched from that thread only).

A lone request runs through mlx-lm's plain single-stream ``generate_step``, which is faster
than ``BatchGenerator`` at batch size 1. As soon as a second request arrives, the lone one is
moved, KV cache and all, into the ``BatchGenerator``, and new requests join it between decode
steps. When the batch drains, the next lone request runs single-stream again.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, generate_step
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from shared.errors import Cancelled, GenerationFailed, JobTimedOut, MlxqError
from shared.schemas import GenerationRequest
from shared.settings import Settings
from worker.engine_api import Emit, EngineRequest, Failed, Finished, TokenOutput
from worker.model import LoadedModel, load_model
from worker.prompt import fit_max_tokens, prompt_tokens
from worker.sampling import make_request_sampler
from worker.stops import StopMatcher

log = logging.getLogger(__name__)

PREFILL_BATCH_SIZE = 8
"""Prompts prefilled together by BatchGenerator (mlx-lm's default)."""
ENGINE_JOIN_S = 30.0
"""How long ``stop`` waits for the engine thread to fail what it still holds and exit."""


class _Stop:
    """Put in the inbox by ``stop``: the engine thread ends after it."""


@dataclass
class _Sequence:
    """One request being generated: its detokenizer, its text so far, its place in the batch."""

    request: EngineRequest
    detokenizer: Any
    sampler: Any
    stops: StopMatcher
    tokens: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    uid: int | None = None

    def add(self, token: int) -> tuple[str, bool]:
        """Take a token; returns the text it releases and whether a stop string was hit."""
        self.tokens.append(token)
        self.detokenizer.add_token(token)
        return self._release(self.detokenizer.last_segment)

    def end(self) -> str:
        """The text still held back when generation ends without a stop string."""
        self.detokenizer.finalize()
        piece, _ = self._release(self.detokenizer.last_segment)
        rest = self.stops.flush()
        self.pieces.append(rest)
        return piece + rest

    def _release(self, piece: str) -> tuple[str, bool]:
        released, stopped = self.stops.feed(piece)
        self.pieces.append(released)
        return released, stopped

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass
class _SingleStream:
    sequence: _Sequence
    cache: list[Any]
    steps: Any  # the generate_step generator


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
        self._model = loaded.model
        self._tokenizer = loaded.tokenizer
        self._eos = set(loaded.tokenizer.eos_token_ids)
        self._max_batch = settings.worker_concurrency
        self._cap = settings.max_tokens_cap
        self._emit = emit
        self._inbox: queue.Queue[EngineRequest | _Stop] = queue.Queue()
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self._single: _SingleStream | None = None
        self._batch: BatchGenerator | None = None
        self._in_batch: dict[int, _Sequence] = {}
        self._peak = 0
        self._generated = 0
        self._single_ok: bool | None = None
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)

    # -- called from the RQ side -------------------------------------------------------------

    def prepare(self, job_id: str, request: GenerationRequest, timeout_s: float) -> EngineRequest:
        tokens = prompt_tokens(self._tokenizer, request)
        max_tokens = fit_max_tokens(request.max_tokens, len(tokens), self.context_length, self._cap)
        return EngineRequest(job_id, request, tokens, max_tokens, time.monotonic() + timeout_s)

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
            if self._single is None and not self._in_batch:
                continue
            try:
                self._drop_cancelled()
                self._expire_timed_out()
                if self._single is not None:
                    self._step_single()
                elif self._in_batch:
                    self._step_batch()
            except Exception as exc:  # one broken step fails the requests in it, not the worker
                log.exception("generation step failed")
                self._fail_all(GenerationFailed(f"Generation failed: {exc}"))
        self._fail_all(GenerationFailed("The worker shut down before the answer was complete."))

    def _take_arrivals(self) -> list[EngineRequest] | None:
        """New requests; blocks only when there is nothing to generate."""
        arrivals: list[EngineRequest] = []
        idle = self._single is None and not self._in_batch
        try:
            item = self._inbox.get(block=idle)
            while True:
                if isinstance(item, _Stop):
                    return None
                arrivals.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return arrivals

    def _place(self, arrivals: list[EngineRequest]) -> None:
        sequences = [s for s in map(self._admit, arrivals) if s is not None]
        if not sequences:
            return
        busy = self._single is not None or self._in_batch
        if not busy and len(sequences) == 1 and self._can_run_single():
            self._start_single(sequences[0])
        else:
            if self._single is not None:
                self._move_single_into_batch()
            self._insert(sequences)
        self._peak = max(self._peak, len(self._in_batch) + (self._single is not None))

    def _admit(self, request: EngineRequest) -> "_Sequence | None":
        """A sequence for the request, or None when it is refused (with its Failed sent)."""
        if self._refuse_cancelled_or_expired(request):
            return None
        try:
            return self._new_sequence(request)
        except Exception as exc:  # e.g. sampling settings MLX rejects: this request alone fails
            log.exception("job %s: could not start", request.job_id)
            self._emit(Failed(request.job_id, GenerationFailed(f"Could not start: {exc}")))
            return None

    def _refuse_cancelled_or_expired(self, request: EngineRequest) -> bool:
        if self._take_cancelled({request.job_id}):
            self._emit(Failed(request.job_id, Cancelled("The client went away.")))
            return True
        if time.monotonic() >= request.timeout_at:
            self._emit(Failed(request.job_id, JobTimedOut("The job timed out before it started.")))
            return True
        return False

    def _take_cancelled(self, job_ids: set[str]) -> set[str]:
        with self._cancel_lock:
            found = self._cancelled & job_ids
            self._cancelled -= found
            return found

    def _drop_cancelled(self) -> None:
        sequences = {s.request.job_id: s for s in self._sequences()}
        for job_id in self._take_cancelled(set(sequences)):
            self._drop(sequences[job_id], Cancelled("The client went away."))

    def _new_sequence(self, request: EngineRequest) -> _Sequence:
        detokenizer = self._tokenizer.detokenizer
        if request.request.prompt is not None:
            _keep_leading_space(detokenizer)
        return _Sequence(
            request,
            detokenizer,
            make_request_sampler(request.request.sampling),
            StopMatcher(request.request.stop),
        )

    # single stream

    def _can_run_single(self) -> bool:
        # Moving a lone stream into the batch needs a trimmable cache (plain KV caches are).
        if self._single_ok is None:
            self._single_ok = can_trim_prompt_cache(make_prompt_cache(self._model))
        return self._single_ok

    def _start_single(self, sequence: _Sequence) -> None:
        request = sequence.request
        cache = make_prompt_cache(self._model)
        steps = generate_step(
            mx.array(request.prompt_tokens),
            self._model,
            max_tokens=request.max_tokens,
            sampler=sequence.sampler,
            prompt_cache=cache,
        )
        self._single = _SingleStream(sequence, cache, steps)

    def _step_single(self) -> None:
        assert self._single is not None
        sequence = self._single.sequence
        token, _ = next(self._single.steps)
        if self._accept(sequence, token, None):
            self._single = None

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
            max_tokens=[sequence.request.max_tokens - len(sequence.tokens)],
            caches=[single.cache],
            all_tokens=[sequence.request.prompt_tokens + sequence.tokens[:-1]],
            samplers=[sequence.sampler],
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

    def _insert(self, sequences: list[_Sequence]) -> None:
        uids = self._batch_generator().insert(
            [s.request.prompt_tokens for s in sequences],
            max_tokens=[s.request.max_tokens for s in sequences],
            samplers=[s.sampler for s in sequences],
        )
        for uid, sequence in zip(uids, sequences, strict=True):
            sequence.uid = uid
            self._in_batch[uid] = sequence

    def _step_batch(self) -> None:
        batch = self._batch_generator()
        _, responses = batch.next()
        for response in responses:
            sequence = self._in_batch[response.uid]
            if self._accept(sequence, response.token, response.finish_reason):
                del self._in_batch[response.uid]
                if response.finish_reason is None:  # a stop string: the batch does not know
                    batch.remove([response.uid])

    # shared by both paths

    def _accept(self, sequence: _Sequence, token: int, finish_reason: str | None) -> bool:
        """Take one generated token; returns True when the sequence is finished."""
        request = sequence.request
        self._generated += 1
        if token in self._eos:
            self._finish(sequence, "stop", sequence.end())
            return True
        piece, stopped = sequence.add(token)
        if stopped:
            self._finish(sequence, "stop", piece)
            return True
        if finish_reason is not None or len(sequence.tokens) >= request.max_tokens:
            reason = "stop" if finish_reason == "stop" else "length"
            self._finish(sequence, reason, piece + sequence.end())
            return True
        self._send(sequence, piece)
        return False

    def _send(self, sequence: _Sequence, piece: str) -> None:
        if piece and sequence.request.request.stream:
            self._emit(TokenOutput(sequence.request.job_id, piece))

    def _finish(self, sequence: _Sequence, reason: str, last_piece: str) -> None:
        self._send(sequence, last_piece)
        request = sequence.request
        completion_tokens = len(sequence.tokens)
        self._emit(
            Finished(
                request.job_id,
                sequence.text,
                reason,  # type: ignore[arg-type]
                len(request.prompt_tokens),
                completion_tokens,
            )
        )

    def _expire_timed_out(self) -> None:
        now = time.monotonic()
        expired = [s for s in self._sequences() if now >= s.request.timeout_at]
        for sequence in expired:
            self._drop(sequence, JobTimedOut("The request's time limit passed while generating."))

    def _sequences(self) -> list[_Sequence]:
        single = [self._single.sequence] if self._single is not None else []
        return single + list(self._in_batch.values())

    def _drop(self, sequence: _Sequence, error: MlxqError) -> None:
        if self._single is not None and self._single.sequence is sequence:
            self._single = None
        elif sequence.uid in self._in_batch:
            del self._in_batch[sequence.uid]
            if self._batch is not None:
                self._batch.remove([sequence.uid])
        self._emit(Failed(sequence.request.job_id, error))

    def _fail_all(self, error: MlxqError) -> None:
        for sequence in self._sequences():
            self._emit(Failed(sequence.request.job_id, error))
        self._single = None
        self._in_batch.clear()
        self._batch = None


def _keep_leading_space(detokenizer: Any) -> None:
    """mlx-lm's detokenizers drop the leading space of a text's first token, right for a chat
    answer but wrong for a raw completion (" Paris" continues "The capital of France is")."""
    if hasattr(detokenizer, "trim_space"):  # SPMStreamingDetokenizer
        detokenizer.trim_space = False
    elif hasattr(detokenizer, "_maybe_trim_space"):  # BPEStreamingDetokenizer
        detokenizer._maybe_trim_space = lambda text: text
