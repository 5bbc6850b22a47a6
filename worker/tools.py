"""OpenAI tools for every model: prompt rendering, constrained-call schemas, call parsing.

Models whose chat template knows tools (mlx-lm found a tool parser for it, or the template
text mentions ``tools``) get the tools through the template's own ``tools=`` variable, and
their history in the form Hugging Face templates expect (arguments as dicts), exactly as
``mlx_lm.server`` does; their calls are read back with the tokenizer's own tool parser.

Every other model (e.g. the demo SmolLM2-135M, whose ChatML template ignores tools) gets the
Hermes / Qwen2.5 convention written into plain messages, so any template renders it:

* the system message (created if the conversation has none; otherwise appended after a
  blank line) gets::

    # Tools

    You may call one or more functions to assist with the user query.

    You are provided with function signatures within <tools></tools> XML tags:
    <tools>
    {"type": "function", "function": {"name": ..., "description": ..., "parameters": ...}}
    </tools>

    For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
    <tool_call>
    {"name": <function-name>, "arguments": <args-json-object>}
    </tool_call>

  (one tool definition per line, as the request gave it);
* an assistant message's tool calls become its content (after its text, if any), one block
  per call, blocks separated by a newline::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

* a run of consecutive ``tool`` messages becomes one ``user`` message whose content is one
  ``<tool_response>\\n{result}\\n</tool_response>`` block per result, separated by a newline.

``tool_choice="none"`` renders no tools (history is still rendered). ``"required"`` and a
named function are enforced by constrained decoding under worker/tool_schemas.py's schemas;
the model then writes bare JSON (one call, or an array of calls), which
worker/forced_calls.py reads as it is generated.
"""

from __future__ import annotations

import json
from typing import Any

HERMES_TOOL_MARKERS: tuple[str, str] = ("<tool_call>", "</tool_call>")
"""The tool-call block markers of the fallback format (and of Qwen2.5 / Hermes templates)."""

_TOOLS_HEADER = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def template_knows_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders ``tools=`` itself: then it knows the model's format
    better than any convention of ours, so we must not write tools into the messages."""
    if getattr(tokenizer, "has_tool_calling", False):
        return True
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: any of them may be used
        template = "\n".join(str(t) for t in template.values())
    return isinstance(template, str) and "tools" in template


def tool_prompt(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages to give ``apply_chat_template`` and the extra template kwargs (``tools``).

    The input is not modified. Content ``None`` becomes "" because templates concatenate it.
    """
    render_tools = bool(tools) and tool_choice != "none"
    if template_knows_tools(tokenizer):
        native = [_native_message(m) for m in messages]
        return native, ({"tools": tools} if render_tools else {})
    rendered = _hermes_history(messages)
    if render_tools:
        assert tools is not None
        section = "\n".join([_TOOLS_HEADER, *(_dumps(t) for t in tools)]) + _TOOLS_FOOTER
        if not rendered or rendered[0]["role"] != "system":
            rendered.insert(0, {"role": "system", "content": ""})
        system = rendered[0]["content"]
        rendered[0] = {"role": "system", "content": "\n\n".join(filter(None, [system, section]))}
    return rendered, {}


def _native_message(message: dict[str, Any]) -> dict[str, Any]:
    """HF templates expect arguments as dicts (``| tojson``, ``.items()``) and no None keys."""
    out = {k: v for k, v in message.items() if v is not None}
    out["content"] = message.get("content") or ""
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": _arguments(call["function"])}}
            for call in message["tool_calls"]
        ]
    return out


def _hermes_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain role/content messages: tool calls and results written out as Hermes blocks."""
    out: list[dict[str, Any]] = []
    previous_role = None
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if previous_role == "tool":
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [c["function"] for c in message["tool_calls"]]
            blocks = [_hermes_call(c["name"], _arguments(c)) for c in calls]
            out.append({"role": role, "content": "\n".join([content, *blocks][not content :])})
        else:
            out.append({"role": role, "content": content})
        previous_role = role
    return out


def _hermes_call(name: str, arguments: Any) -> str:
    return f"<tool_call>\n{_dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def _arguments(function: dict[str, Any]) -> Any:
    """OpenAI sends arguments as JSON text; templates want the object. Text that is not JSON
    is kept as text: the history is the client's, and rendering it is better than refusing."""
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return arguments if arguments is not None else {}
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def parse_tool_calls(
    text: str, tokenizer: Any = None, tools: list[dict[str, Any]] | None = None
) -> list[dict[str, str]]:
    """Every call in one tool block, as ``{"name": str, "arguments": JSON text}``.

    The tokenizer's own parser is tried first when its template knows tools; the Hermes JSON
    form is always tried too, because constrained decoding writes bare JSON for any model.
    Raises ValueError (with the reasons) when neither reads the text.
    """
    errors: list[str] = []
    parser = getattr(tokenizer, "tool_parser", None) if tokenizer is not None else None
    if parser is not None and template_knows_tools(tokenizer):
        try:
            parsed = parser(text, tools)
            calls = parsed if isinstance(parsed, list) else [parsed]
            return [_normalized(call) for call in calls]
        except Exception as exc:  # third-party parsers raise anything on bad model output
            errors.append(f"model's tool parser: {type(exc).__name__}: {exc}")
    try:
        return [_normalized(json.loads(_without_markers(text)))]
    except (ValueError, TypeError) as exc:
        errors.append(f"Hermes JSON: {exc}")
    raise ValueError(f"Cannot parse the tool call {text[:200]!r}: " + "; ".join(errors))


def parse_tool_call(
    text: str, tokenizer: Any = None, tools: list[dict[str, Any]] | None = None
) -> dict[str, str]:
    """The one call in a tool block (see :func:`parse_tool_calls`); ValueError otherwise."""
    calls = parse_tool_calls(text, tokenizer, tools)
    if len(calls) != 1:
        raise ValueError(f"Expected one tool call, found {len(calls)}: use parse_tool_calls.")
    return calls[0]


def _without_markers(text: str) -> str:
    """The caller usually passes a block's inside, but a whole block is accepted too."""
    text = text.strip()
    start, end = HERMES_TOOL_MARKERS
    if text.startswith(start) and text.endswith(end):
        text = text[len(start) : -len(end)].strip()
    return text


def _normalized(call: Any) -> dict[str, str]:
    """OpenAI's shape: a string name and the arguments object as JSON text."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise ValueError("a tool call must be a JSON object with a non-empty string 'name'")
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    if not isinstance(arguments, dict):
        raise ValueError("a tool call's 'arguments' must be a JSON object")
    return {"name": call["name"], "arguments": _dumps(arguments)}
