"""The Ollama request bodies mlxq accepts (``/api/chat``, ``/api/generate``, ``/api/show``)
and the answers it gives, as the official ``ollama`` clients send and read them.

As for the OpenAI routes, nothing a client asks for is silently dropped: every field and every
``options`` entry is honoured, refused with a 400 that names it (``REFUSED_WHY``), or accepted
as a documented no-op (``NO_OP_FIELDS``, ``NO_OP_OPTIONS``). Unknown fields and unknown options
are refused.
"""

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError

from shared.schemas import MAX_STOP_SEQUENCES, MAX_TOP_LOGPROBS

MAX_MESSAGES = 512
"""As for /v1/chat/completions: more than any real conversation."""
MAX_TOOLS = 128

OLLAMA_DEFAULTS: dict[str, float] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repeat_penalty": 1.1,
}
"""The sampling Ollama documents for a request whose ``options`` leave these out (its
Modelfile defaults); mlxq applies the same, so an Ollama client gets the answers it expects.
``num_predict`` -1 (no limit), ``min_p`` 0, ``seed`` -1 (random) and no penalties are mlxq's
defaults already."""

NO_OP_OPTIONS: dict[str, str] = {
    "num_ctx": "the context window is the model's own; a prompt and num_predict that do not "
    "fit are refused with a 400, nothing is truncated",
    "num_batch": "workers batch whole requests together (MLXQ_WORKER_CONCURRENCY) and "
    "prefill each prompt in MLX's own steps",
    "num_gpu": "MLX keeps the whole model on the GPU (unified memory); no layers to offload",
    "main_gpu": "each worker uses its machine's one GPU",
    "num_thread": "MLX chooses its own CPU threads",
    "numa": "MLX chooses where memory lives",
    "low_vram": "MLX shares unified memory; there is no separate VRAM to save",
    "f16_kv": "the KV cache keeps the model's own dtype",
    "use_mmap": "a worker loads the weights once, at start-up, as mlx-lm does",
    "use_mlock": "a worker loads the weights once, at start-up, as mlx-lm does",
    "vocab_only": "a worker always loads the whole model",
    "embedding_only": "workers generate text; embeddings are not served (/api/embed is 501)",
    "logits_all": "per-token log-probabilities come with logprobs / top_logprobs",
    "num_keep": "nothing is truncated, so no prompt tokens need keeping",
    "repeat_last_n": "penalties apply over mlx-lm's fixed window of the last 20 tokens",
    "penalize_newline": "deprecated by Ollama; a newline is penalised like any other token",
    "tfs_z": "tail-free sampling is not implemented (Ollama dropped it too)",
    "typical_p": "locally typical sampling is not implemented; use top_p, top_k or min_p",
    "mirostat": "Mirostat sampling is not implemented; use temperature, top_p, top_k or min_p",
    "mirostat_eta": "Mirostat sampling is not implemented",
    "mirostat_tau": "Mirostat sampling is not implemented",
}
"""Ollama options that change nothing here, each with the reason; accepted with any value."""

HONOURED_OPTIONS = (
    "num_predict",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)

NO_OP_FIELDS: dict[str, str] = {
    "keep_alive": "workers keep their model loaded for as long as they run",
    "messages[].thinking": "an earlier answer's thinking is not rendered (chat templates drop "
    "it too)",
    "show.verbose": "model_info is always the short form",
}
"""Request fields accepted and documented as no-ops."""

REFUSED_WHY: dict[str, str] = {
    "suffix": "fill-in-the-middle (suffix) is not supported",
    "images": "images are not supported: mlxq serves text models only",
    "context": "context is deprecated by Ollama and not supported: send the conversation to "
    "/api/chat instead",
    "template": "a per-request prompt template is not supported: the model's own chat "
    "template is applied (or none, with raw: true)",
    "think": "thinking cannot be switched on per request: a reasoning model's thinking comes "
    "back as `thinking` anyway; only think: false (or no think) is accepted",
    "width": "image generation is not supported",
    "height": "image generation is not supported",
    "steps": "image generation is not supported",
}
"""Fields refused with a 400 when set to anything but their neutral value."""


class _Request(BaseModel):
    # As the OpenAI bodies: JSON types as documented, unknown fields refused, finite numbers.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class OllamaOptions(_Request):
    """``options``: the honoured ones are fields; no-ops (``NO_OP_OPTIONS``) are accepted
    and dropped here; any other name is refused."""

    num_predict: int | None = Field(
        None, description="Most tokens to generate; -1 (or -2, fill the context): no limit."
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=0, description="0: off.")
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="0: greedy.")
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, le=2**64 - 1, description="Negative: random.")
    stop: str | list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0, le=2.0, description="1: off.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = sorted(k for k in data if k not in HONOURED_OPTIONS and k not in NO_OP_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r}: mlxq honours {', '.join(HONOURED_OPTIONS)}, "
                "and accepts Ollama's other documented options as no-ops"
            )
        return {k: v for k, v in data.items() if k in HONOURED_OPTIONS}

    @field_validator("num_predict")
    @classmethod
    def _limit(cls, value: int | None) -> int | None:
        if value is not None and value < 1 and value not in (-1, -2):
            raise ValueError("num_predict is at least 1, or -1 (no limit)")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @property
    def max_tokens(self) -> int | None:
        return self.num_predict if self.num_predict is not None and self.num_predict > 0 else None

    @property
    def stops(self) -> list[str]:
        return self.stop  # type: ignore[return-value]  # normalized by _stops


class OllamaFunctionCallIn(_Request):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = Field(None, description="Ollama numbers a turn's calls; order is kept.")


class OllamaToolCallIn(_Request):
    id: str | None = Field(None, description="Optional: Ollama's calls carry no id.")
    type: Literal["function"] | None = None
    function: OllamaFunctionCallIn


class OllamaMessageIn(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = Field(None, description="No-op: " + NO_OP_FIELDS["messages[].thinking"])
    images: list[str] | None = Field(None, description="Refused: " + REFUSED_WHY["images"])
    tool_calls: list[OllamaToolCallIn] | None = None
    tool_name: str | None = Field(None, description="For a tool message: the tool that answered.")

    @field_validator("images")
    @classmethod
    def _no_images(cls, images: list[str] | None) -> list[str] | None:
        if images:
            raise ValueError(REFUSED_WHY["images"])
        return images

    @model_validator(mode="after")
    def _calls_are_the_assistants(self) -> "OllamaMessageIn":
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self


class OllamaFunctionIn(_Request):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OllamaToolIn(_Request):
    type: Literal["function"] = "function"
    function: OllamaFunctionIn


def _refuse(cls: type, value: Any, info: ValidationInfo) -> Any:
    """A refused field set to anything but its neutral value is a 400 that names it."""
    if value not in (None, "", [], False, 0):
        raise ValueError(REFUSED_WHY[info.field_name or ""])
    return value


class OllamaGeneration(_Request):
    model: str = Field(min_length=1, description='A served model id; ":latest" is accepted.')
    stream: bool | None = Field(None, description="Newline-delimited JSON unless false.")
    format: Literal["", "json"] | dict[str, Any] | None = Field(
        None, description='"json": any JSON object; a JSON Schema: an answer that follows it.'
    )
    options: OllamaOptions | None = None
    keep_alive: int | float | str | None = Field(
        None, description="No-op: " + NO_OP_FIELDS["keep_alive"]
    )
    think: bool | Literal["low", "medium", "high"] | None = Field(
        None, description="Refused unless false: " + REFUSED_WHY["think"]
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("think")
    @classmethod
    def _thinking_off_only(cls, think: Any) -> Any:
        if think not in (None, False):
            raise ValueError(REFUSED_WHY["think"])
        return think

    @model_validator(mode="after")
    def _consistent(self) -> "OllamaGeneration":
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        # A JSON "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot encode.
        try:
            self.model_dump_json()
        except PydanticSerializationError:
            raise ValueError(
                "text must be valid Unicode: it contains an unpaired surrogate "
                "(a \\ud800-\\udfff escape without its pair)"
            ) from None
        return self

    @property
    def streaming(self) -> bool:
        return self.stream is not False

    @property
    def settings(self) -> OllamaOptions:
        return self.options or OllamaOptions()

    @property
    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class OllamaChatRequest(OllamaGeneration):
    messages: list[OllamaMessageIn] = Field(
        default_factory=list,
        max_length=MAX_MESSAGES,
        description="No messages: the model is (already) loaded, done_reason load.",
    )
    tools: list[OllamaToolIn] | None = Field(None, max_length=MAX_TOOLS)


class OllamaGenerateRequest(OllamaGeneration):
    prompt: str | None = Field(None, description="No prompt: done_reason load.")
    system: str | None = None
    raw: bool | None = Field(None, description="true: the prompt as it is, no chat template.")
    suffix: str | None = Field(None, description="Refused: " + REFUSED_WHY["suffix"])
    images: list[str] | None = Field(None, description="Refused: " + REFUSED_WHY["images"])
    context: list[int] | None = Field(None, description="Refused: " + REFUSED_WHY["context"])
    template: str | None = Field(None, description="Refused: " + REFUSED_WHY["template"])
    width: int | None = Field(None, description="Refused: " + REFUSED_WHY["width"])
    height: int | None = Field(None, description="Refused: " + REFUSED_WHY["height"])
    steps: int | None = Field(None, description="Refused: " + REFUSED_WHY["steps"])

    _refused = field_validator(
        "suffix", "images", "context", "template", "width", "height", "steps"
    )(_refuse)

    @model_validator(mode="after")
    def _system_needs_a_template(self) -> "OllamaGenerateRequest":
        if self.raw and self.system:
            raise ValueError("system with raw: true: a raw prompt gets no template to put it in")
        return self


class OllamaShowRequest(_Request):
    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1, description="Deprecated spelling of model.")
    verbose: bool | None = Field(None, description="No-op: " + NO_OP_FIELDS["show.verbose"])

    @model_validator(mode="after")
    def _named(self) -> "OllamaShowRequest":
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""


# -- answers (for the OpenAPI document; the routes build them as dicts) ----------------------


class OllamaError(BaseModel):
    error: str


class OllamaVersion(BaseModel):
    version: str


class OllamaModelDetails(BaseModel):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(BaseModel):
    models: list[OllamaModel]


class OllamaRunningModel(OllamaModel):
    expires_at: str
    size_vram: int
    workers: int = Field(description="mlxq: live workers serving the model.")


class OllamaPs(BaseModel):
    models: list[OllamaRunningModel]


class OllamaShow(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaFunctionCallOut(BaseModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCallOut(BaseModel):
    function: OllamaFunctionCallOut


class OllamaMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCallOut] | None = None


class _Answer(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: Literal["stop", "length", "load"] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[dict[str, Any]] | None = None


class OllamaChatResponse(_Answer):
    message: OllamaMessageOut


class OllamaGenerateResponse(_Answer):
    response: str
    thinking: str | None = None
