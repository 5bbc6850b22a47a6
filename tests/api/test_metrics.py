"""``GET /metrics`` as vLLM's users read it, in-process with a stand-in worker (it takes the
job from the queue and answers with the events a real worker sends), and the Grafana
dashboard shipped in docs/grafana, whose queries must name only metrics /metrics exposes."""

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
import redis

from shared import protocol
from shared.keys import queue_name_for_model
from shared.rq_bridge import queue_key
from shared.schemas import Choice, DoneEvent, StartedEvent
from tests.support.app import InProcessApi

MODEL = "org/metered"
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "mlxq-fleet.json"


def _heartbeat(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    stats = protocol.WorkerStats(
        model=MODEL,
        queues=[queue_name_for_model(MODEL)],
        slots=4,
        kv_cache_bytes=250,
        kv_cache_budget_bytes=1000,
        prefix_cache_bytes=300,
        prefix_cache_budget_bytes=400,
    )
    with client.pipeline() as pipeline:
        protocol.add_heartbeat(pipeline, "stand-in", stats, ttl_s=60, running=[])
        pipeline.execute()


async def _answer_one_job(redis_url: str, done: DoneEvent, delay_s: float) -> None:
    """Take the one job waiting in MODEL's queue and answer it as a worker would: started,
    then (``delay_s`` later) done."""
    client = redis.Redis.from_url(redis_url)
    key = queue_key(queue_name_for_model(MODEL))
    for _ in range(200):
        job_id = client.lpop(key)
        if job_id is not None:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("no job was enqueued")
    job = job_id.decode()
    protocol.publish_event(client, job, StartedEvent(seq=0, worker="stand-in"), 60)
    await asyncio.sleep(delay_s)
    protocol.publish_event(client, job, done.model_copy(update={"seq": 1}), 60)


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
async def api(make_api, redis_url: str):
    _heartbeat(redis_url)
    async with make_api(model=MODEL) as api:
        yield api


async def test_a_non_streamed_answer_is_timed_counted_and_labelled(
    api: InProcessApi, redis_url: str
) -> None:
    choices = [
        Choice(index=0, text="a b c d e", finish_reason="length", completion_tokens=5),
        Choice(index=1, text="a", finish_reason="stop", completion_tokens=1),
    ]
    done = DoneEvent(seq=1, choices=choices, prompt_tokens=12, first_token_s=0.5, last_token_s=0.9)
    body = {"model": MODEL, "prompt": "hi", "n": 2, "max_tokens": 5}
    sent = asyncio.create_task(api.client.post("/v1/completions", json=body))
    await _answer_one_job(redis_url, done, delay_s=0.2)
    assert (await sent).status_code == 200

    samples = _samples((await api.client.get("/metrics")).text)
    model = f'model="{MODEL}"'
    assert samples[f"mlxq_prompt_tokens_total{{{model}}}"] == 12
    assert samples[f"mlxq_generated_tokens_total{{{model}}}"] == 6
    assert samples[f'mlxq_request_finish_reasons_total{{{model},reason="length"}}'] == 1
    assert samples[f'mlxq_request_finish_reasons_total{{{model},reason="stop"}}'] == 1
    # Not streamed, yet timed: the queue wait the API saw plus the worker's 0.5 s.
    assert samples[f"mlxq_time_to_first_token_seconds_count{{{model}}}"] == 1
    ttft = samples[f"mlxq_time_to_first_token_seconds_sum{{{model}}}"]
    assert 0.5 <= ttft < 1.5
    assert samples[f'mlxq_time_to_first_token_seconds_bucket{{le="0.25",{model}}}'] == 0
    # (0.9 - 0.5) s over the 4 gaps between the longest choice's 5 tokens.
    assert samples[f"mlxq_inter_token_latency_seconds_sum{{{model}}}"] == pytest.approx(0.1)
    e2e = samples[f"mlxq_e2e_request_latency_seconds_sum{{{model}}}"]
    assert 0.2 <= e2e < 2
    assert samples[f"mlxq_queue_wait_seconds_count{{{model}}}"] == 1
    worker = f'host="",model="{MODEL}",worker="stand-in"'
    assert samples[f"mlxq_kv_cache_usage_ratio{{{worker}}}"] == 0.25
    assert samples[f"mlxq_prefix_cache_usage_ratio{{{worker}}}"] == 0.75


async def test_errors_are_counted_by_code(make_api) -> None:
    async with make_api(model=MODEL, queue_timeout=0.2) as api:  # no worker takes it
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert (await api.client.post("/v1/chat/completions", json=body)).status_code == 503
        samples = _samples((await api.client.get("/metrics")).text)
    assert samples[f'mlxq_request_errors_total{{code="no_worker",model="{MODEL}"}}'] == 1


def _exposed_names(text: str) -> set[str]:
    """Every series name /metrics can carry: its samples', and a histogram's parts even
    before it has observed anything."""
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line}
    names = {n for n in names if not n.startswith("#")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


async def test_the_grafana_dashboard_queries_only_exposed_metrics(
    api: InProcessApi, redis_url: str
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = _exposed_names((await api.client.get("/metrics")).text)
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"]]
    named = {name for query in queries for name in re.findall(r"\bmlxq_\w+", query)}
    assert len(dashboard["panels"]) >= 12 and len(named) >= 15
    assert named <= exposed, sorted(named - exposed)
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"] and panel["gridPos"]["w"] > 0


async def test_metrics_answers_while_nothing_ran(api_client: httpx.AsyncClient) -> None:
    text = (await api_client.get("/metrics")).text
    assert "# TYPE mlxq_time_to_first_token_seconds histogram" in text
    assert "# TYPE mlxq_refused_jobs gauge" in text
