"""The OpenAI Responses API (``POST /v1/responses``): the request body mlxq accepts, and the
Response object and output items it answers with.

As for chat completions (``api/openai_requests.py``), every field of OpenAI's request is
honoured, refused with a 400 that names it (when set to anything but its neutral value), or
a documented no-op; unknown fields are refused. mlxq stores nothing: ``store`` is a no-op
(the answer says ``"store": false``) and whatever needs a stored response or conversation
(``previous_response_id``, ``conversation``, ``background``) is refused. Only function tools
and text content work; other tool types, input item types and content parts are refused by
name.
"""

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError

# The request conventions of the other /v1 bodies: strict JSON types, unknown fields refused,
# no NaN, and the honoured / refused / no-op marker that ``field_policy`` reads.
from api.openai_requests import MAX_MESSAGES, MAX_TOOLS, _policy, _Request
from shared.schemas import JSONScalar

ItemStatus = Literal["in_progress", "completed", "incomplete"]


def _only(kinds: tuple[str, ...], what: str, hint: str) -> Any:
    """A before-validator: a list whose items all have a ``type`` in ``kinds``, else a 400
    that names the first one that does not (index and type)."""

    def check(value: Any) -> Any:
        if isinstance(value, list):
            for i, item in enumerate(value):
                kind = item.get("type") if isinstance(item, dict) else None
                if isinstance(kind, str) and kind not in kinds:
                    raise ValueError(f"{what}[{i}]: type {kind!r} is not supported; {hint}")
        return value

    return check


def _text_or_list(value: Any) -> str | None:
    """Which side of ``str | list[...]`` a value is on: its errors then name that side only."""
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, list) else None


_TEXT_OR_LIST = Discriminator(
    _text_or_list,
    custom_error_type="string_or_list_type",
    custom_error_message="Input should be a string or a list",
)


# -- input: messages, function calls and their outputs ---------------------------------------


class ResponsesInputText(_Request):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = Field(
        None, **_policy("no-op", "Prompts are always cached (prefix cache).")
    )


class ResponsesOutputText(_Request):
    """An earlier answer's text, as the Response gave it (so ``response.output`` round-trips)."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class ResponsesRefusalPart(_Request):
    type: Literal["refusal"]
    refusal: str = Field(**_policy("no-op", "An earlier refusal; not rendered."))


TextPart = Annotated[
    ResponsesInputText | ResponsesOutputText | ResponsesRefusalPart, Field(discriminator="type")
]
Content = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[TextPart], Tag("list")],
    _TEXT_OR_LIST,
]
_TEXT_PARTS = ("input_text", "output_text", "refusal")
_TEXT_ONLY = "only text content (input_text, output_text) is supported: text models only"


class ResponsesMessageItem(_Request):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Content
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    _text_parts = field_validator("content", mode="before")(
        _only(_TEXT_PARTS, "content", _TEXT_ONLY)
    )

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if not isinstance(p, ResponsesRefusalPart))


class ResponsesFunctionCallItem(_Request):
    """A call the model made earlier (an output item of an earlier Response)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class ResponsesFunctionCallOutputItem(_Request):
    """The result of a call, for the model to read."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Annotated[
        Annotated[str, Tag("text")] | Annotated[list[ResponsesInputText], Tag("list")],
        _TEXT_OR_LIST,
    ]
    id: str | None = None
    status: ItemStatus | None = None

    _text_parts = field_validator("output", mode="before")(
        _only(("input_text",), "output", _TEXT_ONLY)
    )

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


class ResponsesReasoningItem(_Request):
    """An earlier answer's reasoning, sent back with ``response.output``; not rendered (chat
    templates drop earlier turns' thinking)."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] | None = None
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


def _item_kind(item: Any) -> str | None:
    """An input item's type; a message may leave it out (OpenAI's "easy input message")."""
    if isinstance(item, dict):
        return item.get("type", "message")
    return getattr(item, "type", None)


InputItem = Annotated[
    Annotated[ResponsesMessageItem, Tag("message")]
    | Annotated[ResponsesFunctionCallItem, Tag("function_call")]
    | Annotated[ResponsesFunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ResponsesReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind),
]
_ITEM_KINDS = ("message", "function_call", "function_call_output", "reasoning")


def _check_items(value: Any) -> Any:
    if isinstance(value, list):
        for i, item in enumerate(value):
            kind = _item_kind(item) if isinstance(item, dict) else None
            if isinstance(kind, str) and kind not in _ITEM_KINDS:
                why = (
                    "nothing is stored here, so there is nothing to refer to"
                    if kind == "item_reference"
                    else "only message, function_call and function_call_output items work here"
                )
                raise ValueError(f"input[{i}]: items of type {kind!r} are not supported; {why}")
        if len(value) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES} input items")
        if not value:
            raise ValueError("input must not be an empty list")
    return value


# -- tools, tool_choice, text.format ----------------------------------------------------------


class ResponsesFunctionTool(_Request):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesFunctionChoice(_Request):
    type: Literal["function"]
    name: str


class ResponsesFormatText(_Request):
    type: Literal["text"]


class ResponsesFormatJsonObject(_Request):
    type: Literal["json_object"]


class ResponsesFormatJsonSchema(_Request):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema", min_length=1)
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    ResponsesFormatText | ResponsesFormatJsonObject | ResponsesFormatJsonSchema,
    Field(discriminator="type"),
]


class ResponsesTextConfig(_Request):
    format: TextFormat | None = Field(None, **_policy("honoured"))
    verbosity: str | None = Field(None, **_policy("refused"))

    @field_validator("verbosity")
    @classmethod
    def _no_verbosity(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("verbosity is not supported")
        return value


class ResponsesStreamOptions(_Request):
    include_obfuscation: bool | None = Field(
        None, **_policy("no-op", "Obfuscation pads events against side channels; not sent.")
    )


# -- the request ------------------------------------------------------------------------------

_STATELESS = "nothing is stored here (store is always false): send the whole conversation in input"
_REFUSED_WHY = {
    "previous_response_id": _STATELESS,
    "conversation": _STATELESS,
    "background": "background responses are not supported: nothing is stored to poll later",
    "background_options": "background responses are not supported",
    "reasoning": "reasoning settings are not supported; set the model's thinking with "
    'chat_template_kwargs instead (e.g. {"enable_thinking": false})',
    "include": "no additional output data can be included (no built-in tools, logprobs or "
    "encrypted reasoning here)",
    "context_management": "context compaction is not supported",
    "moderation": "moderation is not available on a local server",
    "prompt": "stored prompt templates are not available here: send the text itself",
    "top_logprobs": "logprobs are not supported on /v1/responses; use /v1/chat/completions",
}


def _neutral(value: Any) -> bool:
    """Null, false, 0, empty, or a settings object with only such values: asks for nothing."""
    if value is None or value is False or (isinstance(value, int) and value == 0):
        return True
    if isinstance(value, list | dict) and not value:
        return True
    return isinstance(value, dict) and all(_neutral(v) for v in value.values())


def _refuse(cls: type, value: Any, info: ValidationInfo) -> Any:
    """A refused field set to anything but its neutral value is a 400 that names it."""
    if not _neutral(value):
        raise ValueError(_REFUSED_WHY[info.field_name or ""])
    return value


_PROMPT_CACHED = "Prompts are always cached (prefix cache)."


class ResponseRequest(_Request):
    model: str = Field(min_length=1, **_policy("honoured"))
    input: Annotated[
        Annotated[str, Tag("text")] | Annotated[list[InputItem], Tag("list")],
        _TEXT_OR_LIST,
    ] = Field(
        **_policy(
            "honoured", "Required: nothing is stored, so the input is the whole conversation."
        )
    )
    instructions: str | None = Field(None, **_policy("honoured", "A system message first."))
    max_output_tokens: int | None = Field(None, ge=1, **_policy("honoured"))
    temperature: float | None = Field(None, ge=0.0, le=2.0, **_policy("honoured"))
    top_p: float | None = Field(None, ge=0.0, le=1.0, **_policy("honoured"))
    text: ResponsesTextConfig | None = Field(None, **_policy("honoured"))
    tools: list[ResponsesFunctionTool] | None = Field(
        None, max_length=MAX_TOOLS, **_policy("honoured")
    )
    tool_choice: Literal["none", "auto", "required"] | ResponsesFunctionChoice | None = Field(
        None, **_policy("honoured")
    )
    parallel_tool_calls: bool | None = Field(None, **_policy("honoured"))
    stream: bool | None = Field(None, **_policy("honoured"))
    # mlxq's own, as on /v1/chat/completions
    seed: int | None = Field(
        None, ge=0, le=2**64 - 1, **_policy("honoured", "mlxq: reproducible sampling.")
    )
    top_k: int | None = Field(None, ge=0, **_policy("honoured", "mlxq: 0 is off."))
    min_p: float | None = Field(None, ge=0.0, le=1.0, **_policy("honoured"))
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, **_policy("honoured"))
    chat_template_kwargs: dict[str, JSONScalar] | None = Field(
        None, **_policy("honoured", "mlxq: extra chat-template variables.")
    )
    timeout: float | None = Field(
        None, gt=0, le=86400, **_policy("honoured", "mlxq: seconds until the deadline.")
    )
    # no-ops
    store: bool | None = Field(None, **_policy("no-op", 'Nothing is stored: "store": false.'))
    metadata: dict[str, str] | None = Field(None, **_policy("no-op", "Nothing is stored."))
    user: str | None = Field(None, **_policy("no-op", "For abuse monitoring at OpenAI."))
    safety_identifier: str | None = Field(None, **_policy("no-op", "For abuse monitoring."))
    service_tier: str | None = Field(None, **_policy("no-op", "One tier here."))
    truncation: Literal["auto", "disabled"] | None = Field(
        None,
        **_policy("no-op", "Nothing is truncated: a too-long input is a 400 either way."),
    )
    prompt_cache_key: str | None = Field(None, **_policy("no-op", _PROMPT_CACHED))
    prompt_cache_retention: str | None = Field(None, **_policy("no-op", _PROMPT_CACHED))
    prompt_cache_options: dict[str, Any] | None = Field(None, **_policy("no-op", _PROMPT_CACHED))
    stream_options: ResponsesStreamOptions | None = Field(
        None, **_policy("no-op", "Its only option, include_obfuscation, is a no-op.")
    )
    max_tool_calls: int | None = Field(
        None, ge=0, **_policy("no-op", "Counts built-in tool calls; there are none here.")
    )
    image: dict[str, Any] | None = Field(
        None, **_policy("no-op", "Image options; images are refused (text models only).")
    )
    access_programs: dict[str, Any] | None = Field(
        None, **_policy("no-op", "OpenAI's access programs; one program here.")
    )
    # refused
    previous_response_id: str | None = Field(None, **_policy("refused"))
    conversation: str | dict[str, Any] | None = Field(None, **_policy("refused"))
    background: bool | None = Field(None, **_policy("refused"))
    background_options: dict[str, Any] | None = Field(None, **_policy("refused"))
    reasoning: dict[str, Any] | None = Field(None, **_policy("refused"))
    include: list[str] | None = Field(None, **_policy("refused"))
    context_management: list[dict[str, Any]] | None = Field(None, **_policy("refused"))
    moderation: dict[str, Any] | None = Field(None, **_policy("refused"))
    prompt: dict[str, Any] | None = Field(None, **_policy("refused"))
    top_logprobs: int | None = Field(None, ge=0, le=20, **_policy("refused"))

    _refused = field_validator(*_REFUSED_WHY)(_refuse)
    _input_items = field_validator("input", mode="before")(_check_items)
    _function_tools = field_validator("tools", mode="before")(
        _only(("function",), "tools", 'only function tools (type "function") work here')
    )

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _function_choice(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") != "function":
            raise ValueError(
                f"tool_choice of type {value.get('type')!r} is not supported; use auto, none, "
                'required or {"type": "function", "name": ...}'
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ResponseRequest":
        if isinstance(self.tool_choice, ResponsesFunctionChoice) or self.tool_choice == "required":
            names = {tool.name for tool in self.tools or []}
            wanted = getattr(self.tool_choice, "name", None)
            if not names or (wanted is not None and wanted not in names):
                raise ValueError("tool_choice names a function that is not in tools")
        # A JSON "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot encode.
        try:
            self.model_dump_json()
        except PydanticSerializationError:
            raise ValueError(
                "text must be valid Unicode: it contains an unpaired surrogate "
                "(a \\ud800-\\udfff escape without its pair)"
            ) from None
        return self

    # what openai_sampling reads besides the fields above: not in OpenAI's Responses API
    @property
    def presence_penalty(self) -> None:
        return None

    @property
    def frequency_penalty(self) -> None:
        return None

    @property
    def bias(self) -> dict[int, float]:
        return {}

    @property
    def tool_choice_name(self) -> str:
        choice = self.tool_choice or "auto"
        return choice.name if isinstance(choice, ResponsesFunctionChoice) else choice

    @property
    def text_format(
        self,
    ) -> ResponsesFormatText | ResponsesFormatJsonObject | ResponsesFormatJsonSchema:
        return (self.text.format if self.text else None) or ResponsesFormatText(type="text")


# -- the answer: a Response object --------------------------------------------------------------


class ResponsesOutputTextOut(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ResponsesMessageOut(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[ResponsesOutputTextOut]


class ResponsesFunctionCallOut(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ResponsesReasoningTextOut(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ResponsesReasoningOut(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ResponsesReasoningTextOut]
    status: ItemStatus


OutputItem = Annotated[
    ResponsesMessageOut | ResponsesFunctionCallOut | ResponsesReasoningOut,
    Field(discriminator="type"),
]


class ResponsesInputTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Input tokens served from the prefix cache.")
    cache_write_tokens: int = Field(0, description="Not counted here: always 0.")


class ResponsesOutputTokensDetails(BaseModel):
    reasoning_tokens: int = Field(description="Always 0: reasoning is counted as output.")


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: ResponsesInputTokensDetails
    output_tokens: int
    output_tokens_details: ResponsesOutputTokensDetails
    total_tokens: int


class ResponsesIncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """OpenAI's Response, as ``client.responses.create`` reads it."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["in_progress", "completed", "incomplete"]
    error: None = None
    incomplete_details: ResponsesIncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool
    previous_response_id: None = None
    reasoning: None = None
    service_tier: Literal["default"] = "default"
    store: Literal[False] = False
    temperature: float
    top_p: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
