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

from api.core.models import LATEST_TAG, ModelNames, resolve_model, served_models
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
CAPABILITIES = ["completion", "tools"]
"""Every chat model answers /api/generate and /api/chat, with tools (through its own template
or mlxq's Hermes-format fallback). No vision or insert (suffix). Embedding models answer
/api/embed and /api/embeddings (the API cannot tell the kinds apart without reading files)."""
MODELS_MANAGED_BY_WORKERS = (
    "mlxq does not manage models through the API: each worker serves the model it was "
    "started with (mlxq worker, MLXQ_MODEL). Start a worker for the model instead."
)


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


def _entry(model: str, name: str | None = None) -> dict[str, Any]:
    """``model`` listed under ``name`` (its id by default, or an alias), tagged ``:latest``."""
    return {
        "name": (name or model) + LATEST_TAG,
        "model": (name or model) + LATEST_TAG,
        "modified_at": UNKNOWN_TIME,
        "size": 0,
        "digest": hashlib.sha256(model.encode()).hexdigest(),
        "details": _details(model),
    }


@router.get("/version", responses={200: {"model": OllamaVersion}})
async def version() -> dict:
    return {"version": OLLAMA_VERSION}


@router.get("/tags", responses={200: {"model": OllamaTags}, 401: {"model": OllamaError}})
async def tags(redis: RedisDep, settings: SettingsDep, identity: IdentityDep) -> dict:
    """The models requests may name: every model with a live worker, and the default model
    (accepted while its worker starts), each by its id, then by its short alias
    (api/core/models.py); only those the caller's key may use. Sizes are 0: the API never
    reads model files."""
    names = ModelNames.of({settings.model, *await served_models(redis)})
    entries = [
        _entry(model, name)
        for model in sorted(names.models)
        if identity.may_use(model)
        for name in (model, *names.aliases_of(model))
    ]
    return {"models": entries}


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


@router.post("/show", responses={200: {"model": OllamaShow}, **ERROR_RESPONSES})
async def show(body: OllamaShowRequest, redis: RedisDep, settings: SettingsDep) -> dict:
    model = await resolve_model(redis, settings, body.model_name)
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


@router.api_route("/pull", methods=["POST"], include_in_schema=False)
@router.api_route("/push", methods=["POST"], include_in_schema=False)
@router.api_route("/create", methods=["POST"], include_in_schema=False)
@router.api_route("/copy", methods=["POST"], include_in_schema=False)
@router.api_route("/delete", methods=["DELETE"], include_in_schema=False)
async def manage_models() -> JSONResponse:
    return JSONResponse({"error": MODELS_MANAGED_BY_WORKERS}, status_code=501)
