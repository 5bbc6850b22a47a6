"""While a streamed request waits, the connection is kept alive; an error after the stream
began arrives as its final event. The API is served on a thread of this process, with no
worker (tests/support/fleet.py)."""

import time

import httpx

from shared.settings import DEMO_MODEL_ID


def read_events(response: httpx.Response) -> list[tuple[float, str]]:
    started = time.monotonic()
    events, buffer = [], ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            events.append((time.monotonic() - started, block))
    return events


def test_waiting_stream_sends_keepalives_then_the_error(make_fleet) -> None:
    body = {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with make_fleet(workers=0, queue_timeout=2.5, stream_keepalive=0.5) as fleet:
        url = f"{fleet.api}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=30) as response:
            assert response.status_code == 200
            events = read_events(response)

    keepalives = [at for at, block in events if block == ": keep-alive"]
    assert len(keepalives) >= 3
    assert keepalives[0] < 1.5  # the first one comes before the queue deadline
    last = events[-1][1]
    assert last.startswith('data: {"error"')
    assert '"code":"no_worker"' in last


def test_ask_stream_reports_a_late_error_as_an_error_event(make_fleet) -> None:
    with (
        make_fleet(workers=0, queue_timeout=1, stream_keepalive=0.3) as fleet,
        httpx.stream(
            "POST", f"{fleet.api}/ask", json={"question": "hi", "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        events = read_events(response)
    assert events[-1][1].startswith("event: error\ndata: {")
    assert '"code":"no_worker"' in events[-1][1]


def test_unknown_model_is_refused_at_once(make_fleet) -> None:
    with make_fleet(workers=0, queue_timeout=30) as fleet:
        started = time.monotonic()
        response = httpx.post(
            f"{fleet.api}/v1/chat/completions",
            json={"model": "other/model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert time.monotonic() - started < 2
