"""Ollama's API (``/api/*``), as a thin translation onto the same job path as every route.

``/api/chat`` and ``/api/generate`` build the internal ``GenerationRequest`` and run it through
``JobRunner.events``; answers stream as newline-delimited JSON unless ``"stream": false``.
``/api/tags``, ``/api/ps``, ``/api/show`` and ``/api/version`` describe the fleet as Ollama
describes its models. Embeddings and model management are not served here: 501, with the
reason. Errors are Ollama's ``{"error": message}`` (api/errors.py).
"""

import asyncio
import copy
import hashlib
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from redis import Redis
from starlette.types import Message, Send

from api.deps import RedisDep, RunnerDep, SettingsDep
from api.disconnect import unless_disconnected
from api.embeddings import (
    OllamaEmbedBody,
    OllamaEmbeddingsBody,
    embedding_request,
    run_embedding,
    vectors,
)
from api.fleet import check_model, served_models
from api.jobs import JobRunner
from api.ollama_schemas import (
    OLLAMA_DEFAULTS,
    OllamaChatRequest,
    OllamaChatResponse,
    OllamaError,
    OllamaGenerateRequest,
    OllamaGenerateResponse,
    OllamaGeneration,
    OllamaMessageIn,
    OllamaOptions,
    OllamaPs,
    OllamaShow,
    OllamaShowRequest,
    OllamaTags,
    OllamaToolIn,
    OllamaVersion,
)
from api.requests import generation_request
from api.respond import WORKER_HEADER
from api.sse import JobStream
from shared.errors import InvalidRequest, MlxqError
from shared.schemas import (
    ChatMessage,
    DoneEvent,
    FunctionCall,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    StartedEvent,
    TokenEvent,
    ToolCall,
    ToolDefinition,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

router = APIRouter(prefix="/api", tags=["ollama"])

OLLAMA_VERSION = "0.14.0"
"""mlxq's compatibility level: the Ollama release whose API these routes follow (chat and
generate with tools, structured outputs, logprobs, think: false; tags, ps, show). Clients that
gate features on ``/api/version`` see them available. It is not mlxq's own version."""

LATEST_TAG = ":latest"
"""Ollama names carry a tag; a served model is listed as ``<id>:latest`` and found with it
or without it."""
UNKNOWN_TIME = "0001-01-01T00:00:00Z"
"""When a model was modified: unknown to the API (it never reads model files); Go's zero
time, as Ollama writes an unset time."""
NEVER_EXPIRES = "2318-01-01T00:00:00Z"
"""``/api/ps``'s expires_at: workers keep their model loaded while they run (a far-future
time, as Ollama shows for keep_alive -1)."""
CAPABILITIES = ["completion", "tools"]
"""Every chat model answers /api/generate and /api/chat, with tools (through its own template
or mlxq's Hermes-format fallback). No vision or insert (suffix). Embedding models answer
/api/embed and /api/embeddings (the API cannot tell the kinds apart without reading files)."""
NDJSON = "application/x-ndjson"

MODELS_MANAGED_BY_WORKERS = (
    "mlxq does not manage models through the API: each worker serves the model it was "
    "started with (mlxq worker, MLXQ_MODEL). Start a worker for the model instead."
)

_ERRORS: dict[int | str, dict] = {
    status: {"model": OllamaError} for status in (400, 401, 404, 413, 429, 500, 502, 503, 504)
}


def _stream_doc(model: type, what: str) -> dict:
    return {
        "model": model,
        "description": f'{what}; unless "stream": false, one JSON object per line '
        '(application/x-ndjson), the last with done: true, or {"error"} after a failure.',
        "content": {NDJSON: {"schema": {"type": "string"}}},
    }


# -- models ----------------------------------------------------------------------------------


def model_id(name: str) -> str:
    """The served model id an Ollama name stands for: a trailing ":latest" is dropped."""
    return name[: -len(LATEST_TAG)] if name.endswith(LATEST_TAG) else name


async def _served(connection: Redis, settings: Settings, name: str) -> str:
    """The model id of ``name``; ModelNotFound (404) when no worker serves it."""
    model = model_id(name)
    await check_model(connection, settings, model)
    return model


def _details(model: str) -> dict[str, Any]:
    """What the id tells (the API never reads model files): family, size and quantization as
    Hugging Face names spell them, e.g. "mlx-community/Qwen3-4B-4bit"; "" when not told."""
    base = model.rsplit("/", 1)[-1]
    family = re.split(r"[-_.]", base, maxsplit=1)[0].lower()
    size = re.search(r"(?<![A-Za-z0-9])(\d+(?:\.\d+)?[BbMm])(?![A-Za-z0-9])", base)
    quant = re.search(r"(?<![A-Za-z0-9])(Q\d(?:_[0-9A-Z]+)*|\d+-?bit|bf16|fp16|f16)", base, re.I)
    return {
        "parent_model": "",
        "format": "mlx",
        "family": family,
        "families": [family] if family else [],
        "parameter_size": size.group(1).upper() if size else "",
        "quantization_level": quant.group(1) if quant else "",
    }


def _entry(model: str) -> dict[str, Any]:
    return {
        "name": model + LATEST_TAG,
        "model": model + LATEST_TAG,
        "modified_at": UNKNOWN_TIME,
        "size": 0,
        "digest": hashlib.sha256(model.encode()).hexdigest(),
        "details": _details(model),
    }


@router.get("/version", responses={200: {"model": OllamaVersion}})
async def version() -> dict:
    return {"version": OLLAMA_VERSION}


@router.get("/tags", responses={200: {"model": OllamaTags}, 401: {"model": OllamaError}})
async def tags(redis: RedisDep, settings: SettingsDep) -> dict:
    """The models requests may name: every model with a live worker, and the default model
    (accepted while its worker starts). Sizes are 0: the API never reads model files."""
    served = await served_models(redis)
    return {"models": [_entry(m) for m in sorted({settings.model, *served})]}


@router.get("/ps", responses={200: {"model": OllamaPs}, 401: {"model": OllamaError}})
async def ps(redis: RedisDep) -> dict:
    """The models loaded now: those with at least one live worker."""
    served = await served_models(redis)
    return {
        "models": [
            {**_entry(m), "expires_at": NEVER_EXPIRES, "size_vram": 0, "workers": count}
            for m, count in sorted(served.items())
        ]
    }


@router.post(
    "/show",
    responses={200: {"model": OllamaShow}, **_ERRORS},
)
async def show(body: OllamaShowRequest, redis: RedisDep, settings: SettingsDep) -> dict:
    model = await _served(redis, settings, body.model_name)
    details = _details(model)
    parameters = "\n".join(f"{name} {value}" for name, value in OLLAMA_DEFAULTS.items())
    return {
        "modelfile": f"# mlxq serves {model} with MLX; there is no Modelfile.\nFROM {model}\n",
        "parameters": parameters,
        "template": "",  # the tokenizer's own chat template, applied by the worker
        "details": details,
        "model_info": {"general.architecture": details["family"], "general.basename": model},
        "capabilities": CAPABILITIES,
        "modified_at": UNKNOWN_TIME,
    }


# -- generation ------------------------------------------------------------------------------


@router.post(
    "/chat",
    response_model=None,
    responses={200: _stream_doc(OllamaChatResponse, "The answer"), **_ERRORS},
)
async def chat(
    body: OllamaChatRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    received = time.perf_counter_ns()
    model = await _served(redis, settings, body.model)
    if not body.messages:
        return _loaded(ChatShape(body.model))
    request = _request(
        settings,
        body,
        model,
        messages=chat_messages(body.messages),
        tools=_tools(body.tools),
        chat_template_kwargs=_thinking(body),
    )
    return await _respond(http_request, runner, settings, request, ChatShape(body.model), received)


@router.post(
    "/generate",
    response_model=None,
    responses={200: _stream_doc(OllamaGenerateResponse, "The completion"), **_ERRORS},
)
async def generate(
    body: OllamaGenerateRequest,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    received = time.perf_counter_ns()
    model = await _served(redis, settings, body.model)
    if not body.prompt:
        return _loaded(GenerateShape(body.model))
    if body.raw:
        request = _request(settings, body, model, prompts=[body.prompt])
    else:
        messages = [ChatMessage(role="user", content=body.prompt)]
        if body.system:
            messages.insert(0, ChatMessage(role="system", content=body.system))
        request = _request(
            settings, body, model, messages=messages, chat_template_kwargs=_thinking(body)
        )
    shape = GenerateShape(body.model)
    return await _respond(http_request, runner, settings, request, shape, received)


@router.post("/embed", response_model=None, responses=_ERRORS)
async def embed(
    body: OllamaEmbedBody,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    """A vector per input, from an embedding worker; inputs too long are cut to the model's
    limit unless ``truncate`` is false (Ollama's default is true)."""
    received = time.perf_counter_ns()
    model = await _served(redis, settings, body.model)
    inputs: list[str | list[int]] = [body.input] if isinstance(body.input, str) else [*body.input]
    request = embedding_request(
        settings, model=model, inputs=inputs, truncate=body.truncate, dimensions=body.dimensions
    )
    done = await run_embedding(http_request, runner, request)
    if isinstance(done, Response):
        return done
    return {
        "model": body.model,
        "embeddings": vectors(done),
        "total_duration": time.perf_counter_ns() - received,
        "load_duration": 0,  # workers load their model once, at start-up
        "prompt_eval_count": done.prompt_tokens,
    }


@router.post("/embeddings", response_model=None, responses=_ERRORS)
async def embeddings(
    body: OllamaEmbeddingsBody,
    http_request: Request,
    runner: RunnerDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> dict | Response:
    """Ollama's older route: one prompt, one vector (truncated to the model's limit, as
    Ollama does)."""
    model = await _served(redis, settings, body.model)
    request = embedding_request(settings, model=model, inputs=[body.prompt], truncate=True)
    done = await run_embedding(http_request, runner, request)
    if isinstance(done, Response):
        return done
    return {"embedding": vectors(done)[0]}


@router.api_route("/pull", methods=["POST"], include_in_schema=False)
@router.api_route("/push", methods=["POST"], include_in_schema=False)
@router.api_route("/create", methods=["POST"], include_in_schema=False)
@router.api_route("/copy", methods=["POST"], include_in_schema=False)
@router.api_route("/delete", methods=["DELETE"], include_in_schema=False)
async def manage_models() -> JSONResponse:
    return JSONResponse({"error": MODELS_MANAGED_BY_WORKERS}, status_code=501)


# -- the request -----------------------------------------------------------------------------


def _request(
    settings: Settings, body: OllamaGeneration, model: str, **fields: Any
) -> GenerationRequest:
    options = body.settings
    if options.max_tokens is not None and options.max_tokens > settings.max_tokens_cap:
        raise InvalidRequest(
            f"options.num_predict={options.max_tokens} is above this server's limit of "
            f"{settings.max_tokens_cap} (MLXQ_MAX_TOKENS_CAP)."
        )
    return generation_request(
        settings,
        model=model,
        max_tokens=options.max_tokens,
        sampling=sampling(options),
        stop=options.stops,
        logprobs=body.logprob_count,
        response_format=response_format(body.format),
        stream=body.streaming,
        **fields,
    )


def sampling(options: OllamaOptions) -> SamplingParams:
    """Ollama's options; absent ones take Ollama's defaults (``OLLAMA_DEFAULTS``)."""

    def given(value: float | None, name: str) -> float:
        return OLLAMA_DEFAULTS[name] if value is None else value

    temperature = given(options.temperature, "temperature")
    top_p = given(options.top_p, "top_p")
    if top_p == 0.0:  # only the likeliest token: greedy
        temperature, top_p = 0.0, 1.0
    return SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=int(given(options.top_k, "top_k")),
        min_p=options.min_p or 0.0,
        presence_penalty=options.presence_penalty or 0.0,
        frequency_penalty=options.frequency_penalty or 0.0,
        repetition_penalty=given(options.repeat_penalty, "repeat_penalty"),
        seed=options.seed if options.seed is not None and options.seed >= 0 else None,
    )


def response_format(fmt: str | dict[str, Any] | None) -> ResponseFormat | None:
    """``format``: "json" is any JSON object; an object is a JSON Schema to follow."""
    if not fmt:
        return None
    if fmt == "json":
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", json_schema={"name": "response", "schema": fmt})


def _thinking(body: OllamaGeneration) -> dict[str, Any] | None:
    """think: false switches a reasoning model's thinking off in its template."""
    return {"enable_thinking": False} if body.think is False else None


def _tools(tools: list[OllamaToolIn] | None) -> list[ToolDefinition] | None:
    return [
        ToolDefinition.model_validate(t.model_dump(exclude_none=True)) for t in tools or []
    ] or None


def chat_messages(messages: list[OllamaMessageIn]) -> list[ChatMessage]:
    """Ollama's history as the worker reads it. Ollama's tool calls have no ids: each gets a
    stable one by its place in the conversation (``call_0``, ``call_1``...), and a tool
    message answers the first open call of its ``tool_name`` (or, unnamed, the next one)."""
    out: list[ChatMessage] = []
    open_calls: list[ToolCall] = []
    numbered = 0
    for message in messages:
        calls = []
        for call in message.tool_calls or []:
            calls.append(
                ToolCall(
                    id=call.id or f"call_{numbered}",
                    function=FunctionCall(
                        name=call.function.name,
                        arguments=json.dumps(call.function.arguments, ensure_ascii=False),
                    ),
                )
            )
            numbered += 1
        if message.role == "assistant":
            open_calls = list(calls)
        answered = _answered(open_calls, message.tool_name) if message.role == "tool" else None
        out.append(
            ChatMessage(
                role=message.role,
                content=message.content or "",
                tool_calls=calls or None,
                tool_call_id=answered.id if answered else None,
            )
        )
    return out


def _answered(open_calls: list[ToolCall], tool_name: str | None) -> ToolCall | None:
    for i, call in enumerate(open_calls):
        if tool_name is None or call.function.name == tool_name:
            return open_calls.pop(i)
    return None


# -- the answer ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Ollama's calls: arguments as an object, not JSON text."""
    return [
        {"function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
        for c in calls
    ]


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        log.warning("a tool call's arguments are not JSON: %.200r", text)
        return {}
    return value if isinstance(value, dict) else {"value": value}


@dataclass
class Clock:
    """Ollama's timings (nanoseconds) of one request, as the API sees its job's events."""

    received: int
    started: int | None = None
    first_token: int | None = None

    def see(self, event: object) -> None:
        now = time.perf_counter_ns()
        if isinstance(event, StartedEvent) and self.started is None:
            self.started = now
        elif isinstance(event, TokenEvent) and self.first_token is None:
            self.first_token = now

    def stats(self, done: DoneEvent) -> dict[str, Any]:
        """A stream splits prefill (until the first piece) from decoding; a non-streamed
        answer has no first piece to time, so its prompt_eval_duration is 0 and eval_duration
        counts the worker's whole time, prefill included."""
        now = time.perf_counter_ns()
        started = self.started or self.received
        decoding_from = self.first_token or started
        return {
            "total_duration": now - self.received,
            "load_duration": 0,  # workers load their model once, at start-up
            "prompt_eval_count": done.prompt_tokens,
            "prompt_eval_duration": decoding_from - started,
            "eval_count": done.completion_tokens,
            "eval_duration": now - decoding_from,
        }


@dataclass
class _Shape(ABC):
    """How one endpoint writes its pieces and its final object."""

    model: str

    def head(self, done: bool) -> dict[str, Any]:
        return {"model": self.model, "created_at": _now(), "done": done}

    @abstractmethod
    def body(
        self, content: str, thinking: str | None, calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        """The endpoint's own fields: a chat message, or a generated response."""

    def piece(self, event: TokenEvent) -> dict[str, Any] | None:
        reasoning = event.channel == "reasoning"
        if not (event.text or event.tool_calls or event.logprobs):
            return None
        line = {
            **self.head(False),
            **self.body(
                "" if reasoning else event.text, event.text if reasoning else None, event.tool_calls
            ),
        }
        if event.logprobs:
            line["logprobs"] = [lp.model_dump(mode="json") for lp in event.logprobs]
        return line

    def final(self, done: DoneEvent, clock: Clock, whole: bool) -> dict[str, Any]:
        """The last object: the whole answer when not streamed, else empty text."""
        choice = done.choices[0]
        if whole:
            body = self.body(choice.text, choice.reasoning or None, choice.tool_calls)
        else:
            body = self.body("", None, None)
        answer = {
            **self.head(True),
            **body,
            "done_reason": "length" if choice.finish_reason == "length" else "stop",
            **clock.stats(done),
        }
        if whole and choice.logprobs is not None:
            answer["logprobs"] = [lp.model_dump(mode="json") for lp in choice.logprobs]
        return answer


class ChatShape(_Shape):
    def body(
        self, content: str, thinking: str | None, calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = _tool_calls(calls)
        return {"message": message}


class GenerateShape(_Shape):
    def body(
        self, content: str, thinking: str | None, calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"response": content}
        if thinking:
            answer["thinking"] = thinking
        return answer


def _loaded(shape: _Shape) -> dict[str, Any]:
    """A request with nothing to answer (Ollama's way to load a model): the worker has it
    loaded already."""
    return {**shape.head(True), **shape.body("", None, None), "done_reason": "load"}


async def _respond(
    http_request: Request,
    runner: JobRunner,
    settings: Settings,
    request: GenerationRequest,
    shape: _Shape,
    received: int,
) -> dict | Response:
    """As api/respond.py, with Ollama's framing and timings: one JSON object, or a stream of
    newline-delimited JSON objects that starts after the job's first event."""
    clock = Clock(received)
    if not request.stream:
        done = await _in_ollama_terms(http_request, _whole(runner, request, clock))
        if isinstance(done, Response):
            return done
        headers = {WORKER_HEADER: done.worker} if done.worker else None
        return JSONResponse(shape.final(done, clock, whole=True), headers=headers)
    stream = await _in_ollama_terms(
        http_request, JobStream.open(runner, request, settings.stream_keepalive)
    )
    if isinstance(stream, Response):
        return stream
    return NDJSONStream(_lines(stream, shape, clock), settings.stream_write_timeout)


_OLLAMA_NAMES = {"response_format": "format", "max_tokens": "num_predict"}
"""The worker's messages name GenerationRequest's fields; an Ollama client knows these."""


def renamed(exc: MlxqError) -> MlxqError:
    """The error with the fields its message names in Ollama's words."""
    message = re.sub(
        r"\b(response_format|max_tokens)\b", lambda m: _OLLAMA_NAMES[m.group(1)], exc.message
    )
    if message == exc.message:
        return exc
    other = copy.copy(exc)
    other.message, other.args = message, (message,)
    return other


async def _in_ollama_terms(http_request: Request, work: Awaitable[T]) -> T | Response:
    """``unless_disconnected``, with a refusal's message in Ollama's words."""
    try:
        return await unless_disconnected(http_request, work)
    except MlxqError as exc:
        ollama_exc = renamed(exc)
        if ollama_exc is exc:
            raise
        raise ollama_exc from exc


async def _whole(runner: JobRunner, request: GenerationRequest, clock: Clock) -> DoneEvent:
    async for event in runner.events(request):
        clock.see(event)
        if isinstance(event, DoneEvent):
            return event
    raise AssertionError("events() ends with a DoneEvent or raises")


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"


async def _lines(stream: JobStream, shape: _Shape, clock: Clock) -> AsyncIterator[str]:
    """NDJSON has no comments: keep-alives are dropped (Ollama sends none either)."""
    try:
        async for item in stream:
            clock.see(item)
            if isinstance(item, TokenEvent):
                piece = shape.piece(item)
                if piece is not None:
                    yield _line(piece)
            elif isinstance(item, DoneEvent):
                yield _line(shape.final(item, clock, whole=False))
    except MlxqError as exc:  # after the response began, an error is the stream's last line
        yield _line({"error": renamed(exc).message})
    finally:
        await stream.aclose()


class NDJSONStream(StreamingResponse):
    """Newline-delimited JSON whose client must keep reading: a write that waits longer than
    ``write_timeout_s`` ends the response, which closes the lines and so cancels the job (as
    api/sse.py does for Server-Sent Events)."""

    def __init__(self, lines: AsyncIterator[str], write_timeout_s: float) -> None:
        super().__init__(
            lines,
            media_type=NDJSON,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._write_timeout_s = write_timeout_s
        self._lines = lines

    async def stream_response(self, send: Send) -> None:
        async def send_in_time(message: Message) -> None:
            await asyncio.wait_for(send(message), self._write_timeout_s)

        try:
            await super().stream_response(send_in_time)
        except TimeoutError:
            log.warning("a stream's client stopped reading for %gs; dropped", self._write_timeout_s)
            await self._lines.aclose()  # type: ignore[attr-defined]
