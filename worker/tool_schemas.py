"""The JSON Schemas forced tool calls are decoded under (``tool_choice`` "required" or a named
function), by constrained decoding (worker/constrained.py).

- One call is ``{"name": <the function's name>, "arguments": <its parameters>}``; with
  "required", any one of the tools.
- With "required" and ``parallel_tool_calls`` allowed, the answer is a JSON array of one or
  more calls (OpenAI: the model calls one or more tools); a named function, or
  ``parallel_tool_calls: false``, is exactly one call.
- Arguments hold the declared properties only. An object schema that does not say
  ``additionalProperties`` gets ``false``, unless it allows more some other way
  (``patternProperties``, ``unevaluatedProperties``); ``additionalProperties: true`` or a
  schema stays. JSON Schema allows any key where nothing is said, and a small model then
  invents some (``{"city": "Paris", "temperature_scale": "Celsius"}`` for a tool with one
  parameter), which agents that check calls refuse (smolagents); the schemas LangChain,
  smolagents and Ollama's clients send never say it. The members of an ``allOf`` are left
  as given: closing each would refuse the properties the others declare.
- A function without ``parameters`` (or with ``{}``) takes none: its arguments are ``{}``.
"""

from __future__ import annotations

from typing import Any

from shared.schemas import NO_PARAMETERS

_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalItems", "contains", "not", "if", "then", "else")
_SCHEMA_VALUES_OPEN = ("additionalProperties", "unevaluatedProperties")


def closed(schema: Any) -> Any:
    """``schema`` with every object that says nothing of other keys closed to them."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(value) for name, value in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed(value) for value in out[key]]
    for key in (*_SCHEMA_VALUES, *_SCHEMA_VALUES_OPEN):
        value = out.get(key)
        if isinstance(value, list):  # "items" as a list: the draft-4 tuple form
            out[key] = [closed(item) for item in value]
        elif isinstance(value, dict):
            out[key] = closed(value)
    if _is_object(out) and not any(key in out for key in _OPEN_KEYWORDS):
        out["additionalProperties"] = False
    return out


def _is_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if isinstance(kind, list):
        return "object" in kind
    return kind == "object" or (kind is None and "properties" in schema)


def call_schema(function: dict[str, Any]) -> dict[str, Any]:
    """One call of ``function``: its name, then its arguments (in that order: llguidance
    keeps the schema's order, which lets worker/forced_calls.py stream them)."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": function["name"]},
            "arguments": closed(function.get("parameters") or NO_PARAMETERS),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_schema(
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    parallel: bool = False,
) -> dict[str, Any]:
    """The schema of the answer for ``tool_choice`` "required" (any of the tools; with
    ``parallel``, an array of one or more calls) or a named function (one call of it).

    Raises ValueError for other choices, no tools, or a named function not in ``tools``.
    """
    by_name: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError("Each tool must be {'type': 'function', 'function': {'name': ...}}.")
        by_name[function["name"]] = call_schema(function)
    if not by_name:
        raise ValueError(f"tool_choice {tool_choice!r} needs at least one tool in 'tools'.")
    if tool_choice == "required":
        one = {"anyOf": list(by_name.values())}
        return {"type": "array", "items": one, "minItems": 1} if parallel else one
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in by_name:
            raise ValueError(
                f"tool_choice names the function {name!r}, which is not in 'tools' "
                f"(available: {', '.join(sorted(by_name))})."
            )
        return by_name[name]
    raise ValueError(f"tool_choice {tool_choice!r} does not constrain the output to a tool call.")
