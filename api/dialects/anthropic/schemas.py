"""Anthropic's Messages API: the request bodies /v1/messages accepts, and their translation into
mlxq's own ``ChatMessage`` list.

Like every dialect's bodies (api/core/validators.py), types are strict, unknown fields are refused
and NaN or Infinity are no numbers. What a text model cannot do is refused with a 400 that
names the field: image and document blocks, extended thinking, a final assistant message
(Anthropic's "prefill": the worker would render it as a finished turn, not continue it).
``cache_control`` is accepted wherever Anthropic accepts it and changes nothing: the worker's
prefix cache reuses every prompt's KV without being asked.
"""

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from api.core.validators import MAX_MESSAGES, MAX_TOOLS, StrictBody, ToolName, ensure_encodable
from shared.schemas import MAX_STOP_SEQUENCES, ChatMessage, FunctionCall, ToolCall

_REFUSED_BLOCKS = {
    "image": "image blocks are not supported: mlxq serves text models",
    "document": "document blocks are not supported: send the document's text in a text block",
    "search_result": "search_result blocks are not supported",
    "thinking": "thinking blocks are not supported (extended thinking is not available)",
    "redacted_thinking": "redacted_thinking blocks are not supported",
    "server_tool_use": "server tools are not available on a local server",
    "web_search_tool_result": "server tools are not available on a local server",
}


class CacheControl(StrictBody):
    """Accepted and ignored: every prompt is cached by the worker's prefix cache."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(StrictBody):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: None = None
    """Only null: citations are not supported (an answer sent back carries ``null``)."""


class ToolUseBlock(StrictBody):
    """An earlier call of the assistant, sent back with the conversation."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(StrictBody):
    """The answer to a call: text, and whether the tool failed."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None

    def text(self) -> str:
        content = self.content
        text = _joined(content) if isinstance(content, list) else content or ""
        return f"Error: {text}" if self.is_error else text


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


def _joined(blocks: list[TextBlock]) -> str:
    return "\n".join(block.text for block in blocks)


class MessageIn(StrictBody):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _supported_blocks(cls, content: Any) -> Any:
        if isinstance(content, list):
            for i, block in enumerate(content):
                kind = block.get("type") if isinstance(block, dict) else None
                if isinstance(kind, str) and kind in _REFUSED_BLOCKS:
                    raise ValueError(f"content[{i}]: {_REFUSED_BLOCKS[kind]}")
        return content

    @model_validator(mode="after")
    def _blocks_fit_the_role(self) -> "MessageIn":
        blocks = self.content if isinstance(self.content, list) else []
        if self.role == "user" and any(isinstance(b, ToolUseBlock) for b in blocks):
            raise ValueError("tool_use blocks belong in assistant messages")
        if self.role == "assistant" and any(isinstance(b, ToolResultBlock) for b in blocks):
            raise ValueError("tool_result blocks belong in user messages")
        return self

    def chat_messages(self) -> list[ChatMessage]:
        """This message as the worker reads it: an assistant's tool_use blocks are its
        tool_calls; a user's tool_result blocks are ``tool`` messages, in their order."""
        if isinstance(self.content, str):
            return [ChatMessage(role=self.role, content=self.content)]
        if self.role == "assistant":
            calls = [
                ToolCall(
                    id=block.id,
                    function=FunctionCall(
                        name=block.name, arguments=json.dumps(block.input, ensure_ascii=False)
                    ),
                )
                for block in self.content
                if isinstance(block, ToolUseBlock)
            ]
            texts = [block for block in self.content if isinstance(block, TextBlock)]
            return [ChatMessage(role="assistant", content=_joined(texts), tool_calls=calls or None)]
        messages: list[ChatMessage] = []
        pending: list[TextBlock] = []
        for block in self.content:
            if isinstance(block, TextBlock):
                pending.append(block)
            elif isinstance(block, ToolResultBlock):
                if pending:
                    messages.append(ChatMessage(role="user", content=_joined(pending)))
                    pending = []
                messages.append(
                    ChatMessage(role="tool", content=block.text(), tool_call_id=block.tool_use_id)
                )
        if pending or not messages:
            messages.append(ChatMessage(role="user", content=_joined(pending)))
        return messages


class ToolIn(StrictBody):
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    strict: bool | None = None
    cache_control: CacheControl | None = None

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError('input_schema must be a JSON Schema with "type": "object"')
        return schema


class ToolChoiceIn(StrictBody):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, min_length=1)
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_with_tool(self) -> "ToolChoiceIn":
        if self.type == "tool" and self.name is None:
            raise ValueError('tool_choice of type "tool" needs the name of the tool')
        if self.type != "tool" and self.name is not None:
            raise ValueError(f'tool_choice of type "{self.type}" takes no name')
        return self


class Metadata(StrictBody):
    """Accepted and ignored: nothing is stored or monitored here."""

    user_id: str | None = None


class PromptRequest(StrictBody):
    """What /v1/messages and /v1/messages/count_tokens share: the prompt."""

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = None
    tools: list[ToolIn] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoiceIn | None = None
    thinking: dict[str, Any] | None = Field(
        None, description='Only {"type": "disabled"}: extended thinking is not available.'
    )

    @field_validator("thinking")
    @classmethod
    def _no_thinking(cls, thinking: dict[str, Any] | None) -> dict[str, Any] | None:
        if thinking is not None and thinking != {"type": "disabled"}:
            raise ValueError(
                'extended thinking is not supported; omit thinking or send {"type": "disabled"}'
            )
        return thinking

    @model_validator(mode="after")
    def _consistent(self) -> "PromptRequest":
        if self.messages[-1].role == "assistant":
            raise ValueError(
                "messages: the last message must be the user's; a final assistant message "
                "(prefill) is not supported"
            )
        choice = self.tool_choice
        if choice is not None and choice.type in ("any", "tool"):
            names = {tool.name for tool in self.tools or []}
            if not names:
                raise ValueError(f'tool_choice "{choice.type}" needs tools')
            if choice.name is not None and choice.name not in names:
                raise ValueError(f"tool_choice names {choice.name!r}, which is not in tools")
        ensure_encodable(self)
        return self

    def chat_messages(self) -> list[ChatMessage]:
        """The conversation as the worker reads it; the system prompt comes first."""
        system = _joined(self.system) if isinstance(self.system, list) else self.system
        messages = [ChatMessage(role="system", content=system)] if system else []
        for message in self.messages:
            messages += message.chat_messages()
        return messages

    @property
    def tool_choice_name(self) -> str:
        """mlxq's tool_choice: "auto", "none", "required" (Anthropic's "any") or a name."""
        choice = self.tool_choice
        if choice is None:
            return "auto"
        if choice.type == "tool":
            assert choice.name is not None  # checked by ToolChoiceIn
            return choice.name
        return {"any": "required"}.get(choice.type, choice.type)

    @property
    def parallel_tool_calls(self) -> bool | None:
        choice = self.tool_choice
        if choice is None or choice.disable_parallel_tool_use is None:
            return None
        return not choice.disable_parallel_tool_use


class JsonOutputFormat(StrictBody):
    """Structured outputs: the answer's text is JSON that follows ``schema``, enforced token
    by token (as ``response_format`` is on OpenAI's API)."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(StrictBody):
    format: JsonOutputFormat | None = None
    effort: str | None = Field(None, description="Refused unless null: no effort levels here.")

    @field_validator("effort")
    @classmethod
    def _no_effort(cls, effort: str | None) -> str | None:
        if effort is not None:
            raise ValueError("effort levels are not supported (they steer extended thinking)")
        return effort


class MessagesRequest(PromptRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOP_SEQUENCES)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="0: off.")
    stream: bool | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = Field(
        None, description="The structured-outputs beta's name for output_config.format."
    )

    @model_validator(mode="after")
    def _one_output_format(self) -> "MessagesRequest":
        if self.output_format is not None and self.output_config and self.output_config.format:
            raise ValueError("give output_config.format or output_format, not both")
        forced = self.tool_choice is not None and self.tool_choice.type in ("any", "tool")
        if self.json_format is not None and forced:
            raise ValueError(
                f"{self.json_format[0]} cannot be combined with tool_choice "
                f'"{self.tool_choice.type}": the answer is the tool call'  # type: ignore[union-attr]
            )
        return self

    @property
    def json_format(self) -> tuple[str, dict[str, Any]] | None:
        """The requested output format: (the field that gave it, its JSON Schema)."""
        if self.output_config is not None and self.output_config.format is not None:
            return "output_config.format", self.output_config.format.schema_
        if self.output_format is not None:
            return "output_format", self.output_format.schema_
        return None

    @field_validator("stop_sequences")
    @classmethod
    def _non_empty(cls, stops: list[str] | None) -> list[str] | None:
        if stops and any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return stops


class CountTokensRequest(PromptRequest):
    pass
