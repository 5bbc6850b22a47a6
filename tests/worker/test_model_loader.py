"""What a loaded model takes is measured, and LoRA adapters share their base's weights
(worker/model_loader.py, worker/adapters.py): checked against MLX's own allocator."""

import gc
from pathlib import Path

import pytest

from shared.protocol import CatalogueEntry
from shared.settings import DEMO_MODEL_ID, Settings
from tests.support.model_folders import random_adapter
from tests.support.tiny_models import build_counting_model
from worker.catalogue import Item
from worker.model_loader import Bases, Loaded, load_item

MB = 10**6


@pytest.fixture(scope="module")
def demo_folder(cache_dir: Path) -> Path:
    from worker.demo_model import prepare_demo_model

    return prepare_demo_model(cache_dir)


def test_a_model_takes_what_it_measures_and_an_adapter_only_its_own_weights(
    demo_folder: Path, tmp_path: Path
) -> None:
    import mlx.core as mx

    settings = Settings(cpu_dequantize=True)  # the CPU backend's float32 expansion
    bases = Bases()
    base_item = Item(CatalogueEntry(model=DEMO_MODEL_ID), demo_folder)
    adapter_folder = random_adapter(demo_folder, tmp_path / "lora", seed=3)
    adapter_item = Item(
        CatalogueEntry(model="lora", kind="adapter"), adapter_folder, base_folder=demo_folder
    )
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    base = load_item(base_item, settings, lambda output: None, bases)
    assert isinstance(base, Loaded)
    base_bytes = bases.total_bytes()
    grown = mx.get_active_memory() - before
    assert 530 * MB < base_bytes < 545 * MB  # 134.5M parameters as float32
    assert grown == pytest.approx(base_bytes, rel=0.05)

    before = mx.get_active_memory()
    adapter = load_item(adapter_item, settings, lambda output: None, bases)
    assert isinstance(adapter, Loaded) and adapter.base == base.base
    grown = mx.get_active_memory() - before
    assert adapter.own_bytes < 2 * MB and grown < 5 * MB  # the base is not loaded again
    assert bases.shared_with(str(demo_folder)) == 2

    adapter.engine.stop()
    assert bases.release(str(demo_folder), "lora") == 0  # the base stays for the model
    base.engine.stop()
    assert bases.release(str(demo_folder), DEMO_MODEL_ID) == base_bytes


def test_a_draft_models_weights_count_as_the_models_own(tmp_path: Path) -> None:
    """MLXQ_DRAFT_MODEL is loaded beside each model it drafts for: its bytes are that
    model's, so the memory budget sees them (a tiny model drafting for itself)."""
    words = ["</s>", "a", "b", "c", "d"]
    folder = build_counting_model(tmp_path / "counting", words)
    item = Item(CatalogueEntry(model="counting"), folder)
    plain = load_item(item, Settings(model="counting"), lambda output: None, Bases())
    settings = Settings(model="counting", draft_model=str(folder))
    drafted = load_item(item, settings, lambda output: None, Bases())
    assert isinstance(plain, Loaded) and isinstance(drafted, Loaded)
    weights = Bases()
    assert plain.own_bytes == 0  # a model's own weights are its base's
    assert drafted.own_bytes > 0
    base = load_item(item, Settings(model="counting"), lambda output: None, weights)
    assert isinstance(base, Loaded)
    assert drafted.own_bytes == weights.total_bytes()  # the draft: a second copy of them
    for loaded in (plain, drafted, base):
        loaded.engine.stop()
