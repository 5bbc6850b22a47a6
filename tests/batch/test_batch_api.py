"""The OpenAI Batch API through the official ``openai`` client: the API served on a thread of
this process, Redis, and a real RQ worker on a thread whose engine makes one word per 0.1 s
(the answers are "w0 w1 ..."; tests/support/fleet.py)."""

import io
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis

from shared.keys import batch_lane_name, queue_name_for_model
from shared.settings import DEMO_MODEL_ID
from tests.faults.helpers import SLOW_ENGINE
from tests.support.processes import wait_until


def lines_file(n: int, max_tokens: int = 3, endpoint: str = "/v1/chat/completions") -> bytes:
    rows = []
    for i in range(n):
        if endpoint == "/v1/chat/completions":
            body = {
                "model": DEMO_MODEL_ID,
                "messages": [{"role": "user", "content": f"q{i}"}],
                "max_tokens": max_tokens,
            }
        else:
            body = {"model": DEMO_MODEL_ID, "prompt": f"p{i}", "max_tokens": max_tokens}
        rows.append({"custom_id": f"r{i}", "method": "POST", "url": endpoint, "body": body})
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def finished(client: openai.OpenAI, batch_id: str, timeout: float = 60) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout} s")


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def service(make_fleet) -> Iterator[tuple[openai.OpenAI, str]]:
    with make_fleet(engine=SLOW_ENGINE, worker_concurrency=4) as fleet:
        api = fleet.api
        yield openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0), api


def test_a_batch_runs_to_completion(service: tuple[openai.OpenAI, str]) -> None:
    client, _ = service
    upload = client.files.create(file=("in.jsonl", io.BytesIO(lines_file(12))), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes > 0
    assert client.files.retrieve(upload.id).filename == "in.jsonl"
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.status == "in_progress" and batch.request_counts.total == 12
    assert batch.expires_at == batch.created_at + 24 * 3600
    done = finished(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.completed == 12 and done.request_counts.failed == 0
    assert done.metadata == {"job": "nightly"} and done.error_file_id is None
    output = jsonl(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in output) == sorted(f"r{i}" for i in range(12))
    for row in output:
        assert row["error"] is None and row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == "w0 w1 w2"
        assert body["usage"]["completion_tokens"] == 3
    assert [b.id for b in client.batches.list()][0] == batch.id
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_lines_may_name_the_short_alias(service: tuple[openai.OpenAI, str]) -> None:
    """An alias is resolved when the batch is created; the driver runs the line on the model
    it stands for, and the answer carries the name the line used."""
    client, _ = service
    alias = DEMO_MODEL_ID.rsplit("/", 1)[1]
    content = lines_file(2).replace(f'"{DEMO_MODEL_ID}"'.encode(), f'"{alias}:latest"'.encode())
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = finished(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 2, done
    for row in jsonl(client, done.output_file_id):
        assert row["response"]["body"]["model"] == f"{alias}:latest"


def test_bad_lines_go_to_the_error_file(service: tuple[openai.OpenAI, str]) -> None:
    client, _ = service
    good = lines_file(2, endpoint="/v1/completions").decode()
    bad = [
        "not json",
        json.dumps({"custom_id": "wrong-url", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": DEMO_MODEL_ID, "prompt": "x"}}),
        json.dumps({"custom_id": "bad-body", "method": "POST", "url": "/v1/completions",
                    "body": {"model": DEMO_MODEL_ID, "prompt": "x", "temperature": 9}}),
        json.dumps({"custom_id": "streams", "method": "POST", "url": "/v1/completions",
                    "body": {"model": DEMO_MODEL_ID, "prompt": "x", "stream": True}}),
        json.dumps({"custom_id": "no-model", "method": "POST", "url": "/v1/completions",
                    "body": {"model": "nobody/serves-this", "prompt": "x"}}),
    ]  # fmt: skip
    content = (good + "\n".join(bad) + "\n").encode()
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
    )
    assert batch.request_counts.total == 7 and batch.request_counts.failed == 5
    assert batch.errors is not None and {e.line for e in batch.errors.data} == {3, 4, 5, 6, 7}
    done = finished(client, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 5)
    output = jsonl(client, done.output_file_id)
    assert {r["custom_id"] for r in output} == {"r0", "r1"}
    assert output[0]["response"]["body"]["object"] == "text_completion"
    errors = {r["custom_id"]: r["error"]["message"] for r in jsonl(client, done.error_file_id)}
    assert set(errors) == {None, "wrong-url", "bad-body", "streams", "no-model"}
    assert "not valid JSON" in errors[None]
    assert "url must be" in errors["wrong-url"]
    assert "temperature" in errors["bad-body"]
    assert "cannot stream" in errors["streams"]
    assert "not served" in errors["no-model"]


def test_what_fails_a_whole_batch_is_refused(service: tuple[openai.OpenAI, str]) -> None:
    client, api = service
    twice = lines_file(1) + lines_file(1)
    upload = client.files.create(file=("in.jsonl", twice), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="more than once"):
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    refused = {
        "endpoint": "/v1/moderations",  # not served here
        "completion_window": "soon",
        "unknown_field": 1,
    }
    for field, value in refused.items():
        body = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            field: value,
        }
        response = httpx.post(f"{api}/v1/batches", json=body)
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("in.jsonl", b"{}"), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


def test_files_are_listed_bounded_and_deleted(make_fleet) -> None:
    with make_fleet(workers=0, max_file_bytes=2048) as fleet:
        check_files_are_listed_bounded_and_deleted(fleet.api)


def check_files_are_listed_bounded_and_deleted(api: str) -> None:
    client = openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=("big.jsonl", b"x" * 3000), purpose="batch")
    assert too_large.value.status_code == 413
    kept = client.files.create(
        file=("a.jsonl", b"a\n"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert kept.expires_at == kept.created_at + 3600
    other = client.files.create(file=("b.jsonl", b"b\n"), purpose="batch")
    assert [f.id for f in client.files.list()] == [other.id, kept.id]
    assert client.files.content(kept.id).content == b"a\n"
    oldest_first = client.files.list(order="asc")
    assert [f.id for f in oldest_first] == [kept.id, other.id]
    assert [f.id for f in client.files.list(limit=1).data] == [other.id]  # newest first by default
    assert [f.id for f in client.files.list(after=other.id)] == [kept.id]
    assert [f.id for f in client.files.list(purpose="batch_output")] == []
    for path in ("/v1/files", "/v1/batches"):
        unknown = httpx.get(f"{api}{path}", params={"before": "x"})
        assert unknown.status_code == 400 and "before" in unknown.json()["error"]["message"]
    assert client.files.delete(kept.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(kept.id)
    assert [f.id for f in client.files.list()] == [other.id]


def test_cancel_stops_the_rest_and_keeps_what_finished(
    service: tuple[openai.OpenAI, str], redis_url: str
) -> None:
    client, _ = service
    upload = client.files.create(file=("in.jsonl", lines_file(40, 10)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2, 30, "answers"
    )
    cancelled_at = time.monotonic()
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = finished(client, batch.id, timeout=10)
    assert done.status == "cancelled" and time.monotonic() - cancelled_at < 5
    output = jsonl(client, done.output_file_id)
    assert len(output) == done.request_counts.completed >= 2
    assert done.request_counts.completed < 40
    lane = batch_lane_name(queue_name_for_model(DEMO_MODEL_ID), batch.id)
    connection = redis.Redis.from_url(redis_url)
    assert connection.llen(f"rq:queue:{lane}") == 0  # nothing left waiting
    queues = {q.decode() for q in connection.smembers("rq:queues")}
    assert f"rq:queue:{lane}" not in queues  # nor listed by rq info
    with pytest.raises(openai.BadRequestError, match="already ended"):
        client.batches.cancel(batch.id)


def test_interactive_requests_do_not_wait_for_a_batch(service: tuple[openai.OpenAI, str]) -> None:
    """4 slots, 2 for batch lines: 40 lines of 2 s each keep the batch lane full, and an
    interactive request still starts at once."""
    client, api = service
    upload = client.files.create(file=("in.jsonl", lines_file(40, 20)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    time.sleep(1.0)  # the batch's lines fill their slots
    for _ in range(3):
        sent = time.monotonic()
        response = httpx.post(f"{api}/ask", json={"question": "hi", "max_tokens": 3}, timeout=30)
        assert response.status_code == 200 and response.json()["answer"] == "w0 w1 w2"
        assert time.monotonic() - sent < 1.5  # 3 steps of 0.1 s, not 2 s behind a line
    assert client.batches.retrieve(batch.id).status == "in_progress"
    client.batches.cancel(batch.id)


def test_window_and_output_expiry_are_honoured(service: tuple[openai.OpenAI, str]) -> None:
    client, _ = service
    upload = client.files.create(file=("in.jsonl", lines_file(2)), purpose="batch")
    first = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="2h",  # type: ignore[arg-type]  # the client's type knows only 24h
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert first.expires_at == first.created_at + 2 * 3600
    done = finished(client, first.id)
    assert done.status == "completed" and done.output_file_id is not None
    output = client.files.retrieve(done.output_file_id)
    assert output.expires_at == output.created_at + 7200
    second = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert [b.id for b in client.batches.list(limit=1).data] == [second.id]
    assert [b.id for b in client.batches.list(after=second.id)][0] == first.id
    finished(client, second.id)


def test_a_second_batch_does_not_wait_behind_the_first(
    service: tuple[openai.OpenAI, str],
) -> None:
    """Each batch has its own lane and workers serve the lanes in turn. Before: a 30-line
    batch created 1 s after a 150-line one did nothing for 33 s (its lines queued behind the
    first batch's 64 in one lane)."""
    client, _ = service
    large = client.files.create(file=("a.jsonl", lines_file(60, 10)), purpose="batch")
    first = client.batches.create(
        input_file_id=large.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    time.sleep(1.0)
    small = client.files.create(file=("b.jsonl", lines_file(4, 10)), purpose="batch")
    started = time.monotonic()
    second = client.batches.create(
        input_file_id=small.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = finished(client, second.id, timeout=30)
    took = time.monotonic() - started
    assert done.status == "completed" and done.request_counts.completed == 4
    # two batch slots, lines of 1 s, in turn with the first batch: about 4 s (not 30)
    assert took < 10, took
    assert client.batches.retrieve(first.id).status == "in_progress"
    client.batches.cancel(first.id)
