"""The local Hugging Face cache: what was pulled, pulling, removing (shared/hub_cache.py).
No hub is reachable from the tests: a pull fails, at once, in one line."""

import time
from pathlib import Path

import pytest

from shared import hub_cache
from tests.support.hf_cache import cache_model


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_pull_without_the_hub_fails_at_once_in_one_line(hf_cache: Path) -> None:
    started = time.monotonic()
    heard: list[hub_cache.Progress] = []
    with pytest.raises(hub_cache.PullFailed) as failed:
        hub_cache.pull("mlxq-tests/no-such-model", heard.append)
    assert time.monotonic() - started < 10
    message = str(failed.value)
    assert "\n" not in message and message.startswith("cannot pull mlxq-tests/no-such-model:")
    assert [p.status for p in heard] == ["pulling manifest"]
    assert hub_cache.cached_models() == {}


def test_what_was_pulled_is_listed_and_removed(hf_cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "model.safetensors").write_bytes(b"x" * 1000)
    snapshot = cache_model(hf_cache, "org/name", source)
    assert hub_cache.cached_models() == {"org/name": snapshot}
    assert hub_cache.cached_path("org/name") == snapshot
    assert hub_cache.remove("org/name") >= 1000
    assert hub_cache.cached_models() == {} and hub_cache.remove("org/name") == 0


def test_only_repo_ids_are_pulled() -> None:
    with pytest.raises(hub_cache.PullFailed, match="not a Hugging Face repo id"):
        hub_cache.pull("../../etc")
