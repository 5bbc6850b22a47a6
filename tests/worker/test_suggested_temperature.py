"""The temperature a model's makers suggest, read from its generation_config.json, for the
web page to start from."""

import json
from pathlib import Path

import pytest

from worker.demo_model import SUGGESTED_SAMPLING, _suggest_sampling
from worker.model import suggested_temperature


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"temperature": 0.6, "top_p": 0.95}, 0.6),
        ({"do_sample": False, "temperature": 0.7}, 0.0),
        ({"bos_token_id": 1}, None),
        ({"temperature": "hot"}, None),
        ({"temperature": 7}, None),  # outside what the API accepts: not a suggestion to use
    ],
)
def test_read_from_generation_config(tmp_path: Path, config: dict, expected) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    assert suggested_temperature(tmp_path) == expected


def test_no_generation_config(tmp_path: Path) -> None:
    assert suggested_temperature(tmp_path) is None


def test_a_demo_folder_prepared_before_gets_the_suggestion(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    _suggest_sampling(tmp_path)
    config = json.loads((tmp_path / "generation_config.json").read_text())
    assert config == {"eos_token_id": 2, **SUGGESTED_SAMPLING}
    assert suggested_temperature(tmp_path) == SUGGESTED_SAMPLING["temperature"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generation_config.json"]
