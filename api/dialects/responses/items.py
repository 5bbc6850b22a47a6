"""The Responses API's input items: messages (text only), earlier function calls and their
outputs, and earlier reasoning (accepted, not rendered). Any other item or content type is
refused by name."""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from api.core.validators import MAX_MESSAGES, StrictBody, policy

ItemStatus = Literal["in_progress", "completed", "incomplete"]


def only_types(kinds: tuple[str, ...], what: str, hint: str) -> Any:
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


TEXT_OR_LIST = Discriminator(
    _text_or_list,
    custom_error_type="string_or_list_type",
    custom_error_message="Input should be a string or a list",
)


# -- input: messages, function calls and their outputs ---------------------------------------


class ResponsesInputText(StrictBody):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = Field(
        None, **policy("no-op", "Prompts are always cached (prefix cache).")
    )


class ResponsesOutputText(StrictBody):
    """An earlier answer's text, as the Response gave it (so ``response.output`` round-trips)."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class ResponsesRefusalPart(StrictBody):
    type: Literal["refusal"]
    refusal: str = Field(**policy("no-op", "An earlier refusal; not rendered."))


TextPart = Annotated[
    ResponsesInputText | ResponsesOutputText | ResponsesRefusalPart, Field(discriminator="type")
]
Content = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[TextPart], Tag("list")],
    TEXT_OR_LIST,
]
_TEXT_PARTS = ("input_text", "output_text", "refusal")
_TEXT_ONLY = "only text content (input_text, output_text) is supported: text models only"


class ResponsesMessageItem(StrictBody):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Content
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    _text_parts = field_validator("content", mode="before")(
        only_types(_TEXT_PARTS, "content", _TEXT_ONLY)
    )

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if not isinstance(p, ResponsesRefusalPart))


class ResponsesFunctionCallItem(StrictBody):
    """A call the model made earlier (an output item of an earlier Response)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class ResponsesFunctionCallOutputItem(StrictBody):
    """The result of a call, for the model to read."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Annotated[
        Annotated[str, Tag("text")] | Annotated[list[ResponsesInputText], Tag("list")],
        TEXT_OR_LIST,
    ]
    id: str | None = None
    status: ItemStatus | None = None

    _text_parts = field_validator("output", mode="before")(
        only_types(("input_text",), "output", _TEXT_ONLY)
    )

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


class ResponsesReasoningItem(StrictBody):
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


def check_items(value: Any) -> Any:
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
