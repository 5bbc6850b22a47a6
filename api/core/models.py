"""Which models a request may name: what the fleet serves, as every dialect checks it.

A model is named by its id (``mlxq/SmolLM2-135M-Instruct-Q4_1``) or, as Ollama lists it
and its users copy it, with the tag ``:latest`` (``ollama list`` shows ``name:latest``,
and Ollama accepts that name on its OpenAI and Anthropic endpoints too). Every dialect
accepts both.
"""

import asyncio

import redis

from shared.errors import ModelNotFound
from shared.fleet_view import loaded_models
from shared.settings import Settings

LATEST_TAG = ":latest"
"""Ollama's default tag: a served model is also listed as ``<id>:latest``."""


def model_id(name: str) -> str:
    """The served model id a name stands for: a trailing ":latest" is dropped."""
    return name.removesuffix(LATEST_TAG)


async def served_models(connection: redis.Redis) -> dict[str, int]:
    """Model id -> live workers holding it (suspended ones too: shared/fleet_view.py)."""
    return await asyncio.to_thread(loaded_models, connection)


async def resolve_model(connection: redis.Redis, settings: Settings, name: str) -> str:
    """The model id ``name`` stands for, when a request may use it: the default model is
    always accepted (its worker may be starting); another model needs a live worker now,
    or the request is refused at once (404) instead of waiting."""
    model = model_id(name)
    if model == settings.model:
        return model
    served = await served_models(connection)
    if model not in served:
        available = sorted({settings.model, *served})
        raise ModelNotFound(f"The model {name!r} is not served here. Served models: {available}.")
    return model
