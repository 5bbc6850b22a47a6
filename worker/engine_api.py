"""The contract between the RQ side of a worker and a generation engine.

Every engine (MLX, embedding, echo, a plug-in named by MLXQ_ENGINE=module:Class) subclasses
``Engine``, is built the same way, ``EngineClass(settings, emit)``, and answers through
``emit`` from its own thread. The RQ side calls ``prepare`` (on a preparer thread: validation,
tokenization), then ``submit`` and, when a client goes away, ``cancel``.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, runtime_checkable

from typing_extensions import TypeVar

from shared.errors import InvalidRequest, MlxqError
from shared.schemas import (
    Choice,
    GenerationRequest,
    JobRequest,
    PromptLogprob,
    SpeculationStats,
    Tokenized,
    TokenizeRequest,
    TokenLogprob,
    ToolCall,
)
from shared.settings import Settings

RequestT = TypeVar("RequestT", bound=JobRequest, default=GenerationRequest)
"""The kind of job an engine runs: a plain ``EngineRequest`` is a generation's."""

LogitsProcessor = Callable[[Any, Any], Any]
"""mlx-lm's logits processor: (tokens so far, logits) -> logits."""


@dataclass(frozen=True)
class EngineRequest(Generic[RequestT]):
    """A job, checked and tokenized on a preparer thread, ready for the engine thread."""

    job_id: str
    request: RequestT
    prompts: list[list[int]]
    """The prompt tokens, one list per prompt (a chat has one; an embedding job, one per
    input)."""
    max_tokens: list[int]
    """Tokens each prompt's choices may generate (fitted into the context)."""
    timeout_at: float
    """time.monotonic() after which the engine stops generating (the job timeout)."""
    constraint: Callable[[], LogitsProcessor] | None = field(default=None, compare=False)
    """Makes one sequence's grammar constraint (structured output, forced tool calls)."""
    payload: Any = field(default=None, compare=False)
    """Engine-specific extras (the echo engine keeps its text here)."""
    received_at: float = field(default_factory=time.monotonic, compare=False)
    """time.monotonic() when it was ready (tokenized): its timings count from here."""

    @property
    def prompt_tokens(self) -> int:
        return sum(len(prompt) for prompt in self.prompts)


@dataclass(frozen=True)
class TokenOutput:
    """A piece of a streamed answer (one choice's), with what came with it."""

    job_id: str
    text: str
    index: int = 0
    channel: Literal["content", "reasoning"] = "content"
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] | None = None
    prompt_logprobs: list[PromptLogprob] | None = None
    """With an echoed prompt: its tokens' log-probabilities."""


@dataclass(frozen=True)
class Finished:
    """Every choice of a job, once the last one has ended."""

    job_id: str
    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0
    embeddings: list[list[float]] | None = None
    """An embedding job's answer (``choices`` is then empty): one vector per input."""
    first_token_s: float | None = None
    """From ``received_at`` to the job's first generated token (None: not timed)."""
    last_token_s: float | None = None
    """From ``received_at`` to its last generated token."""
    tokenized: Tokenized | None = None
    """A tokenizer job's answer (``choices`` is then empty)."""
    speculation: SpeculationStats | None = None
    """Its draft tokens proposed and accepted (None: decoded without speculation)."""

    @classmethod
    def single(
        cls,
        job_id: str,
        text: str,
        finish_reason: Literal["stop", "length"],
        prompt_tokens: int,
        completion_tokens: int,
    ) -> "Finished":
        """A one-choice answer (for simple engines)."""
        choice = Choice(
            index=0, text=text, finish_reason=finish_reason, completion_tokens=completion_tokens
        )
        return cls(job_id, [choice], prompt_tokens)


@dataclass(frozen=True)
class Failed:
    job_id: str
    error: MlxqError


EngineOutput = TokenOutput | Finished | Failed
Emit = Callable[[EngineOutput], None]


@dataclass(frozen=True)
class ModelFacts:
    """What a worker knows of its model only once it loaded it (its tokenizer): told in the
    worker's catalogue (shared/protocol/model_records.py) for the API's model listings. What
    the files say (size, family, parameters, context) the catalogue reads without loading."""

    capabilities: tuple[str, ...] = ("completion",)
    """In Ollama's words: "completion", "tools", "insert" (fill-in-the-middle), "thinking"
    (the tokenizer declares thinking markers); or "embedding"."""


@dataclass(frozen=True)
class PrefixCacheReport:
    """What an engine's prefix cache has done so far (``Engine.prefix_cache_report``)."""

    queried_tokens: int
    hit_tokens: int
    bytes: int
    budget_bytes: int = 0
    """The most it may hold (0: no prefix cache)."""


@dataclass
class SpeculationCounts:
    """Draft tokens an engine has proposed and accepted since it started
    (``Engine.speculation_report``)."""

    proposed: int = 0
    accepted: int = 0


@dataclass(frozen=True)
class KvCacheReport:
    """The KV cache the running sequences hold now, and the most they can hold (every slot
    at the full context): ``Engine.kv_cache_report``."""

    bytes: int
    budget_bytes: int


@runtime_checkable
class Engine(Protocol):
    """What the RQ side of a worker needs of an engine. Subclass it: an engine then has the
    defaults of the optional abilities below (no prefix cache, no suggested temperature,
    nothing to start or stop), and writes the rest. ``build_engine`` refuses, at start-up,
    an engine that lacks a member.

    The threaded engines share their inbox, cancel set and thread: worker/engine_thread.py.
    """

    model_id: str
    context_length: int | None = None
    """Tokens the model reads at most (None: no limit the worker knows of)."""
    facts: ModelFacts = ModelFacts()
    """What the fleet is told of the model (capabilities, size); a text model by default."""
    suggested_temperature: float | None = None
    """The model's own temperature (its generation_config.json), for clients to start from."""
    reuses_prefixes: bool = False
    """The engine keeps a prefix cache, so the conversations this worker answers are routed
    back to it (shared/routing.py)."""
    weights_bytes: int = 0
    """What its model's arrays take in memory (worker/memory.py; 0: not measured)."""
    peak_batch_size: int
    """The most sequences it has run at once."""
    generated_tokens: int
    """Tokens generated since the engine started (for the tokens/s the worker reports)."""

    def prepare(self, job_id: str, request: JobRequest, timeout_s: float) -> EngineRequest[Any]:
        """Validate and tokenize; raises MlxqError for requests that cannot run (among them
        a job of the other kind: an embedding job on a chat model, or the reverse)."""
        ...

    def submit(self, request: EngineRequest[Any]) -> None: ...

    def cancel(self, job_id: str) -> None:
        """Stop generating for a job (its client went away); it ends as Failed(Cancelled)."""
        ...

    def start(self) -> None:
        """Start the engine's own thread, if it has one."""

    def stop(self) -> None:
        """Fail what it still runs, and stop its thread."""

    def holds(self, job_id: str) -> bool:
        """Whether the engine still works on the job (submitted, not yet answered). An engine
        that answers at once, in ``submit``, never does."""
        return False

    def prefix_cache_report(self) -> PrefixCacheReport:
        """The prefix cache's counters (all zero for an engine without one)."""
        return PrefixCacheReport(0, 0, 0)

    def kv_cache_report(self) -> KvCacheReport:
        """The running sequences' KV cache (zero for an engine that keeps none)."""
        return KvCacheReport(0, 0)

    def speculation_report(self) -> SpeculationCounts:
        """Draft tokens proposed and accepted so far (zero for an engine that never drafts)."""
        return SpeculationCounts()


def refuse_other_kind(request: JobRequest, model_id: str) -> GenerationRequest:
    """A generation engine's check: an embedding job is refused with a 400 that says why, and
    a tokenizer job by an engine that has no tokenizer to run it with."""
    if isinstance(request, TokenizeRequest):
        raise InvalidRequest(
            f"The worker of {model_id!r} cannot tokenize: its engine has no tokenizer."
        )
    if not isinstance(request, GenerationRequest):
        raise InvalidRequest(
            f"The model {model_id!r} generates text; it does not compute embeddings. Use an "
            "embedding model (a worker started with MLXQ_MODEL set to one)."
        )
    return request


EngineFactory = Callable[[Settings, Emit], Engine]
"""What MLXQ_ENGINE names: a class (or function) taking the settings and the emit callback."""
