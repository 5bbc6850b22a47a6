"""Each key's limits and usage, on the API in this process with a real worker process whose
echo engine answers at once (the answer is the question: its usage is its words)."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import redis

from shared.settings import DEMO_MODEL_ID
from tests.support.keys import bearer, make_key
from tests.support.processes import ROOT, Processes

pytestmark = pytest.mark.anyio


@pytest.fixture
def echo_worker(processes: Processes, mlxq_env: dict[str, str]) -> None:
    processes.worker({**mlxq_env, "MLXQ_ENGINE": "echo"})


def chat(words: int = 3, **fields: object) -> dict:
    text = " ".join(f"w{i}" for i in range(words))
    return {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": text}], **fields}


def seconds(duration: str) -> float:
    """OpenAI's reset duration ("20ms", "1.5s", "6m0s") in seconds."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?|(\d+)ms", duration)
    assert match is not None, duration
    minutes, secs, millis = match.groups()
    if millis is not None:
        return int(millis) / 1000
    return int(minutes or 0) * 60 + float(secs or 0)


def anthropic(words: int = 3) -> dict:
    return {**chat(words), "max_tokens": 64}


def ollama(words: int = 3) -> dict:
    return {**chat(words), "stream": False}


async def test_requests_per_minute_in_each_dialect(make_api, redis_url: str, echo_worker) -> None:
    alice = bearer(make_key(redis_url, "alice", rpm=2))
    bob = bearer(make_key(redis_url, "bob", rpm=2))
    async with make_api() as api:
        client = api.client
        admitted = [await client.post("/v1/chat/completions", headers=alice, json=chat())]
        admitted.append(await client.post("/v1/chat/completions", headers=alice, json=chat()))
        openai = await client.post("/v1/chat/completions", headers=alice, json=chat())
        claude = await client.post("/v1/messages", headers=alice, json=anthropic())
        ollama_chat = await client.post("/api/chat", headers=alice, json=ollama())
        ask = await client.post("/ask", headers=alice, json={"question": "hi"})
        other = await client.post("/v1/chat/completions", headers=bob, json=chat())

    assert [r.status_code for r in admitted] == [200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in admitted] == ["1", "0"]
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "2"
    # Full again 30 s after the first (one request per 30 s), 60 s after the second (less
    # the time the requests took: the first request of a key new to the worker waits up
    # to its next look at the keys, a second).
    resets = [seconds(r.headers["x-ratelimit-reset-requests"]) for r in admitted]
    assert 28 <= resets[0] <= 30 and 57 <= resets[1] <= 60, resets

    for refused in (openai, claude, ollama_chat, ask):
        assert refused.status_code == 429, refused.text
        assert 29 <= int(refused.headers["retry-after"]) <= 30  # one request per 30 s
    error = openai.json()["error"]
    assert error["code"] == "rate_limited" and "2 requests per minute" in error["message"]
    assert openai.headers["x-ratelimit-limit-requests"] == "2"
    assert openai.headers["x-ratelimit-remaining-requests"] == "0"
    assert claude.json()["type"] == "error"
    assert claude.json()["error"]["type"] == "rate_limit_error"
    assert claude.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert claude.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", claude.headers["anthropic-ratelimit-requests-reset"]
    )
    assert "x-ratelimit-limit-requests" not in claude.headers
    assert (
        set(ollama_chat.json()) == {"error"}
        and "requests per minute" in ollama_chat.json()["error"]
    )
    assert ask.json()["code"] == "rate_limited"
    assert other.status_code == 200  # bob's limit is his own


async def test_a_stream_frees_its_slot_when_it_ends_and_carries_the_headers(
    make_api, redis_url: str, echo_worker
) -> None:
    solo = bearer(make_key(redis_url, "solo", rpm=10, max_concurrent=1))
    body = chat(5, stream=True)
    async with make_api() as api:
        streams = []
        for _ in range(3):  # one after another: each frees its slot as it ends
            async with api.client.stream(
                "POST", "/v1/chat/completions", headers=solo, json=body
            ) as response:
                streams.append((response.status_code, response.headers, await response.aread()))
    assert [status for status, _, _ in streams] == [200, 200, 200]
    assert all(b"data: [DONE]" in text for _, _, text in streams)
    assert [h["x-ratelimit-remaining-requests"] for _, h, _ in streams] == ["9", "8", "7"]


async def test_requests_come_back_one_interval_at_a_time_not_on_the_minute(
    make_api, redis_url: str, echo_worker
) -> None:
    """GCRA: 20 per minute is a burst of 20, then one every 3 s; nothing resets at once."""
    carol = bearer(make_key(redis_url, "carol", rpm=20))
    async with make_api() as api:
        burst = [
            (await api.client.post("/ask", headers=carol, json={"question": "hi"})).status_code
            for _ in range(20)
        ]
        refused = await api.client.post("/ask", headers=carol, json={"question": "hi"})
        time.sleep(int(refused.headers["retry-after"]) + 0.1)
        later = [
            (await api.client.post("/ask", headers=carol, json={"question": "hi"})).status_code
            for _ in range(2)
        ]
    assert burst == [200] * 20
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) <= 3
    assert later == [200, 429]


async def test_tokens_per_minute_count_the_answers_real_usage(
    make_api, redis_url: str, echo_worker
) -> None:
    """100 tokens a minute; each answer uses 20 prompt + 20 completion tokens. Three are
    admitted (the third while 20 tokens are left, and takes the bucket 20 below empty); the
    fourth waits until the bucket holds a token again: 21 tokens at 100 a minute, 13 s."""
    tina = bearer(make_key(redis_url, "tina", tpm=100))
    async with make_api() as api:
        answers = [
            await api.client.post("/v1/chat/completions", headers=tina, json=chat(20))
            for _ in range(3)
        ]
        refused = await api.client.post("/v1/chat/completions", headers=tina, json=chat(20))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()["usage"]["total_tokens"] for a in answers} == {40}
    assert [a.headers["x-ratelimit-remaining-tokens"] for a in answers] == ["100", "60", "20"]
    assert answers[0].headers["x-ratelimit-limit-tokens"] == "100"
    assert refused.status_code == 429, refused.text
    assert "100 tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 11 <= int(refused.headers["retry-after"]) <= 13


def _sum(usages: list[tuple[int, int]]) -> dict[str, int]:
    return {
        "requests": len(usages),
        "prompt_tokens": sum(p for p, _ in usages),
        "completion_tokens": sum(c for _, c in usages),
    }


async def test_usage_per_key_adds_up_to_the_answers_usage(
    make_api, redis_url: str, mlxq_env: dict[str, str], echo_worker
) -> None:
    keys = {
        "alice": bearer(make_key(redis_url, "alice")),
        "bob": bearer(make_key(redis_url, "bob")),
    }
    ops = bearer(make_key(redis_url, "ops", admin=True))
    seen: dict[str, list[tuple[int, int]]] = {"alice": [], "bob": []}
    async with make_api() as api:
        client = api.client
        for n, (name, headers) in enumerate([*keys.items()] * 2):
            plain = await client.post("/v1/chat/completions", headers=headers, json=chat(3 + n))
            usage = plain.json()["usage"]
            seen[name].append((usage["prompt_tokens"], usage["completion_tokens"]))
            body = chat(5 + n, stream=True, stream_options={"include_usage": True})
            streamed = await client.post("/v1/chat/completions", headers=headers, json=body)
            last = [line for line in streamed.text.splitlines() if line.startswith("data: {")][-1]
            usage = json.loads(last.removeprefix("data: "))["usage"]
            seen[name].append((usage["prompt_tokens"], usage["completion_tokens"]))
            claude = (await client.post("/v1/messages", headers=headers, json=anthropic(4))).json()
            seen[name].append((claude["usage"]["input_tokens"], claude["usage"]["output_tokens"]))
            local = (await client.post("/api/chat", headers=headers, json=ollama(2 + n))).json()
            seen[name].append((local["prompt_eval_count"], local["eval_count"]))
        own = (await client.get("/usage", headers=keys["alice"])).json()
        everyone = (await client.get("/usage", headers=ops)).json()
        metrics = (await client.get("/metrics", headers=ops)).text
        user_metrics = await client.get("/metrics", headers=keys["alice"])

    expected = {name: _sum(usages) for name, usages in seen.items()}
    assert expected["alice"]["prompt_tokens"] > 0
    figures = ("requests", "prompt_tokens", "completion_tokens")
    assert [t["key"] for t in own["totals"]] == ["alice"] and own["admin"] is False
    assert {f: own["totals"][0][f] for f in figures} == expected["alice"]
    for total in everyone["totals"]:
        assert {f: total[f] for f in figures} == expected[total["key"]]
    assert {t["key"] for t in everyone["totals"]} == {"alice", "bob"}
    for name, sums in expected.items():
        assert f'mlxq_key_requests_total{{key="{name}"}} {sums["requests"]}.0' in metrics
        prompt = f'mlxq_key_tokens_total{{key="{name}",kind="prompt"}} {sums["prompt_tokens"]}.0'
        assert prompt in metrics
    assert user_metrics.status_code == 403

    printed = subprocess.run(
        [sys.executable, "-m", "mlxq_cli", "usage"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **mlxq_env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for name, sums in expected.items():
        total_row = [line.split() for line in printed.splitlines() if f" {name} " in line][-1]
        assert total_row[2:5] == [str(sums[f]) for f in figures], printed
    assert redis.Redis.from_url(redis_url).ttl(f"mlxq:usage:{everyone['until']}") > 300 * 86400
