"""What Ollama's clients ask about models: ``/api/version``, ``/api/tags``, ``/api/ps`` and
``/api/show``, describing the fleet's models as Ollama describes its own.

Model management (pull, push, create, copy, delete) answers 501 with the reason: each worker
serves the model it was started with.
"""

import hashlib
import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.core.models import LATEST_TAG, ModelFacts, ModelNames, model_facts, resolve_model
from api.deps import IdentityDep, RedisDep, SettingsDep
from api.dialects.ollama.answers import (
    ERROR_RESPONSES,
    OllamaError,
    OllamaPs,
    OllamaShow,
    OllamaTags,
    OllamaVersion,
)
from api.dialects.ollama.options import OLLAMA_DEFAULTS
from api.dialects.ollama.schemas import OllamaShowRequest

router = APIRouter(prefix="/api", tags=["ollama"])

OLLAMA_VERSION = "0.14.0"
"""mlxq's compatibility level: the Ollama release whose API these routes follow (chat and
generate with tools, structured outputs, logprobs, think: false; tags, ps, show). Clients that
gate features on ``/api/version`` see them available. It is not mlxq's own version."""
UNKNOWN_TIME = "0001-01-01T00:00:00Z"
"""When a model was modified: unknown to the API (it never reads model files); Go's zero
time, as Ollama writes an unset time."""
NEVER_EXPIRES = "2318-01-01T00:00:00Z"
"""``/api/ps``'s expires_at: workers keep their model loaded while they run (a far-future
time, as Ollama shows for keep_alive -1)."""
UNTOLD_CAPABILITIES = ["completion", "tools"]
"""For a model no live worker describes (the default model while its worker starts, or a
worker too old to say): a chat model's. Workers say what their model does: completion and
tools for every chat model (its own template or mlxq's Hermes-format fallback), insert with
fill-in-the-middle tokens, thinking with thinking markers; embedding for embedding models."""
MODELS_MANAGED_BY_WORKERS = (
    "mlxq does not manage models through the API: each worker serves the model it was "
    "started with (mlxq worker, MLXQ_MODEL). Start a worker for the model instead."
)


def _details(model: str, facts: ModelFacts) -> dict[str, Any]:
    """Family, size and quantization as the model's workers tell them; where they do not,
    as the id tells them, the way Hugging Face names spell them ("mlx-community/Qwen3-4B-4bit");
    "" when neither does."""
    base = model.rsplit("/", 1)[-1]
    family = facts.family or re.split(r"[-_.]", base, maxsplit=1)[0].lower()
    size = re.search(r"(?<![A-Za-z0-9])(\d+(?:\.\d+)?[BbMm])(?![A-Za-z0-9])", base)
    quant = re.search(r"(?<![A-Za-z0-9])(Q\d(?:_[0-9A-Z]+)*|\d+-?bit|bf16|fp16|f16)", base, re.I)
    parameter_size = size.group(1).upper() if size else ""
    if facts.parameter_count:
        parameter_size = human_number(facts.parameter_count)
    return {
        "parent_model": "",
        "format": "mlx",
        "family": family,
        "families": [family] if family else [],
        "parameter_size": parameter_size,
        "quantization_level": facts.quantization or (quant.group(1) if quant else ""),
    }


def human_number(count: int) -> str:
    """A parameter count as Ollama writes it: "8.0B", "134.52M", "22.6K"."""
    for unit, scale, places in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 1)):
        if count >= scale:
            value = count / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{places}f}{unit}"
    return str(count)


def capabilities(facts: ModelFacts) -> list[str]:
    return list(facts.capabilities) or UNTOLD_CAPABILITIES


def _entry(model: str, facts: ModelFacts, name: str | None = None) -> dict[str, Any]:
    """``model`` listed under ``name`` (its id by default, or an alias), tagged ``:latest``."""
    return {
        "name": (name or model) + LATEST_TAG,
        "model": (name or model) + LATEST_TAG,
        "modified_at": UNKNOWN_TIME,
        "size": facts.weights_bytes or 0,
        "digest": hashlib.sha256(model.encode()).hexdigest(),
        "details": _details(model, facts),
    }


def _model_info(model: str, facts: ModelFacts, details: dict[str, Any]) -> dict[str, Any]:
    """Ollama's GGUF-style keys: clients read ``<architecture>.context_length`` and
    ``general.parameter_count``."""
    architecture = details["family"]
    info: dict[str, Any] = {"general.architecture": architecture, "general.basename": model}
    if facts.parameter_count:
        info["general.parameter_count"] = facts.parameter_count
    if facts.context_length:
        info[f"{architecture}.context_length"] = facts.context_length
    return info


@router.get("/version", responses={200: {"model": OllamaVersion}})
async def version() -> dict:
    return {"version": OLLAMA_VERSION}


@router.get("/tags", responses={200: {"model": OllamaTags}, 401: {"model": OllamaError}})
async def tags(redis: RedisDep, settings: SettingsDep, identity: IdentityDep) -> dict:
    """The models requests may name: every model with a live worker, and the default model
    (accepted while its worker starts), each by its id, then by its short alias
    (api/core/models.py), described as their workers describe them (size 0 while none does);
    only those the caller's key may use."""
    facts = await model_facts(redis)
    names = ModelNames.of({settings.model, *facts})
    entries = [
        _entry(model, facts.get(model, ModelFacts()), name)
        for model in sorted(names.models)
        if identity.may_use(model)
        for name in (model, *names.aliases_of(model))
    ]
    return {"models": entries}


@router.get("/ps", responses={200: {"model": OllamaPs}, 401: {"model": OllamaError}})
async def ps(redis: RedisDep) -> dict:
    """The models loaded now: those with at least one live worker."""
    return {"models": [_running(m, f) for m, f in sorted((await model_facts(redis)).items())]}


def _running(model: str, facts: ModelFacts) -> dict[str, Any]:
    running = {
        **_entry(model, facts),
        "expires_at": NEVER_EXPIRES,
        "size_vram": 0,
        "workers": facts.workers,
    }
    if facts.context_length:
        running["context_length"] = facts.context_length
    return running


@router.post("/show", responses={200: {"model": OllamaShow}, **ERROR_RESPONSES})
async def show(body: OllamaShowRequest, redis: RedisDep, settings: SettingsDep) -> dict:
    model = await resolve_model(redis, settings, body.model_name)
    facts = (await model_facts(redis)).get(model, ModelFacts())
    details = _details(model, facts)
    parameters = "\n".join(f"{name} {value}" for name, value in OLLAMA_DEFAULTS.items())
    return {
        "modelfile": f"# mlxq serves {model} with MLX; there is no Modelfile.\nFROM {model}\n",
        "parameters": parameters,
        "template": "",  # the tokenizer's own chat template, applied by the worker
        "details": details,
        "model_info": _model_info(model, facts, details),
        "capabilities": capabilities(facts),
        "modified_at": UNKNOWN_TIME,
    }


@router.api_route("/pull", methods=["POST"], include_in_schema=False)
@router.api_route("/push", methods=["POST"], include_in_schema=False)
@router.api_route("/create", methods=["POST"], include_in_schema=False)
@router.api_route("/copy", methods=["POST"], include_in_schema=False)
@router.api_route("/delete", methods=["DELETE"], include_in_schema=False)
async def manage_models() -> JSONResponse:
    return JSONResponse({"error": MODELS_MANAGED_BY_WORKERS}, status_code=501)
