"""One choice being generated: its tokens, and the text they release, sorted into channels.

Each token goes through the streaming detokenizer (multi-byte characters stay whole), the
stop strings (a tail that may start one is held back), then the text channels (reasoning,
content and tool-call blocks, split by the model's markers). What a token releases is a
``Released``: the engine streams it, and ``choice`` sums it up at the end.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.schemas import Choice, FunctionCall, TokenLogprob, ToolCall
from worker.channels import TextChannels
from worker.forced_calls import ForcedCalls, new_call_id
from worker.prompt_lookup import Drafter
from worker.stops import StopMatcher

REPLACEMENT_CHARACTER = "\ufffd"
"""What a UTF-8 decoder writes for bytes that are not a whole character."""

ToolParser = Callable[[str], list[dict[str, str]]]
"""Turns the text of one tool-call block into its calls: [{"name", "arguments" (JSON)}]."""


@dataclass
class Released:
    """What a step released for the client: text by channel, tool calls, logprobs."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls or self.logprobs)


@dataclass
class SequenceSpec:
    """How a choice's text is read: the same for every choice of a job."""

    stops: list[str]
    channels: Callable[[], TextChannels | None]
    tool_parser: ToolParser | None = None
    forced_tool_call: bool = False
    """The whole answer is tool calls' JSON (tool_choice "required" or a named one), read as
    it is decoded (worker/forced_calls.py)."""
    parallel_tool_calls: bool = True
    logprobs: int | None = None


class Sequence:
    def __init__(
        self,
        job_id: str,
        index: int,
        prompt: list[int],
        max_tokens: int,
        *,
        detokenizer: Any,
        sampler: Any,
        processors: list[Any],
        spec: SequenceSpec,
        drafter: Drafter | None = None,
    ) -> None:
        self.job_id = job_id
        self.index = index
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.detokenizer = detokenizer
        self.sampler = sampler
        self.processors = processors
        self.spec = spec
        self.drafter = drafter
        """Guesses its next tokens, checked in one forward pass (worker/speculative_stream.py,
        worker/batch_speculation.py); None: plain decoding."""
        self.drafted = 0
        """Draft tokens proposed for it, and how many of them were accepted."""
        self.accepted = 0
        self.tokens: list[int] = []
        self.uid: int | None = None
        self._stops = StopMatcher(spec.stops)
        self._channels = spec.channels()
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._raw: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._forced = ForcedCalls() if spec.forced_tool_call else None
        self._logprobs: list[TokenLogprob] = []

    @property
    def speculative(self) -> bool:
        return self.drafter is not None

    def add(self, token: int, logprob: TokenLogprob | None = None) -> tuple[Released, bool]:
        """Take a generated token; returns what it releases and whether a stop string was hit."""
        self.tokens.append(token)
        self.detokenizer.add_token(token)
        released, stopped = self._release(self.detokenizer.last_segment)
        if logprob is not None:
            released.logprobs.append(logprob)
            self._logprobs.append(logprob)
        return released, stopped

    def end(self) -> Released:
        """What is still held back once generation ends (without a stop string). A character
        cut by the end (``max_tokens`` inside a multi-byte character: its first bytes came,
        the rest never will) is dropped, not sent as U+FFFD: the detokenizer holds back
        incomplete bytes while streaming, and decodes them as replacement characters only
        when flushed here."""
        self.detokenizer.finalize()
        tail = self.detokenizer.last_segment.rstrip(REPLACEMENT_CHARACTER)
        released, _ = self._release(tail)
        tail = self._route(self._stops.flush())
        if self._channels is not None:
            tail = _merge(tail, self._sort(self._channels.flush()))
        return _merge(released, tail)

    def text_so_far(self) -> str:
        """The answer's text released until now (for a request cut off by its deadline)."""
        return "".join(self._content) or "".join(self._raw)

    def choice(self, finish_reason: Literal["stop", "length"]) -> Choice:
        """The choice as it ended. Forced calls cut short by ``max_tokens`` are returned as
        far as they were written, with ``finish_reason`` "length" (OpenAI's way)."""
        tool_calls = self._tool_calls
        content = "".join(self._content)
        if self._forced is not None:
            tool_calls, content = self._forced.calls(), ""
        reason: Literal["stop", "length", "tool_calls"] = finish_reason
        if tool_calls and finish_reason == "stop":
            reason = "tool_calls"
        return Choice(
            index=self.index,
            text=content,
            finish_reason=reason,
            completion_tokens=len(self.tokens),
            reasoning="".join(self._reasoning) or None,
            tool_calls=tool_calls or None,
            logprobs=self._logprobs if self.spec.logprobs is not None else None,
        )

    def _release(self, piece: str) -> tuple[Released, bool]:
        text, stopped = self._stops.feed(piece)
        return self._route(text), stopped

    def _route(self, text: str) -> Released:
        if not text:
            return Released()
        if self._forced is not None:
            self._raw.append(text)
            return Released(tool_calls=self._forced.feed(text))
        if self._channels is None:
            self._content.append(text)
            return Released(content=text)
        return self._sort(self._channels.feed(text))

    def _sort(self, items: list[tuple[str, str]]) -> Released:
        released = Released()
        for channel, text in items:
            if channel == "reasoning":
                released.reasoning += text
                self._reasoning.append(text)
            elif channel == "tool" and self._take_tool_call(text, released):
                continue
            else:  # content, or a tool block that does not parse: the model's own words
                released.content += text
                self._content.append(text)
        return released

    def _take_tool_call(self, text: str, released: Released) -> bool:
        if self.spec.tool_parser is None:
            return False
        try:
            calls = self.spec.tool_parser(text)
        except ValueError:
            return False
        for parsed in calls:
            if self._tool_calls and not self.spec.parallel_tool_calls:
                break  # one call only: later ones are dropped
            call = _tool_call(parsed["name"], parsed["arguments"])
            self._tool_calls.append(call)
            released.tool_calls.append(call)
        return True


def _tool_call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id=new_call_id(), function=FunctionCall(name=name, arguments=arguments))


def _merge(first: Released, second: Released) -> Released:
    return Released(
        content=first.content + second.content,
        reasoning=first.reasoning + second.reasoning,
        tool_calls=first.tool_calls + second.tool_calls,
        logprobs=first.logprobs + second.logprobs,
    )
