"""The OpenAI Responses API (``POST /v1/responses``): the request body mlxq accepts.

As for chat completions (``api/dialects/openai/schemas.py``), every field of OpenAI's request
is honoured, refused with a 400 that names it (when set to anything but its neutral value), or
a documented no-op; unknown fields are refused. mlxq stores nothing: ``store`` is a no-op
(the answer says ``"store": false``) and whatever needs a stored response or conversation
(``previous_response_id``, ``conversation``, ``background``) is refused. Only function tools
and text content work; other tool types, input item types and content parts are refused by
name.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, Tag, field_validator, model_validator

from api.core.validators import (
    MAX_TOOLS,
    StrictBody,
    ToolName,
    ensure_encodable,
    policy,
    refuser,
)
from api.dialects.responses.items import TEXT_OR_LIST, InputItem, check_items, only_types
from shared.schemas import JSONScalar

# -- tools, tool_choice, text.format ----------------------------------------------------------


class ResponsesFunctionTool(StrictBody):
    type: Literal["function"]
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesFunctionChoice(StrictBody):
    type: Literal["function"]
    name: str


class ResponsesFormatText(StrictBody):
    type: Literal["text"]


class ResponsesFormatJsonObject(StrictBody):
    type: Literal["json_object"]


class ResponsesFormatJsonSchema(StrictBody):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema", min_length=1)
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    ResponsesFormatText | ResponsesFormatJsonObject | ResponsesFormatJsonSchema,
    Field(discriminator="type"),
]


class ResponsesTextConfig(StrictBody):
    format: TextFormat | None = Field(None, **policy("honoured"))
    verbosity: str | None = Field(None, **policy("refused"))

    @field_validator("verbosity")
    @classmethod
    def _no_verbosity(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("verbosity is not supported")
        return value


class ResponsesStreamOptions(StrictBody):
    include_obfuscation: bool | None = Field(
        None, **policy("no-op", "Obfuscation pads events against side channels; not sent.")
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


_refuse = refuser(_REFUSED_WHY, neutral=lambda name, value: _neutral(value))
"""A refused field set to anything but its neutral value is a 400 that names it."""


_PROMPT_CACHED = "Prompts are always cached (prefix cache)."


class ResponseRequest(StrictBody):
    model: str = Field(min_length=1, **policy("honoured"))
    input: Annotated[
        Annotated[str, Tag("text")] | Annotated[list[InputItem], Tag("list")],
        TEXT_OR_LIST,
    ] = Field(
        **policy("honoured", "Required: nothing is stored, so the input is the whole conversation.")
    )
    instructions: str | None = Field(None, **policy("honoured", "A system message first."))
    max_output_tokens: int | None = Field(None, ge=1, **policy("honoured"))
    temperature: float | None = Field(None, ge=0.0, le=2.0, **policy("honoured"))
    top_p: float | None = Field(None, ge=0.0, le=1.0, **policy("honoured"))
    text: ResponsesTextConfig | None = Field(None, **policy("honoured"))
    tools: list[ResponsesFunctionTool] | None = Field(
        None, max_length=MAX_TOOLS, **policy("honoured")
    )
    tool_choice: Literal["none", "auto", "required"] | ResponsesFunctionChoice | None = Field(
        None, **policy("honoured")
    )
    parallel_tool_calls: bool | None = Field(None, **policy("honoured"))
    stream: bool | None = Field(None, **policy("honoured"))
    # mlxq's own, as on /v1/chat/completions
    seed: int | None = Field(
        None, ge=0, le=2**64 - 1, **policy("honoured", "mlxq: reproducible sampling.")
    )
    top_k: int | None = Field(None, ge=0, **policy("honoured", "mlxq: 0 is off."))
    min_p: float | None = Field(None, ge=0.0, le=1.0, **policy("honoured"))
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, **policy("honoured"))
    chat_template_kwargs: dict[str, JSONScalar] | None = Field(
        None, **policy("honoured", "mlxq: extra chat-template variables.")
    )
    timeout: float | None = Field(
        None, gt=0, le=86400, **policy("honoured", "mlxq: seconds until the deadline.")
    )
    speculative: bool | None = Field(
        None, **policy("honoured", "mlxq: false turns speculative decoding off.")
    )
    # no-ops
    store: bool | None = Field(None, **policy("no-op", 'Nothing is stored: "store": false.'))
    metadata: dict[str, str] | None = Field(None, **policy("no-op", "Nothing is stored."))
    user: str | None = Field(None, **policy("no-op", "For abuse monitoring at OpenAI."))
    safety_identifier: str | None = Field(None, **policy("no-op", "For abuse monitoring."))
    service_tier: str | None = Field(None, **policy("no-op", "One tier here."))
    truncation: Literal["auto", "disabled"] | None = Field(
        None,
        **policy("no-op", "Nothing is truncated: a too-long input is a 400 either way."),
    )
    prompt_cache_key: str | None = Field(None, **policy("no-op", _PROMPT_CACHED))
    prompt_cache_retention: str | None = Field(None, **policy("no-op", _PROMPT_CACHED))
    prompt_cache_options: dict[str, Any] | None = Field(None, **policy("no-op", _PROMPT_CACHED))
    stream_options: ResponsesStreamOptions | None = Field(
        None, **policy("no-op", "Its only option, include_obfuscation, is a no-op.")
    )
    max_tool_calls: int | None = Field(
        None, ge=0, **policy("no-op", "Counts built-in tool calls; there are none here.")
    )
    image: dict[str, Any] | None = Field(
        None, **policy("no-op", "Image options; images are refused (text models only).")
    )
    access_programs: dict[str, Any] | None = Field(
        None, **policy("no-op", "OpenAI's access programs; one program here.")
    )
    # refused
    previous_response_id: str | None = Field(None, **policy("refused"))
    conversation: str | dict[str, Any] | None = Field(None, **policy("refused"))
    background: bool | None = Field(None, **policy("refused"))
    background_options: dict[str, Any] | None = Field(None, **policy("refused"))
    reasoning: dict[str, Any] | None = Field(None, **policy("refused"))
    include: list[str] | None = Field(None, **policy("refused"))
    context_management: list[dict[str, Any]] | None = Field(None, **policy("refused"))
    moderation: dict[str, Any] | None = Field(None, **policy("refused"))
    prompt: dict[str, Any] | None = Field(None, **policy("refused"))
    top_logprobs: int | None = Field(None, ge=0, le=20, **policy("refused"))

    _refused = field_validator(*_REFUSED_WHY)(_refuse)
    _input_items = field_validator("input", mode="before")(check_items)
    _function_tools = field_validator("tools", mode="before")(
        only_types(("function",), "tools", 'only function tools (type "function") work here')
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
        ensure_encodable(self)
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
