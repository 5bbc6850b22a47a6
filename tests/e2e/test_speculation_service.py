"""Speculative decoding through the whole service: the official OpenAI client turns it off with
``extra_body`` and gets the same text; mlxq's own ``done`` event reports each request's drafts;
the worker's counts reach /fleet, /metrics and ``mlxq status``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COPY = (
    "Write this shopping list again, adding milk at the end: apples, oranges, bananas, "
    "pears, grapes, plums, cherries, lemons."
)


def test_openai_client_turns_it_off_and_gets_the_same_text(model_service: Service) -> None:
    client = openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused")

    def answer(**extra: object) -> str:
        completion = client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=[{"role": "user", "content": COPY}],
            max_tokens=48,
            temperature=0,
            extra_body=extra or None,
        )
        return completion.choices[0].message.content or ""

    assert answer(speculative=False) == answer()
    with pytest.raises(openai.BadRequestError, match="speculative"):
        answer(speculative="sometimes")  # a value it cannot mean is refused, not ignored


def done_event(service: Service, **fields: object) -> dict:
    body = {"question": COPY, "max_tokens": 48, "stream": True, **fields}
    with httpx.stream("POST", f"{service.base_url}/ask", json=body, timeout=300) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    event = lines.index("event: done")
    return json.loads(lines[event + 1].removeprefix("data: "))


def test_done_event_reports_drafts_and_the_fleet_counts_them(model_service: Service) -> None:
    done = done_event(model_service)
    speculation = done["speculation"]
    assert speculation["accepted"] > 0
    assert speculation["acceptance_rate"] == round(
        speculation["accepted"] / speculation["proposed"], 4
    )
    assert "speculation" not in done_event(model_service, speculative=False)

    def worker() -> dict:
        workers = httpx.get(f"{model_service.base_url}/fleet", timeout=5).json()["workers"]
        return next(w for w in workers if w["model"] == DEMO_MODEL_ID)

    wait_until(lambda: worker()["draft_tokens_accepted"] >= speculation["accepted"], 5, "counts")
    counts = worker()
    metrics = httpx.get(f"{model_service.base_url}/metrics", timeout=5).text
    (accepted,) = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("mlxq_draft_tokens_accepted_total{") and counts["name"] in line
    ]
    assert accepted == counts["draft_tokens_accepted"]
    status = subprocess.run(
        [sys.executable, "-m", "mlxq_cli", "status"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLXQ_REDIS_URL": model_service.redis_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0, status.stderr
    assert "drafts kept" in status.stdout
    assert f"/{counts['draft_tokens_proposed']} (" in status.stdout
