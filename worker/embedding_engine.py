"""The embedding engine: one forward pass for the inputs of every waiting job.

Built as ``EmbeddingEngine(settings, emit)`` like every engine (worker/engine_api.py). Unlike
generation there are no decode steps to interleave: a job is done after one pass. So the
engine thread takes every job waiting in its inbox, pools their inputs, sorts them by length
(so a batch pads little) and runs them in batches of at most MAX_BATCH_INPUTS, then answers
each job with its vectors, in its own order. Many small requests arriving together thus
share passes, which is where a GPU earns its keep.
"""

from __future__ import annotations

import logging
import time

import mlx.core as mx

from shared.errors import (
    Cancelled,
    ContextLengthExceeded,
    GenerationFailed,
    InvalidRequest,
    JobTimedOut,
)
from shared.schemas import EmbeddingRequest, JobRequest
from shared.settings import Settings
from worker.bert import BertEncoder, BertTokenizer, pad_batch
from worker.engine_api import Emit, EngineRequest, Failed, Finished
from worker.engine_thread import ThreadedEngine
from worker.model import resolve_model_path
from worker.model_facts import EMBEDDING_FACTS

log = logging.getLogger(__name__)

MAX_BATCH_INPUTS = 64
"""Inputs per forward pass: enough to fill a GPU for short texts, small enough that a pass
of 256-token inputs stays well under a second and a few hundred MB of activations."""


class EmbeddingEngine(ThreadedEngine):
    def __init__(self, settings: Settings, emit: Emit) -> None:
        super().__init__(emit, "mlx-embedding")
        self.model_id = settings.model
        folder = resolve_model_path(settings.model, settings.cache_dir)
        self._encoder = BertEncoder.load(folder)
        self._tokenizer = BertTokenizer(folder)
        self.context_length = self._encoder.config.max_length
        self.weights_bytes = self._encoder.nbytes
        self.dimensions = self._encoder.config.hidden_size
        self.facts = EMBEDDING_FACTS
        self._stream = mx.new_thread_local_stream(mx.default_device())
        self.peak_batch_size = 0
        self.generated_tokens = 0
        """Tokens embedded (the worker reports them as its tokens/s)."""

    # -- called from the RQ side -------------------------------------------------------------

    def prepare(
        self, job_id: str, request: JobRequest, timeout_s: float
    ) -> EngineRequest[EmbeddingRequest]:
        if not isinstance(request, EmbeddingRequest):
            raise InvalidRequest(
                f"The model {self.model_id!r} computes embeddings; it does not generate text "
                "(nor tokenize for generation). Use /v1/embeddings, /api/embed or "
                "/api/embeddings with it."
            )
        if request.dimensions is not None and request.dimensions != self.dimensions:
            raise InvalidRequest(
                f"dimensions={request.dimensions}: {self.model_id!r} gives {self.dimensions}-"
                "dimensional vectors only (it is not trained to be shortened)."
            )
        return EngineRequest(
            job_id,
            request,
            self._tokenize(request),
            [0] * len(request.inputs),
            time.monotonic() + timeout_s,
        )

    def _tokenize(self, request: EmbeddingRequest) -> list[list[int]]:
        for i, tokens in enumerate(request.inputs):
            if isinstance(tokens, list) and any(
                not 0 <= t < self._tokenizer.vocab_size for t in tokens
            ):
                raise InvalidRequest(f"input[{i}] holds token ids outside the model's vocabulary.")
        limit = self.context_length or 0
        encoded = self._tokenizer.encode(request.inputs)
        for i, ids in enumerate(encoded):
            if len(ids) > limit and not request.truncate:
                raise ContextLengthExceeded(
                    f"input[{i}] is {len(ids)} tokens long; {self.model_id!r} reads at most "
                    f"{limit}. Shorten it, or ask for truncation."
                )
        return [self._tokenizer.truncate(ids, limit) for ids in encoded]

    # -- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        # MLX streams are per thread: a thread-local stream, as mlx-lm's generation stream.
        with mx.stream(self._stream):
            self._serve()

    def _serve(self) -> None:
        while (jobs := self._arrivals(wait=True)) is not None:  # every job waiting shares passes
            try:
                self._answer(self._runnable(jobs))
            except Exception as exc:  # one bad pass must not kill the worker
                log.exception("embedding pass failed")
                for job in jobs:
                    self._emit(Failed(job.job_id, GenerationFailed(f"Embedding failed: {exc}")))

    def _runnable(
        self, jobs: list[EngineRequest[EmbeddingRequest]]
    ) -> list[EngineRequest[EmbeddingRequest]]:
        """Jobs whose client is still there and whose time has not run out; the rest end."""
        now = time.monotonic()
        kept = []
        cancelled = self._take_cancelled()
        for job in jobs:
            if job.job_id in cancelled:
                self._emit(Failed(job.job_id, Cancelled("The client went away.")))
            elif now >= job.timeout_at:
                self._emit(Failed(job.job_id, JobTimedOut("The job timed out before it started.")))
            else:
                kept.append(job)
        return kept

    def _answer(self, jobs: list[EngineRequest[EmbeddingRequest]]) -> None:
        items = [(j, i, ids) for j, job in enumerate(jobs) for i, ids in enumerate(job.prompts)]
        items.sort(key=lambda item: len(item[2]))
        vectors: dict[tuple[int, int], list[float]] = {}
        for start in range(0, len(items), MAX_BATCH_INPUTS):
            batch = items[start : start + MAX_BATCH_INPUTS]
            for (j, i, _), vector in zip(
                batch, self.embed([ids for _, _, ids in batch]), strict=True
            ):
                vectors[j, i] = vector
        for j, job in enumerate(jobs):
            embeddings = [vectors[j, i] for i in range(len(job.prompts))]
            self._emit(Finished(job.job_id, [], job.prompt_tokens, embeddings=embeddings))

    def embed(self, sequences: list[list[int]]) -> list[list[float]]:
        """One forward pass: a unit vector per token sequence."""
        self.peak_batch_size = max(self.peak_batch_size, len(sequences))
        ids, mask = pad_batch(sequences, self._tokenizer.pad_id)
        out = self._encoder.embed(ids, mask)
        mx.eval(out)
        self.generated_tokens += sum(len(s) for s in sequences)
        rows: list[list[float]] = out.tolist()  # type: ignore[assignment]
        return rows
