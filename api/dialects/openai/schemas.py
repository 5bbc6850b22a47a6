"""The OpenAI request bodies mlxq accepts: every field honoured, refused, or a documented no-op.

mlxq never silently ignores what a client asked for. Each field of OpenAI's chat-completions,
completions and embeddings requests is in exactly one of three lists (``field_policy``):
honoured (it changes the answer as OpenAI documents), refused (a 400 that names it when set
to anything but its neutral value), or a no-op (it changes nothing on a local server:
``user``, ``store``, ``metadata``...). Unknown fields are refused too. Ranges and nullability
follow OpenAI's.
"""

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from api.core.validators import (
    MAX_MESSAGES,
    MAX_TOOLS,
    StrictBody,
    ToolName,
    ensure_encodable,
    normalized_stops,
    policy,
    refuser,
)
from api.dialects.openai.guided import GuidedDecoding
from shared.schemas import MAX_CHOICES, MAX_TOP_LOGPROBS, JSONScalar

MAX_PROMPTS = 16
"""Prompts in one /v1/completions request: each is a sequence in one worker's batch."""


class TextPart(StrictBody):
    type: Literal["text"]
    text: str


class FunctionCallIn(StrictBody):
    name: str
    arguments: str


class ToolCallIn(StrictBody):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(StrictBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, **policy("no-op", "A participant's name; not rendered."))
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = Field(None, **policy("no-op", "An earlier refusal; not rendered."))

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> "MessageIn":
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(StrictBody):
    include_usage: bool | None = None
    include_obfuscation: bool | None = Field(
        None, **policy("no-op", "Obfuscation pads chunks against side channels; not sent.")
    )


class FunctionDefinition(StrictBody):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(StrictBody):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(StrictBody):
    name: str


class NamedToolChoice(StrictBody):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(StrictBody):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(StrictBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormatIn":
        if self.type == "json_schema" and (
            self.json_schema is None or not self.json_schema.schema_
        ):
            raise ValueError("json_schema.schema is required for type json_schema")
        return self


_REFUSED_WHY = {
    "audio": "audio output is not supported (text models only)",
    "modalities": 'only ["text"] output is supported',
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not available on a local server",
    "reasoning_effort": "set the model's thinking with chat_template_kwargs instead "
    '(e.g. {"enable_thinking": false})',
    "verbosity": "verbosity is not supported",
    "moderation": "moderation is not available on a local server",
    "functions": "the deprecated functions API is not supported; use tools",
    "function_call": "the deprecated functions API is not supported; use tool_choice",
    "best_of": "best_of other than n is not supported",
}


class _Generation(GuidedDecoding):
    model: str = Field(min_length=1, **policy("honoured"))
    max_tokens: int | None = Field(None, ge=1, **policy("honoured"))
    temperature: float | None = Field(None, ge=0.0, le=2.0, **policy("honoured"))
    top_p: float | None = Field(None, ge=0.0, le=1.0, **policy("honoured"))
    seed: int | None = Field(
        None,
        ge=-1,
        le=2**64 - 1,
        **policy(
            "honoured",
            "Reproducible sampling; an unsigned 64-bit integer, or -1 for a random seed "
            "(as vLLM, llama.cpp and Ollama take it).",
        ),
    )
    stop: str | list[str] | None = Field(None, **policy("honoured"))
    stream: bool | None = Field(None, **policy("honoured"))
    stream_options: StreamOptions | None = Field(None, **policy("honoured"))
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, **policy("honoured"))
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, **policy("honoured"))
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, **policy("honoured"))
    logit_bias: dict[str, float] | None = Field(None, **policy("honoured"))
    user: str | None = Field(None, **policy("no-op", "For abuse monitoring at OpenAI."))
    # mlxq's own, as vLLM and mlx_lm.server name them
    top_k: int | None = Field(None, ge=0, **policy("honoured", "mlxq: 0 is off."))
    min_p: float | None = Field(None, ge=0.0, le=1.0, **policy("honoured"))
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, **policy("honoured"))
    timeout: float | None = Field(
        None, gt=0, le=86400, **policy("honoured", "mlxq: seconds until the deadline.")
    )
    speculative: bool | None = Field(
        None, **policy("honoured", "mlxq: false turns speculative decoding off.")
    )

    _stop_list = field_validator("stop")(normalized_stops)

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not key.isdigit():
                raise ValueError(f"keys are token ids, {key!r} is not")
            if not -100 <= value <= 100:
                raise ValueError(f"values are between -100 and 100, not {value}")
        return bias

    @model_validator(mode="after")
    def _encodable(self) -> "_Generation":
        ensure_encodable(self)
        if self.stream_options is not None and not self.stream:
            # OpenAI's rule: there is no stream for the options to shape.
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def stops(self) -> list[str]:
        return self.stop  # type: ignore[return-value]  # normalized by _stop_list

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def streaming(self) -> bool:
        return bool(self.stream)

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def bias(self) -> dict[int, float]:
        return {int(k): v for k, v in (self.logit_bias or {}).items()}


_refuse = refuser(
    _REFUSED_WHY,
    neutral=lambda name, value: value is None or value == {"modalities": ["text"]}.get(name),
)
"""A refused field set to anything but its neutral value (null; ``["text"]`` modalities) is a
400 that names it."""


class ChatCompletionRequest(_Generation):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES, **policy("honoured"))
    max_completion_tokens: int | None = Field(None, ge=1, **policy("honoured"))
    logprobs: bool | None = Field(None, **policy("honoured"))
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, **policy("honoured"))
    response_format: ResponseFormatIn | None = Field(None, **policy("honoured"))
    tools: list[ToolIn] | None = Field(None, max_length=MAX_TOOLS, **policy("honoured"))
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, **policy("honoured")
    )
    parallel_tool_calls: bool | None = Field(None, **policy("honoured"))
    chat_template_kwargs: dict[str, JSONScalar] | None = Field(
        None, **policy("honoured", "mlxq: extra chat-template variables.")
    )
    store: bool | None = Field(None, **policy("no-op", "Nothing is stored."))
    metadata: dict[str, str] | None = Field(None, **policy("no-op", "Nothing is stored."))
    service_tier: str | None = Field(None, **policy("no-op", "One tier here."))
    safety_identifier: str | None = Field(None, **policy("no-op", "For abuse monitoring."))
    prompt_cache_key: str | None = Field(
        None, **policy("no-op", "Prompts are always cached (prefix cache).")
    )
    prompt_cache_retention: str | None = Field(
        None, **policy("no-op", "Prompts are always cached (prefix cache).")
    )
    prompt_cache_options: dict[str, Any] | None = Field(
        None, **policy("no-op", "Prompts are always cached (prefix cache).")
    )
    audio: dict[str, Any] | None = Field(None, **policy("refused"))
    modalities: list[str] | None = Field(None, **policy("refused"))
    prediction: dict[str, Any] | None = Field(None, **policy("refused"))
    web_search_options: dict[str, Any] | None = Field(None, **policy("refused"))
    reasoning_effort: str | None = Field(None, **policy("refused"))
    verbosity: str | None = Field(None, **policy("refused"))
    moderation: Any = Field(None, **policy("refused"))
    functions: list[dict[str, Any]] | None = Field(None, **policy("refused"))
    function_call: str | dict[str, Any] | None = Field(None, **policy("refused"))

    _refused = field_validator(
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
        "reasoning_effort",
        "verbosity",
        "moderation",
        "functions",
        "function_call",
    )(_refuse)

    @model_validator(mode="after")
    def _consistent(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if isinstance(self.tool_choice, NamedToolChoice) or self.tool_choice == "required":
            names = {t.function.name for t in self.tools or []}
            wanted = getattr(getattr(self.tool_choice, "function", None), "name", None)
            if not names or (wanted is not None and wanted not in names):
                raise ValueError("tool_choice names a function that is not in tools")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def tool_choice_name(self) -> str:
        choice = self.tool_choice or "auto"
        return choice.function.name if isinstance(choice, NamedToolChoice) else choice


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(**policy("honoured"))
    max_tokens: int | None = Field(
        None,
        ge=0,
        **policy("honoured", "0 with echo: the prompt is only scored (with logprobs)."),
    )
    echo: bool | None = Field(
        None,
        **policy("honoured", "With logprobs, the prompt's tokens' logprobs come first."),
    )
    logprobs: int | None = Field(None, ge=0, le=5, **policy("honoured"))
    suffix: str | None = Field(
        None,
        **policy(
            "honoured",
            "Fill-in-the-middle: the text after the insertion, for models whose vocabulary has "
            "FIM tokens (others refuse it with a 400 naming the model).",
        ),
    )
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES, **policy("refused"))

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, prompt: Any) -> Any:
        count = len(prompt) if isinstance(prompt, list) and prompt and not _ids(prompt) else 1
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must not be an empty list")
        if count > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        return prompt

    @model_validator(mode="after")
    def _best_of_is_n(self) -> "CompletionRequest":
        if self.best_of is not None and self.best_of != self.choices:
            raise ValueError(f"best_of: {_REFUSED_WHY['best_of']}")
        if self.suffix is not None and (self.echo or not _texts(self.prompt)):
            raise ValueError(
                "suffix: fill-in-the-middle takes text prompts (the text before the insertion) "
                "and no echo"
            )
        if self.max_tokens == 0 and not self.echo:
            raise ValueError(
                "max_tokens: 0 generates nothing; it is accepted with echo (to score the prompt)"
            )
        return self

    @property
    def prompt_list(self) -> list[str | list[int]]:
        """The prompts, one entry each: a text or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if _ids(prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


def _texts(prompt: Any) -> bool:
    """A text prompt, or a list of them (not token ids)."""
    return isinstance(prompt, str) or all(isinstance(p, str) for p in prompt)


def _ids(prompt: list[Any]) -> bool:
    """A flat list of token ids (one prompt), not a list of prompts."""
    return bool(prompt) and all(isinstance(p, int) for p in prompt)


class EmbeddingsBody(StrictBody):
    """``POST /v1/embeddings``."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    """Only the model's own size is accepted (the worker refuses others with a 400)."""
    user: str | None = None
    """Accepted and ignored (OpenAI uses it for abuse monitoring)."""

    @property
    def inputs(self) -> list[str | list[int]]:
        """OpenAI's four input shapes as a list of inputs: a token list is one input."""
        given = self.input
        if isinstance(given, str):
            return [given]
        if given and all(isinstance(item, int) for item in given):
            return [[int(item) for item in given]]  # type: ignore[arg-type]
        return list(given)  # type: ignore[arg-type]
