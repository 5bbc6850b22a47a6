"""A worker's catalogue (worker/catalogue.py): what MLXQ_MODELS names, found on disk, with
what its files say, and the models this worker cannot serve, with the reason."""

import json
import logging
import os
from pathlib import Path

import pytest

from shared.errors import ErrorCode
from shared.settings import DEMO_MODEL_ID, Settings
from tests.support.hf_cache import cache_model
from tests.support.model_folders import broken_model, copy_model, random_adapter
from worker.catalogue import Catalogue

MB = 10**6


@pytest.fixture(scope="module")
def demo_folder(cache_dir: Path) -> Path:
    from worker.demo_model import prepare_demo_model

    return prepare_demo_model(cache_dir)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def catalogue(models: str, budget: int = 0, expand: bool = False) -> Catalogue:
    found = Catalogue(Settings(models=models), budget, expand_quantized=expand)
    found.scan()
    return found


def test_folders_adapters_and_the_hugging_face_cache_with_what_their_files_say(
    tmp_path: Path, demo_folder: Path, hf_cache: Path
) -> None:
    copy_model(demo_folder, tmp_path / "mine" / "copy")
    random_adapter(demo_folder, tmp_path / "mine" / "lora", seed=1)
    cache_model(hf_cache, "mlx-community/Smol-4bit", demo_folder)
    broken_model(demo_folder, hf_cache / "unknown-source")
    cache_model(hf_cache, "someone/not-for-mlx", hf_cache / "unknown-source")
    found = catalogue(f"{tmp_path / 'mine'},hf-cache")
    entries = {e.model: e for e in found.entries()}
    copy, lora = str(tmp_path / "mine" / "copy"), str(tmp_path / "mine" / "lora")
    assert list(entries) == [DEMO_MODEL_ID, copy, lora, "mlx-community/Smol-4bit"]
    assert "someone/not-for-mlx" not in entries  # an architecture mlx-lm does not know
    facts = entries[copy]
    assert (facts.kind, facts.family, facts.quantization, facts.context_length) == (
        "chat",
        "llama",
        "Q4",
        8192,
    )
    assert facts.disk_bytes == sum(f.stat().st_size for f in demo_folder.glob("*.safetensors"))
    assert entries[lora].kind == "adapter" and entries[lora].base == str(demo_folder)
    adapter_bytes = (tmp_path / "mine" / "lora" / "adapters.safetensors").stat().st_size
    assert entries[lora].memory_bytes == pytest.approx(facts.memory_bytes + adapter_bytes, 0.01)


def test_the_parameter_count_from_the_headers_is_mlx_lms(demo_folder: Path) -> None:
    from mlx_lm.utils import get_total_parameters, load_model

    model, _ = load_model(demo_folder, lazy=True)
    assert catalogue("").entries()[0].parameter_count == get_total_parameters(model)


def test_on_the_cpu_a_quantized_model_is_counted_as_float32(demo_folder: Path) -> None:
    quantized = catalogue("").entries()[0].memory_bytes or 0
    expanded = catalogue("", expand=True).entries()[0].memory_bytes or 0
    assert 90 * MB < quantized < 100 * MB and 530 * MB < expanded < 545 * MB


def test_a_model_larger_than_the_budget_is_listed_with_the_reason(
    tmp_path: Path, demo_folder: Path
) -> None:
    copy_model(demo_folder, tmp_path / "copy")
    entry = catalogue(str(tmp_path / "copy"), budget=50 * MB).entries()[1]
    assert entry.refusal == ErrorCode.MODEL_TOO_LARGE
    assert "98 MB" in (entry.refused or "") and "50 MB (MLXQ_MEMORY_BUDGET)" in (
        entry.refused or ""
    )


def test_a_failed_load_is_refused_until_the_model_changes_on_disk(
    tmp_path: Path, demo_folder: Path
) -> None:
    folder = broken_model(demo_folder, tmp_path / "broken")
    found = catalogue(str(folder))
    found.refuse(str(folder), ErrorCode.MODEL_LOAD_FAILED, "no-such-arch")
    found.scan()
    assert found.entries()[1].refused == "no-such-arch"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    os.utime(folder / "config.json", ns=(1, 10**18))
    found.scan()
    assert found.entries()[1].servable


def test_a_repo_that_was_never_pulled_is_left_out_saying_how_to_pull_it(
    hf_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        found = catalogue("mlx-community/never-pulled")
    assert found.models() == [DEMO_MODEL_ID]
    assert "mlxq pull mlx-community/never-pulled" in caplog.text
