"""A tool call's arguments as an object, also when the call was cut short.

OpenAI's dialects return a call's arguments as JSON text, and a call that ``max_tokens`` cut
short with its text as far as it went (``{"city":"Par``). Anthropic's ``tool_use`` block
and Ollama's calls carry an object instead: for a cut call, the longest leading part of its
text that closes into an object (``{"city": "Par"}``), as Anthropic's own clients read a
partial ``input_json_delta`` stream.
"""

import json
from typing import Any


def arguments_object(text: str) -> dict[str, Any] | None:
    """The arguments' object: the text itself when it is whole JSON, else its longest
    prefix that closes into an object (a cut string is closed where it was cut; a member
    whose value was not begun is dropped). None when the text is no object at all."""
    for end in _cut_points(text):
        try:
            value = json.loads(text[:end] + _closing(text[:end]))
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _cut_points(text: str) -> list[int]:
    """Where to try cutting, longest first: the whole text, then before each "," or after
    each opening bracket (outside strings)."""
    points, in_string, escaped = [len(text)], False, False
    for at, char in enumerate(text):
        if in_string:
            in_string = not (char == '"' and not escaped)
            escaped = char == "\\" and not escaped
        elif char == '"':
            in_string = True
        elif char == ",":
            points.append(at)
        elif char in "{[":
            points.append(at + 1)
    return sorted(set(points), reverse=True)


def _closing(prefix: str) -> str:
    """What closes ``prefix``: a quote if a string is open, then its open brackets."""
    stack: list[str] = []
    in_string, escaped = False, False
    for char in prefix:
        if in_string:
            in_string = not (char == '"' and not escaped)
            escaped = char == "\\" and not escaped
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    return ('"' if in_string else "") + "".join(reversed(stack))
