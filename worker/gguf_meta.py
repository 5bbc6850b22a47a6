"""What the parts of a GGUF conversion share: their error, and reading and writing values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.startup_error import StartupError


class GGUFError(StartupError):
    """The GGUF file cannot be converted; the message says why."""


def meta_value(meta: dict[str, Any], key: str) -> Any:
    """A metadata value as a plain Python object (mlx returns scalars as 0-d arrays)."""
    value: Any = meta.get(key)
    return value.item() if hasattr(value, "item") else value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
