"""Splitting generated text into reasoning, tool calls and content while it streams.

The model writes one stream of text; OpenAI clients want ``reasoning`` (between the model's
thinking markers), ``tool_calls`` (each tool block, parsed) and ``content`` (the rest) apart.
Like stop strings (worker/stops.py), text is released as soon as it is known not to be the
start of a marker; a tail that could still become one is held back until the next piece
decides it, so a marker split across tokens is never half-released into the wrong channel.

A tool block is released whole, once its end marker arrives, because only a complete block
can be parsed; the newline the Hermes format puts after the start marker and before the end
marker is removed. Reasoning and content keep their text exactly as generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.tools import HERMES_TOOL_MARKERS

Item = tuple[str, str]
"""(channel, text); channel is "content", "reasoning" or "tool"."""


class TextChannels:
    """Feed generated pieces; get back the (channel, text) items that are decided so far."""

    def __init__(
        self,
        reasoning_markers: tuple[str, str] | None,
        tool_markers: tuple[str, str] | None,
        start_in_reasoning: bool = False,
    ) -> None:
        for markers in (reasoning_markers, tool_markers):
            if markers is not None and not all(markers):
                raise ValueError(f"markers must be non-empty strings, got {markers!r}")
        if start_in_reasoning and reasoning_markers is None:
            raise ValueError("start_in_reasoning needs reasoning_markers")
        self._reasoning = reasoning_markers
        self._tool = tool_markers
        self._mode = "reasoning" if start_in_reasoning else "content"
        self._text = ""  # undecided text; in "tool" mode, the block's inside so far
        self._searched = 0  # in "tool" mode: the end marker does not start before this

    def feed(self, piece: str) -> list[Item]:
        """The items this piece decides (adjacent text of one channel joined)."""
        self._text += piece
        return _joined(self._drain(final=False))

    def flush(self) -> list[Item]:
        """Everything held back, at the end of generation.

        An unfinished reasoning block stays reasoning (the model was cut off while thinking);
        an unfinished tool block is released as content, start marker included, since it
        cannot be parsed and the client should see what the model wrote.
        """
        items = self._drain(final=True)
        if self._mode == "tool" and self._tool is not None:
            items.append(("content", self._tool[0] + self._text))
        self._mode, self._text, self._searched = "content", "", 0
        return _joined(items)

    def _drain(self, final: bool) -> list[Item]:
        items: list[Item] = []
        while True:
            if self._mode == "tool":
                assert self._tool is not None
                end = self._tool[1]
                at = self._text.find(end, self._searched)
                if at < 0:
                    self._searched = max(0, len(self._text) - len(end) + 1)
                    return items
                items.append(("tool", _strip_one_newline(self._text[:at])))
                self._text, self._mode = self._text[at + len(end) :], "content"
                continue
            targets = self._targets()
            hit = _earliest(self._text, targets)
            safe = len(self._text) - (0 if final else _held(self._text, targets))
            if hit is None or hit[0] >= safe:
                if safe > 0:
                    items.append((self._mode, self._text[:safe]))
                self._text = self._text[safe:]
                return items
            at, marker, mode = hit
            if at > 0:
                items.append((self._mode, self._text[:at]))
            self._text, self._mode, self._searched = self._text[at + len(marker) :], mode, 0

    def _targets(self) -> list[tuple[str, str]]:
        """(marker, mode it switches to) for the markers that matter in the current mode."""
        if self._mode == "reasoning":
            assert self._reasoning is not None
            return [(self._reasoning[1], "content")]
        targets = []
        if self._reasoning is not None:
            targets.append((self._reasoning[0], "reasoning"))
        if self._tool is not None:
            targets.append((self._tool[0], "tool"))
        return targets


def _earliest(text: str, targets: Sequence[tuple[str, str]]) -> tuple[int, str, str] | None:
    """The first complete marker in text (the longer one when two start at the same place)."""
    best: tuple[int, str, str] | None = None
    for marker, mode in targets:
        at = text.find(marker)
        if at >= 0 and (best is None or (at, -len(marker)) < (best[0], -len(best[1]))):
            best = (at, marker, mode)
    return best


def _held(text: str, targets: Sequence[tuple[str, str]]) -> int:
    """The length of the longest tail of text that is a proper start of some marker."""
    longest = 0
    for marker, _ in targets:
        for length in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:length]):
                longest = length
                break
    return longest


def _strip_one_newline(text: str) -> str:
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    return text


def _joined(items: list[Item]) -> list[Item]:
    """Adjacent reasoning or content pieces as one item; tool blocks stay separate."""
    out: list[Item] = []
    for channel, text in items:
        if out and channel != "tool" and out[-1][0] == channel:
            out[-1] = (channel, out[-1][1] + text)
        else:
            out.append((channel, text))
    return out


def ends_in_reasoning(tokenizer: Any, prompt: Sequence[int] | str) -> bool:
    """Whether the rendered prompt leaves the model inside a thinking block (templates that
    open ``<think>`` in the generation prompt): the last start marker is after the last end
    marker. The same test as mlx_lm.server's initial state."""
    if not getattr(tokenizer, "has_thinking", False):
        return False
    if isinstance(prompt, str):
        return prompt.rfind(tokenizer.think_start) > prompt.rfind(tokenizer.think_end)
    tokens = list(prompt)
    return bool(tokenizer.rfind_think_start(tokens) > tokenizer.rfind_think_end(tokens))


def channels_for(
    tokenizer: Any, tools_rendered: bool, prompt_ends_in_reasoning: bool
) -> TextChannels:
    """The splitter for one request.

    Reasoning markers are the tokenizer's thinking markers, when it has them. Tool blocks are
    split out only when the request's tools were rendered into the prompt (otherwise they
    are content): with the model's own markers when mlx-lm knows them, else the Hermes ones
    (the fallback format of worker/tools.py, and the convention of templates that mention
    tools but have no parser in mlx-lm).
    """
    reasoning = None
    if getattr(tokenizer, "has_thinking", False):
        reasoning = (tokenizer.think_start, tokenizer.think_end)
    tool = None
    if tools_rendered:
        tool = HERMES_TOOL_MARKERS
        if getattr(tokenizer, "has_tool_calling", False):
            tool = (tokenizer.tool_call_start, tokenizer.tool_call_end)
    return TextChannels(
        reasoning, tool, start_in_reasoning=prompt_ends_in_reasoning and bool(reasoning)
    )
