"""A Hugging Face cache laid out as ``huggingface_hub`` writes it, filled from a local model
folder (no download): ``models--org--name/snapshots/<revision>/`` and ``refs/main``."""

from pathlib import Path

from tests.support.model_folders import copy_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_model(cache: Path, repo_id: str, source: Path) -> Path:
    """Put ``source``'s files in ``cache`` as the snapshot of ``repo_id``; returns it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = copy_model(source, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot
