"""Finding and loading the model a worker serves, once per process."""

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import DEMO_EMBEDDING_MODEL_ID, DEMO_MODEL_ID
from worker.engine_api import ModelFacts
from worker.startup_error import StartupError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    path: Path
    model: Any
    tokenizer: Any
    context_length: int | None
    temperature: float | None = None
    """The temperature its makers suggest (generation_config.json), for clients to start from."""
    facts: ModelFacts = ModelFacts()
    """What the fleet is told of it (worker/model_facts.py)."""


def resolve_model_path(model_id: str, cache_dir: Path) -> Path:
    """The local folder holding ``model_id``: a demo model, a folder, or a hub download."""
    if model_id == DEMO_MODEL_ID:
        from worker.demo_model import prepare_demo_model

        return prepare_demo_model(cache_dir)
    if model_id == DEMO_EMBEDDING_MODEL_ID:
        from worker.demo_embedding_model import prepare_demo_embedding_model

        return prepare_demo_embedding_model(cache_dir)
    path = Path(model_id).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return path
    if path.exists() or not _REPO_ID.match(model_id):
        raise StartupError(
            f"MLXQ_MODEL={model_id!r} is neither an MLX model folder nor a Hugging Face repo id "
            "(org/name)."
        )
    return _download(model_id)


def check_model_folder(path: Path) -> None:
    """An MLX model folder has a config.json and safetensors weights; say which is missing."""
    missing = [
        what
        for what, present in (
            ("config.json", (path / "config.json").is_file()),
            ("*.safetensors weights", any(path.glob("*.safetensors"))),
        )
        if not present
    ]
    if missing:
        raise StartupError(
            f"MLXQ_MODEL={str(path)!r} is a folder but not an MLX model: it has no "
            f"{' and no '.join(missing)}."
        )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    log.info("downloading %s from the Hugging Face hub", repo_id)
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise StartupError(
            f"Could not download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}). Without network access, set MLXQ_MODEL to a local MLX model folder."
        ) from exc


def context_length(path: Path) -> int | None:
    """The model's context window from its config.json, None when it does not say."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for section in (config, config.get("text_config", {})):
        for key in _CONTEXT_KEYS:
            if isinstance(section.get(key), int):
                return section[key]
    return None


def suggested_temperature(path: Path) -> float | None:
    """The temperature in the model's generation_config.json; None when it names none (or
    turns sampling off with ``do_sample: false``, where the makers mean greedy: 0)."""
    try:
        config = json.loads((path / "generation_config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("do_sample") is False:
        return 0.0
    value = config.get("temperature")
    return float(value) if isinstance(value, int | float) and 0 <= value <= 2 else None


def is_bert_folder(path: Path) -> bool:
    """A folder whose config.json names BertModel: an embedding model (worker/bert.py)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "BertModel" in config.get("architectures", []) or config.get("model_type") == "bert"


def load_model(model_id: str, cache_dir: Path, *, cpu_dequantize: bool = True) -> LoadedModel:
    """Load once; any failure becomes a StartupError with a message a person can act on."""
    path = resolve_model_path(model_id, cache_dir)
    from mlx_lm import load

    from worker.cpu_backend import dequantize_to_float32, on_cpu
    from worker.model_facts import chat_model_facts

    try:
        model, tokenizer = load(str(path))[:2]
    except Exception as exc:
        raise StartupError(f"Could not load the model in {path}: {exc}") from exc
    facts = chat_model_facts(tokenizer)
    if cpu_dequantize and on_cpu():
        expanded = dequantize_to_float32(model)
        if expanded:
            log.info("CPU backend: expanded %d quantized layers to float32", expanded)
    return LoadedModel(
        model_id,
        path,
        model,
        tokenizer,
        context_length(path),
        suggested_temperature(path),
        facts,
    )
