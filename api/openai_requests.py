"""The OpenAI request bodies mlxq accepts: every field honoured, refused, or a documented no-op.

mlxq never silently ignores what a client asked for. Each field of OpenAI's chat-completions
and completions requests is in exactly one of three lists (``field_policy``): honoured (it
changes the answer as OpenAI documents), refused (a 400 that names it when set to anything
but its neutral value), or a no-op (it changes nothing on a local server: ``user``, ``store``,
``metadata``...). Unknown fields are refused too. Ranges and nullability follow OpenAI's.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticSerializationError

from shared.schemas import MAX_CHOICES, MAX_STOP_SEQUENCES, MAX_TOP_LOGPROBS, JSONScalar

MAX_MESSAGES = 512
"""More messages than any real conversation; bounds the work one request can ask for."""
MAX_PROMPTS = 16
"""Prompts in one /v1/completions request: each is a sequence in one worker's batch."""
MAX_TOOLS = 128
"""OpenAI's limit on tools per request."""

Policy = Literal["honoured", "refused", "no-op"]


def _policy(kind: Policy, description: str | None = None) -> dict[str, Any]:
    """Field metadata: how mlxq treats the field (see ``field_policy``)."""
    extra: dict[str, Any] = {"json_schema_extra": {"x-mlxq": kind}}
    if description:
        extra["description"] = description
    return extra


def field_policy(model: type[BaseModel]) -> dict[str, Policy]:
    """Every field of a request model and how mlxq treats it."""
    policies: dict[str, Policy] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-mlxq") in ("honoured", "refused", "no-op"):
            policies[name] = extra["x-mlxq"]  # type: ignore[assignment]
    return policies


class _Request(BaseModel):
    # strict: JSON types as the schema says them ("max_tokens": true or "5" is no integer);
    # forbid: a field mlxq does not know is refused, never silently dropped.
    # allow_inf_nan: NaN and Infinity (1e400 parses as Infinity) are no numbers to sample with.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCallIn(_Request):
    name: str
    arguments: str


class ToolCallIn(_Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, **_policy("no-op", "A participant's name; not rendered."))
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = Field(None, **_policy("no-op", "An earlier refusal; not rendered."))

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


class StreamOptions(_Request):
    include_usage: bool | None = None
    include_obfuscation: bool | None = Field(
        None, **_policy("no-op", "Obfuscation pads chunks against side channels; not sent.")
    )


class FunctionDefinition(_Request):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Request):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Request):
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
    "suffix": "insertion (fill-in-the-middle) is not supported",
    "best_of": "best_of other than n is not supported",
}


class _Generation(_Request):
    model: str = Field(min_length=1, **_policy("honoured"))
    max_tokens: int | None = Field(None, ge=1, **_policy("honoured"))
    temperature: float | None = Field(None, ge=0.0, le=2.0, **_policy("honoured"))
    top_p: float | None = Field(None, ge=0.0, le=1.0, **_policy("honoured"))
    seed: int | None = Field(
        None,
        ge=0,
        le=2**64 - 1,
        **_policy("honoured", "Reproducible sampling; an unsigned 64-bit integer."),
    )
    stop: str | list[str] | None = Field(None, **_policy("honoured"))
    stream: bool | None = Field(None, **_policy("honoured"))
    stream_options: StreamOptions | None = Field(None, **_policy("honoured"))
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, **_policy("honoured"))
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, **_policy("honoured"))
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, **_policy("honoured"))
    logit_bias: dict[str, float] | None = Field(None, **_policy("honoured"))
    user: str | None = Field(None, **_policy("no-op", "For abuse monitoring at OpenAI."))
    # mlxq's own, as vLLM and mlx_lm.server name them
    top_k: int | None = Field(None, ge=0, **_policy("honoured", "mlxq: 0 is off."))
    min_p: float | None = Field(None, ge=0.0, le=1.0, **_policy("honoured"))
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, **_policy("honoured"))
    timeout: float | None = Field(
        None, gt=0, le=86400, **_policy("honoured", "mlxq: seconds until the deadline.")
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

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
        # A JSON "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot encode: such
        # text can be neither tokenized nor sent back, so it is refused here, before a job.
        try:
            self.model_dump_json()
        except PydanticSerializationError:
            raise ValueError(
                "text must be valid Unicode: it contains an unpaired surrogate "
                "(a \\ud800-\\udfff escape without its pair)"
            ) from None
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


def _refuse(cls: type, value: Any, info: ValidationInfo) -> Any:
    """A refused field set to anything but its neutral value is a 400 that names it."""
    neutral = {"modalities": ["text"]}.get(info.field_name or "")
    if value is not None and value != neutral:
        raise ValueError(_REFUSED_WHY[info.field_name or ""])
    return value


class ChatCompletionRequest(_Generation):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES, **_policy("honoured"))
    max_completion_tokens: int | None = Field(None, ge=1, **_policy("honoured"))
    logprobs: bool | None = Field(None, **_policy("honoured"))
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, **_policy("honoured"))
    response_format: ResponseFormatIn | None = Field(None, **_policy("honoured"))
    tools: list[ToolIn] | None = Field(None, max_length=MAX_TOOLS, **_policy("honoured"))
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, **_policy("honoured")
    )
    parallel_tool_calls: bool | None = Field(None, **_policy("honoured"))
    chat_template_kwargs: dict[str, JSONScalar] | None = Field(
        None, **_policy("honoured", "mlxq: extra chat-template variables.")
    )
    store: bool | None = Field(None, **_policy("no-op", "Nothing is stored."))
    metadata: dict[str, str] | None = Field(None, **_policy("no-op", "Nothing is stored."))
    service_tier: str | None = Field(None, **_policy("no-op", "One tier here."))
    safety_identifier: str | None = Field(None, **_policy("no-op", "For abuse monitoring."))
    prompt_cache_key: str | None = Field(
        None, **_policy("no-op", "Prompts are always cached (prefix cache).")
    )
    prompt_cache_retention: str | None = Field(
        None, **_policy("no-op", "Prompts are always cached (prefix cache).")
    )
    prompt_cache_options: dict[str, Any] | None = Field(
        None, **_policy("no-op", "Prompts are always cached (prefix cache).")
    )
    audio: dict[str, Any] | None = Field(None, **_policy("refused"))
    modalities: list[str] | None = Field(None, **_policy("refused"))
    prediction: dict[str, Any] | None = Field(None, **_policy("refused"))
    web_search_options: dict[str, Any] | None = Field(None, **_policy("refused"))
    reasoning_effort: str | None = Field(None, **_policy("refused"))
    verbosity: str | None = Field(None, **_policy("refused"))
    moderation: Any = Field(None, **_policy("refused"))
    functions: list[dict[str, Any]] | None = Field(None, **_policy("refused"))
    function_call: str | dict[str, Any] | None = Field(None, **_policy("refused"))

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
    prompt: str | list[str] | list[int] | list[list[int]] = Field(**_policy("honoured"))
    echo: bool | None = Field(None, **_policy("honoured"))
    logprobs: int | None = Field(None, ge=0, le=5, **_policy("honoured"))
    suffix: str | None = Field(None, **_policy("refused"))
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES, **_policy("refused"))

    _refused = field_validator("suffix")(_refuse)

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
        if self.echo and self.logprobs is not None:
            raise ValueError("echo with logprobs (the prompt's logprobs) is not supported")
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


def _ids(prompt: list[Any]) -> bool:
    """A flat list of token ids (one prompt), not a list of prompts."""
    return bool(prompt) and all(isinstance(p, int) for p in prompt)
