"""A batch's input: JSONL lines, each validated exactly like the live request it stands for.

A line is ``{"custom_id": str, "method": "POST", "url": <the batch's endpoint>, "body": {...}}``.
A line that is not valid becomes an error line (with its custom_id when it has one) and does
not fail the batch; duplicate custom_ids do, since results are matched to requests by them.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from api.core.models import model_id
from api.dialects.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsBody
from api.dialects.openai.translate import (
    chat_answer,
    chat_request,
    completion_answer,
    completion_request,
    embeddings_answer,
    embeddings_request,
)
from shared.errors import InvalidRequest, MlxqError
from shared.schemas import DoneEvent, JobRequest
from shared.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    """What a batch may call: the live route's body model, job and answer (the dialect's
    own translation, so a line and a live request cannot drift apart)."""

    body_model: type[BaseModel]
    translate: Callable[[Any, Settings, str], JobRequest]
    answer: Callable[[Any, JobRequest, DoneEvent], dict]

    def job(self, body: Any, settings: Settings, model: str | None = None) -> JobRequest:
        """The line's job, for ``model``: the served id its body's name stands for, resolved
        when the batch was created (an alias); by default the name itself."""
        return self.translate(body, settings, model or model_id(body.model))


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(
        ChatCompletionRequest,
        chat_request,
        lambda body, request, done: chat_answer(body, request)(done),  # type: ignore[arg-type]
    ),
    "/v1/completions": Endpoint(
        CompletionRequest,
        completion_request,
        lambda body, request, done: completion_answer(body, request)(done),  # type: ignore[arg-type]
    ),
    "/v1/embeddings": Endpoint(
        EmbeddingsBody,
        embeddings_request,
        lambda body, request, done: embeddings_answer(body, done),
    ),
}


@dataclass(frozen=True)
class Line:
    """A valid line: its number (from 0), custom_id and validated body."""

    number: int
    custom_id: str
    body: Any

    @property
    def model(self) -> str:
        """The model name the line gives (``:latest`` dropped): an id or an alias."""
        return model_id(self.body.model)


@dataclass(frozen=True)
class BadLine:
    number: int
    custom_id: str | None
    message: str


class DuplicateCustomId(InvalidRequest):
    pass


def parse_lines(content: bytes, endpoint_path: str, settings: Settings) -> list[Line | BadLine]:
    """Every non-blank line of ``content``, valid or not, in order. Raises InvalidRequest
    for what fails the whole batch: not UTF-8, no line at all, a custom_id used twice."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The input file is not UTF-8 JSONL ({exc}).") from exc
    endpoint = ENDPOINTS[endpoint_path]
    parsed: list[Line | BadLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines()):
        if not raw.strip():
            continue
        line = parse_line(number, raw, endpoint_path, endpoint, settings)
        if line.custom_id is not None:
            if line.custom_id in seen:
                raise DuplicateCustomId(
                    f"custom_id {line.custom_id!r} is used more than once (line {number + 1}); "
                    "each request of a batch needs its own."
                )
            seen.add(line.custom_id)
        parsed.append(line)
    if not parsed:
        raise InvalidRequest("The input file has no request lines.")
    return parsed


def parse_line(
    number: int, raw: str, endpoint_path: str, endpoint: Endpoint, settings: Settings
) -> Line | BadLine:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        return BadLine(number, None, f"Line {number + 1} is not valid JSON ({exc}).")
    if not isinstance(item, dict):
        return BadLine(number, None, f"Line {number + 1} is not a JSON object.")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BadLine(number, None, f"Line {number + 1} has no custom_id (a string).")
    unknown = sorted(set(item) - {"custom_id", "method", "url", "body"})
    problem = None
    if unknown:
        problem = f"unknown field(s) {unknown}; a line has custom_id, method, url and body"
    elif item.get("method") != "POST":
        problem = f"method must be 'POST', not {item.get('method')!r}"
    elif item.get("url") != endpoint_path:
        problem = f"url must be the batch's endpoint {endpoint_path!r}, not {item.get('url')!r}"
    elif not isinstance(item.get("body"), dict):
        problem = "body must be a JSON object"
    if problem is not None:
        return BadLine(number, custom_id, f"Line {number + 1}: {problem}.")
    try:
        body = endpoint.body_model.model_validate(item["body"])
    except ValidationError as exc:
        return BadLine(number, custom_id, f"Line {number + 1}: {_summary(exc)}")
    if getattr(body, "stream", None):
        return BadLine(number, custom_id, f"Line {number + 1}: a batch line cannot stream.")
    try:
        endpoint.job(body, settings)  # what the live route would refuse (a max_tokens cap)
    except MlxqError as exc:
        return BadLine(number, custom_id, f"Line {number + 1}: {exc.message}")
    return Line(number, custom_id, body)


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}"
        for e in exc.errors()
    )
