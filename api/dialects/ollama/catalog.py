"""What Ollama's clients ask about models: ``/api/version``, ``/api/tags``, ``/api/ps`` and
``/api/show``, describing the fleet's models as Ollama describes its own.

Every model a live worker may serve is listed (``/api/tags``), loaded or not, with what the
worker read of its files (size on disk, family, parameters, quantization, context); the
loaded ones (``/api/ps``) with the memory they take, where, and when they unload. Pulling and
deleting are in models_admin.py; push, create and copy answer 501.
"""

import hashlib
import re
from datetime import UTC, datetime
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
from shared.fleet_view import FleetModel
from shared.protocol import CatalogueEntry

router = APIRouter(prefix="/api", tags=["ollama"])

OLLAMA_VERSION = "0.14.0"
"""mlxq's compatibility level: the Ollama release whose API these routes follow (chat and
generate with tools, structured outputs, logprobs, think: false; tags, ps, show, pull,
delete). Clients that gate features on ``/api/version`` see them available. It is not
mlxq's own version."""
UNKNOWN_TIME = "0001-01-01T00:00:00Z"
"""A time the fleet does not know (a model no worker describes): Go's zero time, as Ollama
writes an unset time."""
NEVER_EXPIRES = "2318-01-01T00:00:00Z"
"""``/api/ps``'s expires_at of a model kept loaded (keep_alive negative, or the default
model): a far-future time, as Ollama shows it."""
NOT_MANAGED = (
    "mlxq does not push, create or copy models: pull one (POST /api/pull, mlxq pull) or point "
    "a worker's MLXQ_MODELS at a model folder."
)


NEVER_EXPIRES_UNIX = datetime(2318, 1, 1, tzinfo=UTC).timestamp()


def _time(unix: float | None) -> str:
    """A Unix time as Ollama writes it; a keep-alive past NEVER_EXPIRES (a client may ask
    for 10^16 seconds, beyond any date Python can write) is shown as never expiring."""
    if not unix:
        return UNKNOWN_TIME
    if unix >= NEVER_EXPIRES_UNIX:
        return NEVER_EXPIRES
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def parameter_size(count: int) -> str:
    """A parameter count as Ollama writes it: "8.0B", "134.52M", "22.6K"."""
    for unit, scale, places in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 1)):
        if count >= scale:
            return f"{count / scale:.{places}f}{unit}"
    return str(count)


def _details(model: str, entry: CatalogueEntry) -> dict[str, Any]:
    """Family, size and quantization as the model's files tell them (its worker read them);
    where nothing does, as the id tells them, the way Hugging Face names spell them
    ("mlx-community/Qwen3-4B-4bit"); "" when neither does."""
    base = model.rsplit("/", 1)[-1]
    family = entry.family or re.split(r"[-_.]", base, maxsplit=1)[0].lower()
    size = re.search(r"(?<![A-Za-z0-9])(\d+(?:\.\d+)?[BbMm])(?![A-Za-z0-9])", base)
    quant = re.search(r"(?<![A-Za-z0-9])(Q\d(?:_[0-9A-Z]+)*|\d+-?bit|bf16|fp16|f16)", base, re.I)
    named_size = size.group(1).upper() if size else ""
    return {
        "parent_model": entry.base or "",
        "format": "mlx",
        "family": family,
        "families": [family] if family else [],
        "parameter_size": parameter_size(entry.parameter_count)
        if entry.parameter_count
        else named_size,
        "quantization_level": entry.quantization or (quant.group(1) if quant else ""),
    }


def _entry(model: str, seen: FleetModel | None, name: str | None = None) -> dict[str, Any]:
    """``model`` listed under ``name`` (its id by default, or an alias), tagged ``:latest``."""
    entry = seen.entry if seen else CatalogueEntry(model=model)
    return {
        "name": (name or model) + LATEST_TAG,
        "model": (name or model) + LATEST_TAG,
        "modified_at": _time(entry.modified_at),
        "size": entry.disk_bytes or 0,
        "digest": hashlib.sha256(model.encode()).hexdigest(),
        "details": _details(model, entry),
    }


def _model_info(model: str, entry: CatalogueEntry, details: dict[str, Any]) -> dict[str, Any]:
    """Ollama's GGUF-style keys: clients read ``<architecture>.context_length`` and
    ``general.parameter_count``."""
    architecture = details["family"]
    info: dict[str, Any] = {"general.architecture": architecture, "general.basename": model}
    if entry.parameter_count:
        info["general.parameter_count"] = entry.parameter_count
    if entry.context_length:
        info[f"{architecture}.context_length"] = entry.context_length
    return info


@router.get("/version", responses={200: {"model": OllamaVersion}})
async def version() -> dict:
    return {"version": OLLAMA_VERSION}


@router.get("/tags", responses={200: {"model": OllamaTags}, 401: {"model": OllamaError}})
async def tags(redis: RedisDep, settings: SettingsDep, identity: IdentityDep) -> dict:
    """Every model a live worker holds or may load, and the default model (accepted while its
    worker starts), each by its id, then by its short alias (api/core/models.py); only those
    the caller's key may use."""
    served = await served_models(redis)
    names = ModelNames.of({settings.model, *served})
    entries = [
        _entry(model, served.get(model), name)
        for model in sorted(names.models)
        if identity.may_use(model)
        for name in (model, *names.aliases_of(model))
    ]
    return {"models": entries}


@router.get("/ps", responses={200: {"model": OllamaPs}, 401: {"model": OllamaError}})
async def ps(redis: RedisDep, identity: IdentityDep) -> dict:
    """The models loaded now, with the memory one copy takes, when it unloads if left idle,
    and the hosts holding it."""
    served = await served_models(redis)
    return {
        "models": [
            _running(model, seen)
            for model, seen in sorted(served.items())
            if seen.held_by and identity.may_use(model)
        ]
    }


def _running(model: str, seen: FleetModel) -> dict[str, Any]:
    held = [h for _, h in seen.held_by]
    size = max(h.bytes for h in held)
    expiries = [h.expires_at for h in held]
    expires = NEVER_EXPIRES if None in expiries else _time(max(e for e in expiries if e))
    running = {
        **_entry(model, seen),
        "size": size,
        "expires_at": expires,
        "size_vram": size if any(h.device == "gpu" for h in held) else 0,
        "workers": len(held),
        "loaded_on": sorted({h.host or worker for worker, h in seen.held_by}),
    }
    if seen.entry.context_length:
        running["context_length"] = seen.entry.context_length
    return running


@router.post("/show", responses={200: {"model": OllamaShow}, **ERROR_RESPONSES})
async def show(body: OllamaShowRequest, redis: RedisDep, settings: SettingsDep) -> dict:
    model = await resolve_model(redis, settings, body.model_name)
    seen = (await served_models(redis)).get(model)
    entry = seen.entry if seen else CatalogueEntry(model=model)
    details = _details(model, entry)
    parameters = "\n".join(f"{name} {value}" for name, value in OLLAMA_DEFAULTS.items())
    return {
        "modelfile": f"# mlxq serves {model} with MLX; there is no Modelfile.\nFROM {model}\n",
        "parameters": parameters,
        "template": "",  # the tokenizer's own chat template, applied by the worker
        "details": details,
        "model_info": _model_info(model, entry, details),
        "capabilities": entry.told_capabilities,
        "modified_at": _time(entry.modified_at),
        "loaded_on": sorted({h.host or w for w, h in seen.held_by}) if seen else [],
    }


@router.api_route("/push", methods=["POST"], include_in_schema=False)
@router.api_route("/create", methods=["POST"], include_in_schema=False)
@router.api_route("/copy", methods=["POST"], include_in_schema=False)
async def manage_models() -> JSONResponse:
    return JSONResponse({"error": NOT_MANAGED}, status_code=501)
