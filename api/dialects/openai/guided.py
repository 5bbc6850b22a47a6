"""vLLM's guided decoding on OpenAI's chat and text completions, as vLLM's clients send it
(the openai client's ``extra_body``): ``guided_json``, ``guided_regex``, ``guided_choice``,
``guided_grammar``, and vLLM's newer ``structured_outputs`` object with ``json``, ``regex``,
``choice`` and ``grammar``. Each is enforced token by token like ``response_format`` (the
worker's llguidance: a regex in Rust's syntax, a grammar in Lark or GBNF).

At most one way of constraining the answer per request: two of these fields, one of them
with ``response_format`` (json_object, json_schema), two keys of ``structured_outputs``, or
one of them with a forced tool call, is a 400 naming both. A pattern or grammar the engine
cannot compile is a 400 from the worker, naming the field.
"""

import json
from typing import Any

from pydantic import Field, field_validator, model_validator

from api.core.validators import StrictBody, policy
from shared.schemas import ResponseFormat

MAX_CHOICES = 256
"""Choices in one guided_choice: each is an alternative of one grammar rule."""

_KIND = {"json": "json_schema", "regex": "regex", "choice": "choice", "grammar": "grammar"}
_GUIDED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


class StructuredOutputsIn(StrictBody):
    """vLLM's ``structured_outputs``: one of its keys."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = Field(None, min_length=1, max_length=MAX_CHOICES)
    grammar: str | None = Field(None, min_length=1)

    _json_text = field_validator("json_", mode="before")(lambda cls, value: _schema(value))

    @model_validator(mode="after")
    def _one_key(self) -> "StructuredOutputsIn":
        given = [key for key in _KIND if self._value(key) is not None]
        if len(given) != 1:
            names = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of json, regex, choice, grammar (given: {names})")
        return self

    def _value(self, key: str) -> Any:
        return self.json_ if key == "json" else getattr(self, key)

    def response_format(self) -> ResponseFormat:
        (key,) = [key for key in _KIND if self._value(key) is not None]
        return _format(_KIND[key], self._value(key), f"structured_outputs.{key}")


class GuidedDecoding(StrictBody):
    """The guided-decoding fields (mlxq's, as vLLM names them)."""

    guided_json: dict[str, Any] | str | None = Field(
        None, **policy("honoured", "vLLM's: the answer follows this JSON Schema.")
    )
    guided_regex: str | None = Field(
        None, **policy("honoured", "vLLM's: the answer matches this regular expression.")
    )
    guided_choice: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CHOICES,
        **policy("honoured", "vLLM's: the answer is one of these strings."),
    )
    guided_grammar: str | None = Field(
        None, min_length=1, **policy("honoured", "vLLM's: a Lark (or GBNF) grammar.")
    )
    structured_outputs: StructuredOutputsIn | None = Field(
        None, **policy("honoured", "vLLM's: one of json, regex, choice, grammar.")
    )

    _json_text = field_validator("guided_json", mode="before")(lambda cls, value: _schema(value))

    @model_validator(mode="after")
    def _at_most_one(self) -> "GuidedDecoding":
        names = (*_GUIDED, "structured_outputs")
        given = [name for name in names if getattr(self, name) is not None]
        response_format = getattr(self, "response_format", None)
        if response_format is not None and response_format.type != "text":
            given.append("response_format")
        if len(given) > 1:
            raise ValueError(
                f"{' and '.join(given)} each constrain the answer: give only one of them"
            )
        if given and given != ["response_format"] and self._forces_a_tool_call():
            raise ValueError(
                f"{given[0]} cannot be combined with a forced tool call (tool_choice "
                '"required" or a named function): the answer is the call'
            )
        return self

    def _forces_a_tool_call(self) -> bool:
        choice = getattr(self, "tool_choice", None)
        return bool(getattr(self, "tools", None)) and choice not in (None, "auto", "none")

    def guided_format(self) -> ResponseFormat | None:
        """The guided-decoding field given, as the job's response_format (None if none)."""
        if self.structured_outputs is not None:
            return self.structured_outputs.response_format()
        for name in _GUIDED:
            value = getattr(self, name)
            if value is not None:
                return _format(_KIND[name.removeprefix("guided_")], value, name)
        return None


def _schema(value: Any) -> Any:
    """vLLM takes a schema as an object or as its JSON text."""
    if not isinstance(value, str):
        return value
    try:
        schema = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"a JSON Schema, as an object or its JSON text ({exc})") from None
    if not isinstance(schema, dict):
        raise ValueError("a JSON Schema is a JSON object")
    return schema


def _format(kind: str, value: Any, field: str) -> ResponseFormat:
    fields: dict[str, Any] = {
        "json_schema": {"json_schema": {"schema": value}},
        "regex": {"pattern": value},
        "choice": {"choices": value},
        "grammar": {"grammar": value},
    }[kind]
    return ResponseFormat(type=kind, field=field, **fields)
