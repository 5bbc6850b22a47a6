"""Forced tool calls read while they are decoded (worker/forced_calls.py): whatever the
chunking, each call's pieces add up to its arguments, a call is announced once its name is
written, and a call cut short is returned as far as it went. Then a Sequence with the demo
tokenizer: the pieces it releases and the choice it ends with."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.forced_calls import ForcedCalls

ONE = '{"name":"get_weather","arguments":{"city":"Par\\"is}","days":[1,{"a":"]"}]}}'
SEVERAL = '[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"city":"Lima"}}]'


def pieces_and_calls(text: str, cuts: list[int]) -> tuple[list, list]:
    reader, pieces, at = ForcedCalls(), [], 0
    for cut in [*sorted(cuts), len(text)]:
        pieces += reader.feed(text[at:cut])
        at = cut
    return pieces, reader.calls()


def joined(pieces: list) -> list[tuple[str, str, str]]:
    """(id, name, arguments) per call, from its pieces, in order."""
    calls: dict[str, list[str]] = {}
    for piece in pieces:
        calls.setdefault(piece.id, [piece.function.name, ""])[1] += piece.function.arguments
    return [(call_id, name, arguments) for call_id, (name, arguments) in calls.items()]


@given(st.data())
@pytest.mark.parametrize("text", [ONE, SEVERAL])
def test_pieces_add_up_to_each_call_whatever_the_chunking(text: str, data) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    pieces, calls = pieces_and_calls(text, cuts)
    assert joined(pieces) == [(c.id, c.function.name, c.function.arguments) for c in calls]
    whole = json.loads(text)
    expected = whole if isinstance(whole, list) else [whole]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (call["name"], call["arguments"]) for call in expected
    ]


def test_a_call_is_announced_once_its_name_is_written_and_then_grows() -> None:
    reader = ForcedCalls()
    assert reader.feed('{"name":"get_wea') == []
    (first,) = reader.feed('ther","arguments":{"ci')
    assert (first.function.name, first.function.arguments) == ("get_weather", '{"ci')
    (more,) = reader.feed('ty":"Paris"}}')
    assert more.id == first.id and more.function.arguments == 'ty":"Paris"}'
    assert reader.feed("") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name":"get_weather","arguments":{"city":"Pa', [("get_weather", '{"city":"Pa')]),
        ('{"name":"get_weather","argu', [("get_weather", "")]),
        ('{"name":"get_wea', []),
        (SEVERAL[: SEVERAL.index(':{"city')], [("get_time", "{}"), ("get_weather", "")]),
    ],
)
def test_a_call_cut_short_is_returned_as_far_as_it_went(text: str, expected: list) -> None:
    _, calls = pieces_and_calls(text, [])
    assert [(c.function.name, c.function.arguments) for c in calls] == expected
