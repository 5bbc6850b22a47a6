"""What travels through Redis: the job payload and the events a worker sends back."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from shared.errors import ErrorCode

JSONScalar = str | int | float | bool | None

MAX_STOP_SEQUENCES = 4
"""OpenAI's limit on stop sequences per request."""
MAX_CHOICES = 16
"""Most choices (n) one request may ask for: each is a sequence in the worker's batch."""
MAX_TOP_LOGPROBS = 20
"""OpenAI's limit on top_logprobs."""
MAX_EMBEDDING_INPUTS = 2048
"""OpenAI's limit on the inputs of one embeddings request."""
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""What a function tool's name may hold (OpenAI's rule; at most 64 characters)."""


NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
"""The parameters of a function tool that declares none: an empty parameter list."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolCall(_Strict):
    """A function call the model made (OpenAI's shape; ``arguments`` is JSON text)."""

    id: str
    type: Literal["function"] = "function"
    function: "FunctionCall"


class FunctionCall(_Strict):
    name: str
    arguments: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] | None = None
    """An assistant's earlier calls, resent by the client with the conversation."""
    tool_call_id: str | None = None
    """For a ``tool`` message: the call it answers."""


class ToolFunction(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: dict(NO_PARAMETERS))
    """Left out: the function takes no arguments (OpenAI's empty parameter list)."""
    strict: bool | None = None


class ToolDefinition(_Strict):
    type: Literal["function"] = "function"
    function: ToolFunction


ToolChoice = Literal["auto", "none", "required"] | str
""""auto", "none", "required", or the name of the one function the model must call."""


class ResponseFormat(_Strict):
    """Structured output, enforced token by token: any JSON object, one JSON Schema
    (``json_schema`` is ``{"schema": ...}``), or vLLM's guided decoding: a match of a regular
    expression (``pattern``), one of some strings (``choices``), a sentence of a Lark or GBNF
    grammar (``grammar``)."""

    type: Literal["json_object", "json_schema", "regex", "choice", "grammar"]
    json_schema: dict[str, Any] | None = None
    pattern: str | None = None
    choices: list[str] | None = Field(None, min_length=1)
    grammar: str | None = None
    field: str = "response_format"
    """The request's field it came from, in the client's words: a refusal names it."""


class SamplingParams(_Strict):
    """How a request's tokens are chosen; every field is applied per sequence in a batch."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Keep the k likeliest tokens; 0: off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below min_p * the top.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0, description="1: off.")
    logit_bias: dict[int, float] = Field(default_factory=dict)
    """Token id -> value added to its logit (-100 bans a token, 100 forces it)."""
    seed: int | None = Field(None, ge=0, le=2**64 - 1)  # MLX's random keys take uint64


class GenerationRequest(_Strict):
    """One generation job, as the API enqueues it and the worker reads it.

    Exactly one of ``messages`` (chat template applied) or ``prompts`` (raw texts or token ids,
    each continued on its own) is set. Each prompt gets ``n`` choices, numbered prompt by
    prompt (choice ``i * n + j`` is the j-th of prompt i), as OpenAI numbers them.
    ``max_tokens`` None means: until the model stops, bounded by its context and the cap.
    """

    request_id: str
    model: str
    messages: list[ChatMessage] | None = None
    prompts: list[str | list[int]] | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    max_tokens: int | None = Field(None, ge=0)
    """0 only with ``echo``: the prompt is scored (its logprobs), nothing is generated."""
    sampling: SamplingParams = SamplingParams()
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    """Strings that end generation; the one found is not part of the answer."""
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    """None: none; k: each token's log-probability and its k likeliest alternatives."""
    echo: bool = False
    """Completions: the answer starts with the prompt (with ``logprobs``, the prompt's tokens'
    log-probabilities come first)."""
    suffix: str | None = None
    """Fill-in-the-middle: the text after the insertion; each (text) prompt is the text
    before it, and the model writes what goes between (worker/fim.py)."""
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict[str, JSONScalar] = Field(default_factory=dict)
    """Extra template variables, e.g. {"enable_thinking": false}."""
    stream: bool = False
    deadline: float = Field(description="Unix time after which the job must not start.")
    waiter: str | None = None
    """The API process waiting for the answer: when it dies, the job stops."""
    owner: str | None = None
    """The name of the API key the request came with (None on an open service): its usage
    is counted to that key, and it waits in that key's queue (shared/keys.py)."""
    speculative: bool = True
    """False: plain decoding, no guessed tokens checked (speculation never changes greedy
    text or the sampled distribution; this is for measuring, or a model it does not suit)."""
    keep_alive: float | None = None
    """Seconds the model stays loaded once idle after this job (Ollama's keep_alive): 0
    unloads it as soon as it is idle, negative keeps it; None: the worker's MLXQ_KEEP_ALIVE."""

    @model_validator(mode="after")
    def _nothing_to_generate_needs_echo(self) -> "GenerationRequest":
        if self.max_tokens == 0 and not (self.echo and self.prompts is not None):
            raise ValueError("max_tokens 0 generates nothing: only an echoed prompt is scored")
        if self.suffix is not None and not (
            self.prompts is not None and all(isinstance(p, str) for p in self.prompts)
        ):
            raise ValueError("suffix goes with text prompts (the text before the insertion)")
        return self


class EmbeddingRequest(_Strict):
    """One embedding job: a vector per input (a text, or token ids of the model's tokenizer).

    The worker refuses inputs longer than the model's limit unless ``truncate`` is set, and
    any ``dimensions`` but the model's own (MiniLM-style models are not trained to be cut
    shorter, as OpenAI's Matryoshka models are).
    """

    request_id: str
    model: str
    inputs: list[str | list[int]] = Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)
    truncate: bool = False
    dimensions: int | None = Field(None, ge=1)
    deadline: float = Field(description="Unix time after which the job must not start.")
    waiter: str | None = None
    """The API process waiting for the answer: when it dies, the job stops."""
    owner: str | None = None
    """The name of the API key the request came with (None on an open service): its usage
    is counted to that key, and it waits in that key's queue (shared/keys.py)."""
    speculative: bool = True
    """False: plain decoding, no guessed tokens checked (speculation never changes greedy
    text or the sampled distribution; this is for measuring, or a model it does not suit)."""
    keep_alive: float | None = None
    """Seconds the model stays loaded once idle after this job (Ollama's keep_alive): 0
    unloads it as soon as it is idle, negative keeps it; None: the worker's MLXQ_KEEP_ALIVE."""


class TokenizeRequest(_Strict):
    """A tokenizer job (vLLM's ``/tokenize`` and ``/detokenize``), run by a worker of the
    model, since the API has no tokenizer. Exactly one of ``prompt`` (encoded as it is),
    ``messages`` (through the chat template, as a generation's prompt is built) or ``tokens``
    (decoded back to text) is set."""

    request_id: str
    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[ToolDefinition] | None = None
    chat_template_kwargs: dict[str, JSONScalar] = Field(default_factory=dict)
    add_generation_prompt: bool = True
    add_special_tokens: bool = True
    """For a prompt: the tokenizer's own special tokens (a BOS) as it adds them."""
    tokens: list[int] | None = None
    return_token_strs: bool = False
    deadline: float = Field(description="Unix time after which the job must not start.")
    waiter: str | None = None
    owner: str | None = None
    """The name of the API key the request came with: it waits in that key's queue."""

    @model_validator(mode="after")
    def _one_input(self) -> "TokenizeRequest":
        given = [x is not None for x in (self.prompt, self.messages, self.tokens)]
        if sum(given) != 1:
            raise ValueError("exactly one of prompt, messages and tokens")
        return self


JobRequest = GenerationRequest | EmbeddingRequest | TokenizeRequest
"""The kinds of job a worker reads; each engine runs the kinds it can and refuses the rest."""


class Tokenized(_Strict):
    """A tokenizer job's answer: the token ids (tokenize) or the text (detokenize)."""

    tokens: list[int] | None = None
    token_strs: list[str] | None = None
    """Each token as the vocabulary writes it, when asked for (``return_token_strs``)."""
    text: str | None = None
    max_model_len: int | None = None
    """The model's context, as vLLM reports it beside the tokens."""


class TokenLogprob(_Strict):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list["TopLogprob"] = Field(default_factory=list)


class TopLogprob(_Strict):
    token: str
    logprob: float
    bytes: list[int]


class PromptLogprob(_Strict):
    """A prompt token's log-probability given the tokens before it (``echo`` with
    ``logprobs``): the first token has none (null, as OpenAI and vLLM return it)."""

    token: str
    logprob: float | None
    bytes: list[int]
    top_logprobs: list[TopLogprob] | None = None


class StartedEvent(_Strict):
    type: Literal["started"] = "started"
    seq: int
    worker: str
    prompt_tokens: int | None = None
    """The prompt's tokens, as the worker counted them before the first event (Anthropic's
    ``message_start`` reports them); None from an engine that does not count them."""
    load_s: float = 0.0
    """Seconds this job waited for its model to load on that worker (0: it was loaded)."""


class TokenEvent(_Strict):
    """A piece of a streamed answer: text of one choice, and what came with it."""

    type: Literal["token"] = "token"
    seq: int
    text: str
    index: int = 0
    """The choice this piece belongs to."""
    channel: Literal["content", "reasoning"] = "content"
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] | None = None
    """Pieces of the choice's calls: a call's first piece brings its id, its name and the
    start of its arguments; a later piece with the same id brings more of its arguments'
    text (a forced call streams as it is decoded; a parsed one comes in one piece)."""
    prompt_logprobs: list[PromptLogprob] | None = None
    """With the echoed prompt (``echo`` and ``logprobs``): its tokens' log-probabilities."""


class Choice(_Strict):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "tool_calls"]
    completion_tokens: int
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[PromptLogprob] | None = None
    """``echo`` with ``logprobs``: the prompt's tokens' log-probabilities, before ``logprobs``."""


class SpeculationStats(_Strict):
    """How a job's speculative decoding went: draft tokens proposed, and accepted."""

    proposed: int
    accepted: int
    acceptance_rate: float | None
    """accepted / proposed (None when nothing was proposed)."""

    @classmethod
    def of(cls, proposed: int, accepted: int) -> "SpeculationStats":
        rate = round(accepted / proposed, 4) if proposed else None
        return cls(proposed=proposed, accepted=accepted, acceptance_rate=rate)


class DoneEvent(_Strict):
    type: Literal["done"] = "done"
    seq: int
    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0
    """Prompt tokens whose KV came from the worker's prefix cache."""
    worker: str | None = None
    """The worker that answered (for the ``x-mlxq-worker`` header)."""
    embeddings: list[list[float]] | None = None
    """An embedding job's answer: one unit vector per input, in order (``choices`` empty)."""
    first_token_s: float | None = None
    """Seconds from the worker's start of the job to its first generated token: with the
    queue wait the API saw, a non-streamed request's time to first token."""
    last_token_s: float | None = None
    """Seconds from the worker's start of the job to its last generated token (with
    ``first_token_s``, the time between tokens)."""
    tokenized: Tokenized | None = None
    """A tokenizer job's answer (``choices`` empty)."""
    speculation: SpeculationStats | None = None
    """Draft tokens proposed and accepted (None: the job was decoded without speculation)."""

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


class ErrorEvent(_Strict):
    type: Literal["error"] = "error"
    seq: int
    code: ErrorCode
    message: str
    partial_text: str | None = None
    """What was generated before the error (a deadline), so that it is not lost."""


JobEvent = Annotated[
    StartedEvent | TokenEvent | DoneEvent | ErrorEvent, Field(discriminator="type")
]

job_event_adapter: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)
