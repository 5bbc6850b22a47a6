"""Which models a request may name: what the fleet serves, as every dialect checks it.

A model is named by its id (``mlxq/SmolLM2-135M-Instruct-Q4_1``), or by its short alias, the
part after the last ``/`` (``SmolLM2-135M-Instruct-Q4_1``): clients that read ``org/name``
as a provider and a model (openai-agents' ``Unknown prefix: mlxq``, litellm, any router)
need a name without a slash. An alias exists only while it is unambiguous: when two served
models end in the same part, or a served model's id is that part, neither gets it, and a
request that names it is told why. Either name may carry Ollama's tag ``:latest``
(``ollama list`` shows ``name:latest``, and Ollama accepts that name on its OpenAI and
Anthropic endpoints too). Every dialect resolves names here, and answers with the name the
client sent.

The models a request may name are those the fleet can serve (shared/fleet_view.py): every
model in a live worker's catalogue, loaded or not; a request for one that no worker holds
waits while a worker loads it. A model that every worker listing it refuses (its load
failed, it never fits a budget) is refused at once, with the reason.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from shared.errors import ErrorCode, MlxqError, ModelLoadFailed, ModelNotFound, ModelTooLarge
from shared.fleet_view import FleetModel, fleet_models
from shared.settings import Settings

LATEST_TAG = ":latest"
"""Ollama's default tag: a served model is also listed as ``<id>:latest``."""


def model_id(name: str) -> str:
    """The name without a trailing ":latest" (an id or an alias)."""
    return name.removesuffix(LATEST_TAG)


def short_name(model: str) -> str | None:
    """The part of an id after its last "/" (None for an id without one)."""
    if "/" not in model:
        return None
    return model.rsplit("/", 1)[1] or None


@dataclass(frozen=True)
class ModelNames:
    """The names a set of models answers to: each id, and each unambiguous alias."""

    models: frozenset[str]
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias -> id."""
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    """A short name that several models share (or that is an id itself) -> those models."""

    @classmethod
    def of(cls, models: Iterable[str]) -> "ModelNames":
        ids = frozenset(models)
        owners: dict[str, list[str]] = {}
        for model in sorted(ids):
            short = short_name(model)
            if short is not None:
                owners.setdefault(short, []).append(model)
        aliases, ambiguous = {}, {}
        for short, claimed in owners.items():
            if len(claimed) == 1 and short not in ids:
                aliases[short] = claimed[0]
            else:
                ambiguous[short] = sorted({*claimed, *([short] if short in ids else [])})
        return cls(ids, aliases, ambiguous)

    def resolve(self, name: str) -> str | None:
        """The id ``name`` stands for, or None."""
        bare = model_id(name)
        if bare in self.models:
            return bare
        return self.aliases.get(bare)

    def aliases_of(self, model: str) -> list[str]:
        return sorted(alias for alias, owner in self.aliases.items() if owner == model)

    def not_found(self, name: str) -> ModelNotFound:
        bare = model_id(name)
        if bare in self.ambiguous:
            return ModelNotFound(
                f"The model name {name!r} is ambiguous: it is the last part of several served "
                f"models ({', '.join(self.ambiguous[bare])}), so it is no alias; name one of "
                "them in full."
            )
        available = sorted([*self.models, *self.aliases])
        return ModelNotFound(f"The model {name!r} is not served here. Served models: {available}.")


async def served_models(connection: redis.Redis) -> dict[str, FleetModel]:
    """Model id -> the fleet's view of it, for every model a live worker holds or lists."""
    return await asyncio.to_thread(fleet_models, connection)


async def model_names(connection: redis.Redis, settings: Settings) -> ModelNames:
    """The names requests may use now: the fleet's models' and the default model's."""
    return ModelNames.of({settings.model, *await served_models(connection)})


async def resolve_model(connection: redis.Redis, settings: Settings, name: str) -> str:
    """The model id ``name`` stands for, when a request may use it: the default model is
    always accepted (its worker may be starting); another model needs a live worker that
    holds it or may load it, or the request is refused at once (404) instead of waiting;
    and one every such worker refuses is refused with the reason (``refusal``)."""
    if model_id(name) == settings.model:
        return settings.model
    models = await served_models(connection)
    names = ModelNames.of({settings.model, *models})
    model = names.resolve(name)
    if model is None:
        raise names.not_found(name)
    seen = models.get(model)
    nowhere = seen is not None and not (seen.servable_by or seen.held_by or seen.loading_on)
    if seen is not None and nowhere and seen.refusals:
        raise refusal(seen)
    return model


def refusal(seen: FleetModel) -> MlxqError:
    """Why no worker may serve a model it lists: too large for every budget, or its load
    failed (each worker's reason)."""
    codes = {code for _, code, _ in seen.refusals}
    reasons = "; ".join(dict.fromkeys(why for _, _, why in seen.refusals))
    if codes == {ErrorCode.MODEL_TOO_LARGE}:
        return ModelTooLarge(f"No worker can hold the model {seen.model!r}: {reasons}")
    return ModelLoadFailed(f"The model {seen.model!r} cannot be loaded: {reasons}")
