"""OpenAI's routes: ``POST /v1/chat/completions``, ``/v1/completions`` (streamed or not),
``/v1/embeddings``, and ``GET /v1/models`` (ids may contain "/", as Hugging Face repo ids do)."""

from fastapi import APIRouter
from fastapi.responses import Response

from api.core.models import ModelNames, served_models
from api.deps import IdentityDep, JobExchangeDep, RedisDep, SettingsDep
from api.dialects.openai.answers import (
    ERROR_RESPONSES,
    SSE_RESPONSE,
    ChatCompletion,
    Completion,
    ModelCard,
    ModelList,
    OpenAIError,
)
from api.dialects.openai.render import (
    ChatRenderer,
    CompletionRenderer,
    OpenAIStream,
    ResponseHeader,
)
from api.dialects.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsBody
from api.dialects.openai.translate import (
    chat_answer,
    chat_request,
    completion_answer,
    completion_request,
    embeddings_answer,
    embeddings_request,
)
from shared.fleet_view import FleetModel

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/chat/completions",
    response_model=None,
    responses={200: {"model": ChatCompletion, **SSE_RESPONSE}, **ERROR_RESPONSES},
)
async def chat_completions(body: ChatCompletionRequest, job: JobExchangeDep) -> Response:
    model = await job.model(body.model)
    request = chat_request(body, job.settings, model)
    header = ResponseHeader("chatcmpl", request.request_id, body.model)
    stream = OpenAIStream(header, ChatRenderer(request.n), body.include_usage)
    answer = chat_answer(body, request)
    return await job.respond(request, answer=answer, renderer=stream)


@router.post(
    "/completions",
    response_model=None,
    responses={200: {"model": Completion, **SSE_RESPONSE}, **ERROR_RESPONSES},
)
async def completions(body: CompletionRequest, job: JobExchangeDep) -> Response:
    model = await job.model(body.model)
    request = completion_request(body, job.settings, model)
    header = ResponseHeader("cmpl", request.request_id, body.model)
    stream = OpenAIStream(header, CompletionRenderer(), body.include_usage)
    answer = completion_answer(body, request)
    return await job.respond(request, answer=answer, renderer=stream)


@router.post("/embeddings", response_model=None, responses=ERROR_RESPONSES)
async def embeddings(body: EmbeddingsBody, job: JobExchangeDep) -> Response:
    """A vector per input, from an embedding worker."""
    model = await job.model(body.model)
    request = embeddings_request(body, job.settings, model)
    return await job.respond(request, answer=lambda done: embeddings_answer(body, done))


_LIST_RESPONSES: dict[int | str, dict] = {
    200: {"model": ModelList},
    **{status: {"model": OpenAIError} for status in (401, 503)},
}
_ONE_RESPONSES: dict[int | str, dict] = {
    200: {"model": ModelCard},
    **{status: {"model": OpenAIError} for status in (401, 404, 503)},
}


@router.get("/models", responses=_LIST_RESPONSES)
async def list_models(redis: RedisDep, settings: SettingsDep, identity: IdentityDep) -> dict:
    """Every model a live worker holds or may load (loaded or not), each by its id, then by
    its short alias (api/core/models.py); only those the caller's key may use."""
    served = await served_models(redis)
    names = ModelNames.of({settings.model, *served})
    data = [
        _card(name, model, seen)
        for model, seen in sorted(served.items())
        if identity.may_use(model)
        for name in (model, *names.aliases_of(model))
    ]
    return {"object": "list", "data": data}


@router.get("/models/{name:path}", responses=_ONE_RESPONSES)
async def retrieve_model(name: str, redis: RedisDep, settings: SettingsDep) -> dict:
    """A model the fleet can serve, or the default model (its worker may be starting), by
    any name it answers to (its id or alias, with or without ``:latest``), under that name."""
    served = await served_models(redis)
    names = ModelNames.of({settings.model, *served})
    model = names.resolve(name)
    if model is None:
        raise names.not_found(name)
    return _card(name, model, served.get(model))


def _card(name: str, model: str, seen: FleetModel | None) -> dict:
    """OpenAI's model object, with what the fleet knows of the model where clients look for
    it: the context as vLLM's ``max_model_len`` (and ``context_length``, which LiteLLM and Open
    WebUI also read), LM Studio's ``state``, and mlxq's own facts, ``capabilities`` among
    them (an embedding model has no "completion")."""
    card: dict = {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "mlxq",
        "workers": len(seen.held_by) if seen else 0,
        "root": model,
        "state": "not-loaded",
        "loaded_on": [],
    }
    if seen is None:
        return card
    entry = seen.entry
    card["state"] = "loaded" if seen.held_by else "loading" if seen.loading_on else "not-loaded"
    card["loaded_on"] = sorted({held.host or worker for worker, held in seen.held_by})
    facts = {
        "max_model_len": entry.context_length,
        "context_length": entry.context_length,
        "family": entry.family,
        "parameter_count": entry.parameter_count,
        "quantization": entry.quantization,
        "size": entry.disk_bytes,
        "memory_bytes": entry.memory_bytes,
        "capabilities": entry.told_capabilities,
    }
    return {**card, **{key: value for key, value in facts.items() if value is not None}}
