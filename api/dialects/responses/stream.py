"""A streamed Response: OpenAI's typed events (``response.created``,
``response.output_text.delta``, ..., then ``response.completed``, or ``response.incomplete``
when ``max_output_tokens`` cut the answer short), each with a ``sequence_number``."""

from typing import Any, Literal

from api.core.frames import StreamRenderer, sse_json
from api.dialects.openai.render import error_for
from api.dialects.responses.answers import (
    OutputItem,
    ResponsesMessageOut,
    ResponsesOutputTextOut,
    ResponsesReasoningOut,
    ResponsesReasoningTextOut,
)
from api.dialects.responses.render import (
    ResponseShape,
    call_status,
    function_call,
    item_id,
    status_of,
)
from shared.errors import MlxqError
from shared.schemas import DoneEvent, FunctionCall, TokenEvent, ToolCall


class ResponseEvents(StreamRenderer):
    """A streamed Response: the typed events that open, fill and close its output items, in
    order, numbered from 0. One item is open at a time: a reasoning, a message or a
    function_call item (each call is one)."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.output: list[OutputItem] = []
        self._sequence = 0
        self._open: str | None = None  # "reasoning", "message" or "call"
        self._open_id = ""
        self._open_text: list[str] = []  # the open item's text, or its call's arguments
        self._open_call = ToolCall(id="", function=FunctionCall(name="", arguments=""))
        self._sent: dict[str, list[str]] = {"reasoning": [], "message": []}
        self._calls_sent: set[str] = set()

    def event(self, kind: str, **payload: Any) -> str:
        frame = sse_json({"type": kind, "sequence_number": self._sequence, **payload}, kind)
        self._sequence += 1
        return frame

    def opening(self) -> list[str]:
        response = self.shape.response("in_progress").model_dump(mode="json")
        return [
            self.event("response.created", response=response),
            self.event("response.in_progress", response=response),
        ]

    def token(self, event: TokenEvent) -> list[str]:
        frames = self.text("reasoning" if event.channel == "reasoning" else "message", event.text)
        return frames + self.calls(event.tool_calls or [])

    def text(self, kind: str, delta: str) -> list[str]:
        if not delta:
            return []
        frames = [] if self._open == kind else self.close("completed") + self._open_item(kind)
        self._open_text.append(delta)
        self._sent[kind].append(delta)
        where = {"item_id": self._open_id, "output_index": len(self.output), "content_index": 0}
        if kind == "message":
            frames.append(
                self.event("response.output_text.delta", **where, delta=delta, logprobs=[])
            )
        else:
            frames.append(self.event("response.reasoning_text.delta", **where, delta=delta))
        return frames

    def _open_item(self, kind: str) -> list[str]:
        self._open, self._open_id, self._open_text = kind, item_id(_PREFIX[kind]), []
        item: dict[str, Any] = {"type": kind, "id": self._open_id, "status": "in_progress"}
        if kind == "message":
            item |= {"role": "assistant", "content": []}
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            part["logprobs"] = []
        else:
            item |= {"summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        index = len(self.output)
        return [
            self.event("response.output_item.added", output_index=index, item=item),
            self.event(
                "response.content_part.added",
                item_id=self._open_id,
                output_index=index,
                content_index=0,
                part=part,
            ),
        ]

    def close(self, status: Literal["completed", "incomplete"]) -> list[str]:
        """Closes the open item, if any: its text's (or arguments') done events, then the
        item's."""
        if self._open is None:
            return []
        if self._open == "call":
            return self._close_call(status)
        text = "".join(self._open_text)
        where = {"item_id": self._open_id, "output_index": len(self.output), "content_index": 0}
        item: OutputItem
        if self._open == "message":
            message = ResponsesOutputTextOut(text=text)
            item = ResponsesMessageOut(id=self._open_id, status=status, content=[message])
            done = self.event("response.output_text.done", **where, text=text, logprobs=[])
            part = message.model_dump(mode="json")
        else:
            reasoning = ResponsesReasoningTextOut(text=text)
            item = ResponsesReasoningOut(id=self._open_id, content=[reasoning], status="completed")
            done = self.event("response.reasoning_text.done", **where, text=text)
            part = reasoning.model_dump(mode="json")
        frames = [
            done,
            self.event("response.content_part.done", **where, part=part),
            self.event(
                "response.output_item.done",
                output_index=len(self.output),
                item=item.model_dump(mode="json"),
            ),
        ]
        self.output.append(item)
        self._open = None
        return frames

    def calls(self, pieces: list[ToolCall]) -> list[str]:
        """Each call is a function_call item: opened by its first piece, its arguments
        streamed as deltas (a forced call's as it is decoded), closed by the next item or
        the end."""
        frames: list[str] = []
        for piece in pieces:
            if self._open != "call" or piece.id != self._open_call.id:
                frames += self.close("completed")
                frames += self._open_call_item(piece)
            if piece.function.arguments:
                self._open_text.append(piece.function.arguments)
                where = {"item_id": self._open_id, "output_index": len(self.output)}
                delta = piece.function.arguments
                frames.append(
                    self.event("response.function_call_arguments.delta", **where, delta=delta)
                )
        return frames

    def _open_call_item(self, piece: ToolCall) -> list[str]:
        self._calls_sent.add(piece.id)
        opened = function_call(piece, "in_progress").model_copy(update={"arguments": ""})
        self._open, self._open_id, self._open_text, self._open_call = "call", opened.id, [], piece
        return [
            self.event(
                "response.output_item.added",
                output_index=len(self.output),
                item=opened.model_dump(mode="json"),
            )
        ]

    def _close_call(self, status: Literal["completed", "incomplete"]) -> list[str]:
        arguments = "".join(self._open_text)
        call = self._open_call.model_copy(
            update={
                "function": self._open_call.function.model_copy(update={"arguments": arguments})
            }
        )
        item = function_call(call, call_status(call, status)).model_copy(
            update={"id": self._open_id}
        )
        where = {"item_id": self._open_id, "output_index": len(self.output)}
        frames = [
            self.event(
                "response.function_call_arguments.done",
                **where,
                name=item.name,
                arguments=arguments,
            ),
            self.event(
                "response.output_item.done",
                output_index=len(self.output),
                item=item.model_dump(mode="json"),
            ),
        ]
        self.output.append(item)
        self._open = None
        return frames

    def done(self, done: DoneEvent) -> list[str]:
        """What the stream did not carry (text decided only at the end), the last item
        closed (a call cut short by max_output_tokens is incomplete), and the finished
        Response."""
        choice = done.choices[0]
        frames = self.text("reasoning", _rest(self._sent["reasoning"], choice.reasoning or ""))
        frames += self.text("message", _rest(self._sent["message"], choice.text))
        frames += self.calls([c for c in choice.tool_calls or [] if c.id not in self._calls_sent])
        if not self.output and self._open is None:  # an empty answer is an empty message
            frames += self._open_item("message")
        frames += self.close(status_of(choice))
        response = self.shape.finished(done, self.output)
        kind = f"response.{response.status}"
        return [*frames, self.event(kind, response=response.model_dump(mode="json"))]

    def error(self, exc: MlxqError) -> list[str]:
        details = error_for(exc)["error"]
        return [
            self.event(
                "error", code=details["code"], message=details["message"], param=details["param"]
            )
        ]


_PREFIX = {"message": "msg", "reasoning": "rs"}


def _rest(sent: list[str], final: str) -> str:
    """The part of the final text that the stream has not sent yet."""
    text = "".join(sent)
    return final[len(text) :] if final.startswith(text) else ""
