"""How each dialect streams tool calls from pieces (shared/schemas.py:TokenEvent.tool_calls):
a call's first piece opens it, later pieces with its id add to its arguments, and the final
event closes it; a call cut short keeps what it had. The renderers alone, in this process."""

import json

from api.dialects.anthropic.render import MessageStream, message
from api.dialects.openai.render import ChatRenderer
from api.dialects.responses.render import ResponseShape
from api.dialects.responses.schemas import ResponseRequest
from api.dialects.responses.stream import ResponseEvents
from shared.schemas import Choice, DoneEvent, FunctionCall, TokenEvent, ToolCall

PIECES = ['{"ci', 'ty":"Pa', 'ris"}']


def piece(call_id: str, arguments: str) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name="get_weather", arguments=arguments))


def events(call_id: str = "call_a") -> list[TokenEvent]:
    first = TokenEvent(seq=1, text="", tool_calls=[piece(call_id, "")])
    rest = [
        TokenEvent(seq=2 + i, text="", tool_calls=[piece(call_id, p)]) for i, p in enumerate(PIECES)
    ]
    return [first, *rest]


def done(arguments: str, reason: str = "tool_calls") -> DoneEvent:
    choice = Choice(
        index=0,
        text="",
        finish_reason=reason,  # type: ignore[arg-type]
        completion_tokens=5,
        tool_calls=[piece("call_a", arguments)],
    )
    return DoneEvent(seq=9, choices=[choice], prompt_tokens=3)


def sse(frames: list[str]) -> list[dict]:
    return [
        json.loads(line[6:]) for f in frames for line in f.splitlines() if line.startswith("data: ")
    ]


def test_openai_sends_the_name_once_then_argument_deltas() -> None:
    renderer = ChatRenderer(1)
    deltas = [renderer.piece(e)["delta"]["tool_calls"][0] for e in events()]
    assert deltas[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert deltas[1:] == [{"index": 0, "function": {"arguments": p}} for p in PIECES]
    second = renderer.piece(TokenEvent(seq=9, text="", tool_calls=[piece("call_b", "{}")]))
    assert second["delta"]["tool_calls"][0]["index"] == 1


def test_anthropic_streams_input_json_deltas_in_one_block() -> None:
    stream = MessageStream("msg_1", "m")
    frames = [f for e in events() for f in stream.token(e)] + list(
        stream.done(done("".join(PIECES)))
    )
    kinds = [(e["type"], e.get("index")) for e in sse(frames)]
    assert kinds == [
        ("message_start", None),  # with the first piece: no started event came before it
        ("ping", None),
        ("content_block_start", 0),
        *[("content_block_delta", 0)] * 3,
        ("content_block_stop", 0),
        ("message_delta", None),
        ("message_stop", None),
    ]
    partial = [
        e["delta"]["partial_json"] for e in sse(frames) if e["type"] == "content_block_delta"
    ]
    assert partial == PIECES


def test_anthropic_keeps_a_cut_call_as_far_as_it_closes() -> None:
    cut = message("msg_1", "m", done('{"city":"Pa', reason="length"))
    assert cut.stop_reason == "max_tokens"
    (block,) = cut.content
    assert block.type == "tool_use" and block.input == {"city": "Pa"}


def test_responses_streams_arguments_and_marks_a_cut_call_incomplete() -> None:
    body = ResponseRequest.model_validate({"model": "m", "input": "hi"})
    stream = ResponseEvents(ResponseShape(body, "r1"))
    cut_pieces = events()[:3]  # '{"ci' + 'ty":"Pa'
    frames = [f for e in cut_pieces for f in stream.token(e)] + stream.done(
        done('{"city":"Pa', "length")
    )
    parsed = sse(frames)
    deltas = [e["delta"] for e in parsed if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == PIECES[:2]
    (closed,) = [e for e in parsed if e["type"] == "response.output_item.done"]
    assert closed["item"]["status"] == "incomplete" and closed["item"]["arguments"] == '{"city":"Pa'
    assert parsed[-1]["type"] == "response.incomplete"
