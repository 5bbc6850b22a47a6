"""What a worker tells the fleet about a model once it loaded it (``ModelFacts``): what its
tokenizer lets it do. What the model's files say is read by the catalogue
(worker/catalogue.py), loaded or not."""

from typing import Any

from worker.engine_api import ModelFacts
from worker.fim import find_fim_tokens

EMBEDDING_FACTS = ModelFacts(capabilities=("embedding",))


def chat_model_facts(tokenizer: Any) -> ModelFacts:
    """A generation model: completion and tools always (its own template's tools, or mlxq's
    Hermes-format fallback), insert when its vocabulary has fill-in-the-middle markers,
    thinking when its tokenizer declares thinking markers."""
    capabilities = ["completion", "tools"]
    if find_fim_tokens(tokenizer) is not None:
        capabilities.append("insert")
    if getattr(tokenizer, "has_thinking", False):
        capabilities.append("thinking")
    return ModelFacts(capabilities=tuple(capabilities))
