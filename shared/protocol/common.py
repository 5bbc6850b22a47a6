"""What every record of shared/protocol/ shares: the key prefix, and reading Redis replies."""

from typing import Any

PREFIX = "mlxq"
"""The first part of every key and channel of mlxq's own (RQ's keys are RQ's)."""


def text(value: Any) -> str:
    """A Redis reply item as text (replies are bytes: clients are made without decoding)."""
    return value.decode() if isinstance(value, bytes) else str(value)
