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

What a model can do, how long its context is and how big it is (``ModelFacts``) come from
the heartbeats of the workers that loaded it: the API never reads model files. Each dialect's
listing writes them in its own words (``/v1/models``, ``/api/tags``, ``/api/show``).
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from shared.errors import ModelNotFound
from shared.fleet_view import loaded_model_stats, loaded_models
from shared.protocol import WorkerStats
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


async def served_models(connection: redis.Redis) -> dict[str, int]:
    """Model id -> live workers holding it (suspended ones too: shared/fleet_view.py)."""
    return await asyncio.to_thread(loaded_models, connection)


@dataclass(frozen=True)
class ModelFacts:
    """What the live workers holding a model say of it (all unknown while none does)."""

    workers: int = 0
    capabilities: tuple[str, ...] = ()
    """Ollama's words: completion, tools, insert, thinking; or embedding. Empty: unknown."""
    context_length: int | None = None
    """The shortest any of its workers reads (they may be configured apart)."""
    parameter_count: int | None = None
    family: str | None = None
    quantization: str | None = None
    weights_bytes: int | None = None

    @classmethod
    def of(cls, stats: list[WorkerStats]) -> "ModelFacts":
        told = [s for s in stats if s.capabilities]
        first = told[0] if told else None
        lengths = [s.context_length for s in stats if s.context_length]
        if first is None:
            return cls(workers=len(stats), context_length=min(lengths, default=None))
        return cls(
            workers=len(stats),
            capabilities=tuple(first.capabilities),
            context_length=min(lengths, default=None),
            parameter_count=first.parameter_count,
            family=first.family,
            quantization=first.quantization,
            weights_bytes=first.weights_bytes,
        )

    @property
    def generates(self) -> bool:
        """Answers chat and completions (unknown counts as yes, as before workers said)."""
        return not self.capabilities or "completion" in self.capabilities


async def model_facts(connection: redis.Redis) -> dict[str, ModelFacts]:
    """Model id -> what its live workers (suspended ones too) say of it."""
    stats = await asyncio.to_thread(loaded_model_stats, connection)
    return {model: ModelFacts.of(told) for model, told in stats.items()}


async def model_names(connection: redis.Redis, settings: Settings) -> ModelNames:
    """The names requests may use now: the served models' and the default model's."""
    return ModelNames.of({settings.model, *await served_models(connection)})


async def resolve_model(connection: redis.Redis, settings: Settings, name: str) -> str:
    """The model id ``name`` stands for, when a request may use it: the default model is
    always accepted (its worker may be starting); another model needs a live worker now,
    or the request is refused at once (404) instead of waiting."""
    if model_id(name) == settings.model:
        return settings.model
    names = await model_names(connection, settings)
    model = names.resolve(name)
    if model is None:
        raise names.not_found(name)
    return model
