"""The streaming splitter: reasoning, tool blocks and content, whatever the chunking."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.channels import TextChannels, channels_for, ends_in_reasoning

THINK = ("<think>", "</think>")
TOOL = ("<tool_call>", "</tool_call>")


def run(text_pieces: list[str], **options) -> list[tuple[str, str]]:
    """Every item, adjacent reasoning/content pieces joined, as one stream would give them."""
    channels = TextChannels(options.pop("reasoning", THINK), options.pop("tool", TOOL), **options)
    items = [item for piece in text_pieces for item in channels.feed(piece)]
    items += channels.flush()
    joined: list[tuple[str, str]] = []
    for channel, text in items:
        assert text or channel == "tool", "no empty reasoning/content items"
        if joined and channel != "tool" and joined[-1][0] == channel:
            joined[-1] = (channel, joined[-1][1] + text)
        else:
            joined.append((channel, text))
    return joined


REASONING_THEN_TOOLS = (
    "<think>\nThe user wants weather.</think>Let me check.\n"
    '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
    '<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>'
)
EXPECTED = [
    ("reasoning", "\nThe user wants weather."),
    ("content", "Let me check.\n"),
    ("tool", '{"name": "a", "arguments": {}}'),
    ("content", "\n"),
    ("tool", '{"name": "b", "arguments": {"x": 1}}'),
]
SAMPLES = [
    REASONING_THEN_TOOLS,
    "plain text with < and </ and <t and <tool_ca but no marker <",
    "<think>never ends <tool_call>inside reasoning</tool_call> <",
    "answer <tool_call>\n{unfinished",
    "<<think>>x</think></think><tool_call><tool_call>y</tool_call></tool_call>",
]


def test_reasoning_then_content_then_two_tool_calls() -> None:
    assert run([REASONING_THEN_TOOLS]) == EXPECTED


def test_tool_block_is_released_whole_once_it_ends() -> None:
    channels = TextChannels(None, TOOL)
    assert channels.feed("Hi <tool_call>\n{") == [("content", "Hi ")]
    assert channels.feed('"name": "a"}\n</tool_') == []
    assert channels.feed("call>!") == [("tool", '{"name": "a"}'), ("content", "!")]
    assert channels.flush() == []


def test_a_possible_marker_start_is_held_back_until_decided() -> None:
    channels = TextChannels(THINK, TOOL)
    assert channels.feed("a <t") == [("content", "a ")]
    assert channels.feed("able") == [("content", "<table")]
    assert channels.feed("<thi") == []
    assert channels.feed("nk>why") == [("reasoning", "why")]
    assert channels.feed("</thin") == []
    assert channels.flush() == [("reasoning", "</thin")]


@pytest.mark.parametrize("text", SAMPLES)
def test_every_split_point_and_one_character_at_a_time(text: str) -> None:
    whole = run([text])
    assert run(list(text)) == whole
    for cut in range(len(text) + 1):
        assert run([text[:cut], text[cut:]]) == whole, cut


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.lists(st.integers(0, 200), max_size=12))
def test_random_chunkings_give_the_same_items(text: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(pieces) == run([text])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>/thinktool_call\nx", max_size=60), st.data())
def test_random_texts_split_the_same_whatever_the_chunking(text: str, data) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    points = sorted(set(cuts))
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(pieces) == run([text])


def test_unfinished_tool_block_is_released_as_content_at_flush() -> None:
    assert run(['ok <tool_call>\n{"name"']) == [("content", 'ok <tool_call>\n{"name"')]


def test_unfinished_reasoning_stays_reasoning_at_flush() -> None:
    assert run(["<think>hmm, let me </th"]) == [("reasoning", "hmm, let me </th")]


def test_starting_in_reasoning() -> None:
    assert run(["plan</think>done"], start_in_reasoning=True) == [
        ("reasoning", "plan"),
        ("content", "done"),
    ]
    with pytest.raises(ValueError, match="needs reasoning_markers"):
        TextChannels(None, TOOL, start_in_reasoning=True)


def test_without_markers_everything_is_content() -> None:
    text = "<think>x</think><tool_call>y</tool_call>"
    assert run([text], reasoning=None, tool=None) == [("content", text)]


class FakeTokenizer:
    def __init__(self, thinking: bool = False, tool_markers: tuple[str, str] | None = None):
        self.has_thinking = thinking
        self.think_start, self.think_end = THINK if thinking else (None, None)
        self.has_tool_calling = tool_markers is not None
        self.tool_call_start, self.tool_call_end = tool_markers or (None, None)

    def rfind_think_start(self, tokens: list[int]) -> int:
        return max((i for i, t in enumerate(tokens) if t == 1), default=-1)

    def rfind_think_end(self, tokens: list[int]) -> int:
        return max((i for i, t in enumerate(tokens) if t == 2), default=-1)


def test_channels_for_a_model_without_markers_uses_hermes_only_for_rendered_tools() -> None:
    plain = FakeTokenizer()
    text = "<think>a</think><tool_call>\n{}\n</tool_call>"
    with_tools = channels_for(plain, tools_rendered=True, prompt_ends_in_reasoning=True)
    assert with_tools.feed(text) + with_tools.flush() == [
        ("content", "<think>a</think>"),
        ("tool", "{}"),
    ]
    without = channels_for(plain, tools_rendered=False, prompt_ends_in_reasoning=False)
    assert without.feed(text) + without.flush() == [("content", text)]


def test_channels_for_a_thinking_model_with_its_own_tool_markers() -> None:
    tokenizer = FakeTokenizer(thinking=True, tool_markers=("[TOOL_CALLS]", "[/TOOL_CALLS]"))
    channels = channels_for(tokenizer, tools_rendered=True, prompt_ends_in_reasoning=True)
    items = channels.feed("why</think>x[TOOL_CALLS]call[/TOOL_CALLS]") + channels.flush()
    assert items == [("reasoning", "why"), ("content", "x"), ("tool", "call")]


def test_ends_in_reasoning() -> None:
    thinking = FakeTokenizer(thinking=True)
    assert ends_in_reasoning(thinking, "<|im_start|>assistant\n<think>\n")
    assert not ends_in_reasoning(thinking, "<think>\n\n</think>\n\n")
    assert ends_in_reasoning(thinking, [5, 2, 1, 7])
    assert not ends_in_reasoning(thinking, [1, 2])
    assert not ends_in_reasoning(FakeTokenizer(), "<think>")
