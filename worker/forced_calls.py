"""Reading forced tool calls while they are decoded, so that their arguments stream.

A forced answer (worker/tool_schemas.py) is compact JSON written under its schema: one call
``{"name":"get_weather","arguments":{"city":"Paris"}}``, or an array of them. This reader
follows the JSON character by character (strings, escapes, nesting) and knows, for each
call, its name once the name's string is closed, and the text of its arguments as it
grows. Each piece of text it is fed gives the calls' new pieces: a call's first piece
carries its id, its name and its arguments so far; later pieces (same id) the arguments'
new text, the way OpenAI streams a call. Concatenated, a call's pieces are its arguments.

When generation stops early (``max_tokens``), :meth:`ForcedCalls.calls` still gives every
call whose name was written, the last one with its arguments cut short, as OpenAI returns a
call cut by the length limit; a call cut inside its name is left out.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from shared.schemas import FunctionCall, ToolCall


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class _Call:
    id: str = field(default_factory=new_call_id)
    name_text: list[str] = field(default_factory=list)
    """The name's JSON string, quotes included, as written."""
    named: bool = False
    arguments: list[str] = field(default_factory=list)
    announced: bool = False
    sent: int = 0
    """How many characters of the arguments earlier pieces carried."""

    @property
    def name(self) -> str:
        return str(json.loads("".join(self.name_text)))

    def piece(self) -> ToolCall | None:
        """The call's next piece: its name and the arguments not sent yet."""
        if not self.named:
            return None
        text = "".join(self.arguments)
        if self.announced and self.sent == len(text):
            return None
        piece, self.sent, self.announced = text[self.sent :], len(text), True
        return ToolCall(id=self.id, function=FunctionCall(name=self.name, arguments=piece))

    def whole(self) -> ToolCall:
        arguments = "".join(self.arguments)
        return ToolCall(id=self.id, function=FunctionCall(name=self.name, arguments=arguments))


class ForcedCalls:
    """Feed the forced answer's text as it is released; get the calls' new pieces."""

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._depth = 0
        self._call_depth: int | None = None  # 1: one call object; 2: calls in an array
        self._in_string = False
        self._escaped = False
        self._key: list[str] | None = None  # a call's key being read
        self._member: str | None = None  # the call's member whose value is being read
        self._expect_key = False

    def feed(self, text: str) -> list[ToolCall]:
        for char in text:
            self._read(char)
        return [piece for call in self._calls if (piece := call.piece()) is not None]

    def calls(self) -> list[ToolCall]:
        """Every call whose name was written, whole or cut short."""
        return [call.whole() for call in self._calls if call.named]

    def _read(self, char: str) -> None:
        call = self._calls[-1] if self._calls else None
        if call is not None and self._in_arguments(char):
            call.arguments.append(char)
        if self._in_string:
            self._read_string(char, call)
        elif char == '"':
            self._in_string = True
            self._open_string(call)
        elif char in "{[":
            self._open(char)
        elif char in "}]":
            self._depth -= 1
            if self._depth == self._call_depth:
                self._member = None  # the arguments object ended
        elif self._depth == self._call_depth:
            if char == ":":
                self._expect_key = False
            elif char == ",":
                self._expect_key, self._member = True, None

    def _in_arguments(self, char: str) -> bool:
        """Whether ``char`` belongs to the value of the current call's "arguments": anything
        inside it, or at the call's own level after the colon until the "," or "}" that
        ends the member."""
        if self._member != "arguments" or self._expect_key or self._call_depth is None:
            return False
        return self._depth > self._call_depth or self._in_string or char not in ",}"

    def _open(self, char: str) -> None:
        if self._call_depth is None:
            self._call_depth = 1 if char == "{" else 2
        self._depth += 1
        if self._depth == self._call_depth and char == "{":
            self._calls.append(_Call())
            self._expect_key, self._member = True, None

    def _open_string(self, call: _Call | None) -> None:
        if self._depth != self._call_depth or call is None:
            return
        if self._expect_key:
            self._key = []
        elif self._member == "name":
            call.name_text.append('"')

    def _read_string(self, char: str, call: _Call | None) -> None:
        ends = char == '"' and not self._escaped
        self._escaped = char == "\\" and not self._escaped
        if self._key is not None:
            if ends:
                self._member, self._key = json.loads('"' + "".join(self._key) + '"'), None
            else:
                self._key.append(char)
        elif self._member == "name" and self._depth == self._call_depth and call is not None:
            call.name_text.append(char)
            call.named = ends
        if ends:
            self._in_string = False
