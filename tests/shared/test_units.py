"""Sizes and durations as people write them: MLXQ_MEMORY_BUDGET, MLXQ_KEEP_ALIVE, and
Ollama's keep_alive."""

import pytest

from shared.settings import Settings
from shared.units import FOREVER, parse_bytes, parse_duration


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("6GB", 6 * 10**9),
        ("6GiB", 6 * 2**30),
        ("512mb", 512 * 10**6),
        ("1.5G", 1_500_000_000),
        ("1000", 1000),
        (" 2 GiB ", 2 * 2**30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("10s", 10.0),
        ("300ms", 0.3),
        ("0", 0.0),
        (0, 0.0),
        (45, 45.0),
        ("2.5", 2.5),
        ("-1", FOREVER),
        (-1, FOREVER),
        ("-5m", FOREVER),
    ],
)
def test_durations_as_ollama_reads_them(value: str | int, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["five minutes", "5 parsecs", "", "m", "1h 30m"])
def test_what_is_no_duration_says_how_to_write_one(bad: str) -> None:
    with pytest.raises(ValueError, match="5m"):
        parse_duration(bad)


def test_settings_read_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXQ_MEMORY_BUDGET", "6GB")
    monkeypatch.setenv("MLXQ_KEEP_ALIVE", "1h")
    settings = Settings()
    assert settings.memory_budget == 6 * 10**9 and settings.keep_alive == 3600.0
    monkeypatch.setenv("MLXQ_MEMORY_BUDGET", "lots")
    with pytest.raises(ValueError, match="not a size"):
        Settings()
