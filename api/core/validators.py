"""The request conventions every dialect shares, written once; each dialect only names its field.

- ``StrictBody``: JSON types as the schema says them (``"max_tokens": "5"`` is no integer),
  unknown fields refused (never silently dropped), no NaN or Infinity (``1e400`` parses as
  Infinity): no number a request can mean.
- ``ensure_encodable``: a JSON ``"\\ud800"`` escape decodes to a lone surrogate, which UTF-8
  cannot encode: such text can be neither tokenized nor sent back, so it is refused before a
  job is made.
- ``ToolName``: the names a function tool may have (OpenAI's rule, which every dialect's
  clients follow).
- ``stop_list``: stop sequences as a list, bounded, none empty.
- ``policy`` / ``field_policy``: every field of an OpenAI-shaped body is honoured, refused, or
  a documented no-op; the marker says which.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticSerializationError

from shared.schemas import MAX_STOP_SEQUENCES, TOOL_NAME_PATTERN

MAX_MESSAGES = 512
"""More messages than any real conversation; bounds the work one request can ask for."""
MAX_TOOLS = 128
"""OpenAI's limit on tools per request; the other dialects take the same."""
MAX_SCHEMA_DEPTH = 100
"""Nested objects and arrays a JSON schema may have: the grammar engine (llguidance) stops at
about 124, with a parser message that says nothing to a client."""

ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=TOOL_NAME_PATTERN)]
"""A function tool's name, in every dialect."""


class StrictBody(BaseModel):
    """The base of every request body: strict JSON types, unknown fields refused, finite
    numbers only."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


UNPAIRED_SURROGATE = (
    "text must be valid Unicode: it contains an unpaired surrogate "
    "(a \\ud800-\\udfff escape without its pair)"
)


def ensure_encodable(body: BaseModel) -> None:
    """Raise ValueError (a 400 inside a model validator) when the body's text cannot be
    encoded as UTF-8."""
    try:
        body.model_dump_json()
    except PydanticSerializationError:
        raise ValueError(UNPAIRED_SURROGATE) from None


def stop_list(stop: str | list[str] | None) -> list[str]:
    """Stop sequences as a list (a single string is one), at most MAX_STOP_SEQUENCES, none
    empty; raises ValueError otherwise."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if any(not s for s in stops):
        raise ValueError("stop sequences must not be empty")
    return stops


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar: 0)."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
    return depth


def schema_depth_problem(schema: Any, where: str) -> str | None:
    """Why a JSON schema is too deep to enforce, naming ``where`` it came from; or None."""
    depth = json_depth(schema)
    if depth <= MAX_SCHEMA_DEPTH:
        return None
    return (
        f"{where} nests objects and arrays {depth} levels deep; at most {MAX_SCHEMA_DEPTH} can "
        "be enforced."
    )


def normalized_stops(cls: type, stop: str | list[str] | None) -> list[str]:
    """``stop_list`` as a field validator: ``field_validator("stop")(normalized_stops)``."""
    return stop_list(stop)


# -- the honoured / refused / no-op marker of OpenAI-shaped bodies ---------------------------

Policy = Literal["honoured", "refused", "no-op"]


def policy(kind: Policy, description: str | None = None) -> dict[str, Any]:
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


def refuser(why: dict[str, str], neutral: Any = None) -> Any:
    """A field validator for refused fields: set to anything but their neutral value
    (``neutral(field, value) -> bool``; default: only null), they are a 400 naming why."""

    def is_neutral(name: str, value: Any) -> bool:
        return value is None if neutral is None else neutral(name, value)

    def refuse(cls: type, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        if not is_neutral(name, value):
            raise ValueError(why[name])
        return value

    return refuse
