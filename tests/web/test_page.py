"""The web page at ``/``, in headless Chromium (Debian's, driven by Playwright), against a real
API and a real worker with the demo model: streaming chat and the fleet panel."""

import itertools
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium's own background connections make a closed network refuse it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records the text of the last answer bubble each time it changes, with the time, so the test
# sees the answer grow however fast the tokens come.
RECORD_ANSWER = """() => {
    window.answerSamples = [];
    new MutationObserver(() => {
        const bubbles = document.querySelectorAll("#conversation .bubble.assistant");
        const text = bubbles.length ? bubbles[bubbles.length - 1].textContent : "";
        const samples = window.answerSamples;
        if (!samples.length || samples[samples.length - 1].text !== text) {
            samples.push({ text, at: performance.now() });
        }
    }).observe(document.getElementById("conversation"),
               { childList: true, subtree: true, characterData: true });
}"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: scripts/setup.sh --with-browser installs it (make test does)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Checked before the (session-wide) model service starts, so a skip costs nothing."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not CHROMIUM.exists():
        _unavailable(f"Chromium is not installed at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, model_service: Service) -> Iterator:
    context = browser.new_context(base_url=model_service.base_url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    # Assertions wait as long as actions: a generation on a busy 2-core machine (the suite runs
    # on three pytest workers) can take longer than expect's default 5 s.
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    page.errors = []  # uncaught exceptions and console errors in the page
    page.on("pageerror", lambda error: page.errors.append(str(error)))

    def on_console(message) -> None:
        # The browser logs every non-2xx response; the page shows those errors itself.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            page.errors.append(message.text)

    page.on("console", on_console)
    try:
        yield page
    finally:
        context.close()


def test_chat_streams_the_answer_and_fleet_shows_the_worker(
    page, tmp_path: Path, model_service: Service
) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    page.fill("#temperature", "0")  # greedy: the demo model answers the same every time
    page.evaluate(RECORD_ANSWER)
    page.fill("#prompt", "What is the capital of France?")
    started = time.monotonic()
    page.click("#send")

    answer = page.locator("#conversation .bubble.assistant").last
    expect(answer).not_to_have_class("bubble assistant streaming", timeout=20_000)
    elapsed = time.monotonic() - started

    final = answer.text_content()
    assert "Paris" in final, final
    assert "error" not in (answer.get_attribute("class") or "")
    texts = [s["text"] for s in page.evaluate("window.answerSamples") if s["text"]]
    # It grew piece by piece: several partial texts, each a prefix of the next, before the last.
    assert len(texts) >= 2, texts
    assert texts[-1] == final
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts)), texts
    assert len(texts[0]) < len(final)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()

    workers = page.locator("#workers tbody tr", has_text=DEMO_MODEL_ID)
    expect(workers.first).to_be_visible()
    assert "/8" in workers.first.text_content()  # busy slots: running/MLXQ_WORKER_CONCURRENCY
    # speculative decoding's draft tokens: accepted of proposed, as /fleet counts them
    drafts = workers.first.locator("td").last.text_content()
    fleet = httpx.get(f"{model_service.base_url}/fleet", timeout=5).json()
    counts = next(w for w in fleet["workers"] if w["model"] == DEMO_MODEL_ID)
    assert re.fullmatch(r"-|\d+/\d+ \(\d+%\)", drafts), drafts
    if drafts != "-":
        assert int(drafts.split("/")[1].split()[0]) <= counts["draft_tokens_proposed"]
    expect(page.locator("#queues tbody tr", has_text=DEMO_MODEL_ID).first).to_be_visible()

    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert page.errors == []
    assert elapsed < 20


def test_stop_aborts_the_stream_and_errors_are_shown(page, model_service: Service) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    answer = page.locator("#conversation .bubble.assistant").last

    # A refused request (HTTP 400) shows the API's message, and the question can be resent.
    page.fill("#temperature", "5")
    page.fill("#prompt", "Hello")
    page.click("#send")
    expect(answer.locator(".note")).to_contain_text("Error: ")
    expect(answer).to_have_class("bubble assistant error")
    assert "temperature" in answer.text_content()

    page.fill("#temperature", "0")
    page.fill("#prompt", "Write a very long story about a dragon.")
    page.click("#send")
    expect(answer).not_to_have_text("")  # it is streaming
    page.click("#stop")
    expect(answer.locator(".note")).to_have_text("(stopped)")
    expect(page.locator("#send")).to_be_enabled()
    stopped_text = answer.text_content()
    # The server saw the client go away and stopped generating (the story would go on for
    # thousands of tokens): soon no slot is busy and the worker's token count stands still.
    _wait_until_idle(model_service.base_url)
    assert answer.text_content() == stopped_text
    assert page.errors == []


def _wait_until_idle(base_url: str, timeout: float = 10) -> None:
    def worker() -> dict:
        workers = httpx.get(f"{base_url}/fleet", timeout=5).json()["workers"]
        return next(w for w in workers if w["model"] == DEMO_MODEL_ID)

    deadline = time.monotonic() + timeout
    before = worker()
    while time.monotonic() < deadline:
        time.sleep(1.2)  # longer than a worker's heartbeat interval
        now = worker()
        if (
            before["running"] == now["running"] == 0
            and before["tokens_total"] == now["tokens_total"]
        ):
            return
        before = now
    raise AssertionError(f"the worker is still generating after the client stopped: {now}")


# What each chart draws: its series' labels and uPlot's data ([times, ...series values]).
CHART_DATA = """() => Object.fromEntries(Object.entries(window.mlxqCharts).map(([id, chart]) => [
    id, { labels: chart.plot.series.slice(1).map((s) => s.label), data: chart.plot.data },
]))"""


def _after(chart: dict, since: float, series: int = 0) -> list:
    """A chart's values of one series at the steps that began at or after ``since``."""
    times, values = chart["data"][0], chart["data"][1 + series]
    return [v for t, v in zip(times, values, strict=True) if t >= since and v is not None]


def test_charts_draw_the_fleet_history_and_follow_requests(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    expect(page.locator("#chart-tokens canvas")).to_be_visible()
    page.fill("#temperature", "0")
    sent_at = time.time() - 2  # the step the request falls in may begin up to 2 s earlier
    page.fill("#prompt", "Write a very long story about a dragon.")  # busy long enough to see
    page.click("#send")
    expect(page.locator("#conversation .bubble.assistant").last).not_to_have_text("")

    deadline = time.monotonic() + 20
    while True:
        charts = page.evaluate(CHART_DATA)
        tokens, busy = charts["chart-tokens"], charts["chart-busy"]
        latency, queues = charts["chart-latency"], charts["chart-queues"]
        worker = next(i for i, label in enumerate(tokens["labels"]) if DEMO_MODEL_ID in label)
        done = (
            any(v > 0 for v in _after(tokens, sent_at, worker))
            and any(v > 0 for v in _after(busy, sent_at, worker))
            and any(v > 0 for v in _after(latency, sent_at, 0))  # requests/s
            and _after(latency, sent_at, 1)  # a time to first token was measured
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    page.click("#stop")
    page.screenshot(path=str(tmp_path / "charts.png"), full_page=True)
    assert done, charts
    assert any(DEMO_MODEL_ID in label for label in queues["labels"]) or queues["labels"]
    assert len(tokens["data"][0]) >= 15 * 60 // 2  # the whole window, one point per step
    assert page.errors == []


# An answer that tries everything an HTML page could run, inside Markdown that must render.
HOSTILE_ANSWER = (
    "Here is code:\n\n```python\nprint('<b>hi</b>')\n```\n\n**bold** and a table:\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    '<img src=x onerror="window.pwned = 1"> <script>window.pwned = 2</script> '
    '<a href="javascript:window.pwned = 3">click</a> [also](javascript:window.pwned=4) '
    '<svg onload="window.pwned = 5"></svg><iframe srcdoc="<script>parent.pwned=6</script>">'
    "</iframe>"
)


def _sse(*chunks: object) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def test_answers_render_markdown_and_never_run_html(page, tmp_path: Path) -> None:
    """The answer comes from a stub of /v1/chat/completions: the page, not the model, is what
    is tested, and a model cannot be made to say exactly this."""
    from playwright.sync_api import expect

    sent: list[dict] = []

    def answer(route) -> None:
        sent.append(route.request.post_data_json)
        usage = {"prompt_tokens": 12, "completion_tokens": 5}
        usage["prompt_tokens_details"] = {"cached_tokens": 8}
        body = _sse(
            {"choices": [{"index": 0, "delta": {"content": HOSTILE_ANSWER}}]},
            {"choices": [], "usage": usage},
        )
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page.route("**/v1/chat/completions", answer)
    page.goto("/")
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    page.fill("#prompt", "Show me")
    page.click("#send")
    bubble = page.locator("#conversation .bubble.assistant").last
    expect(bubble.locator(".note")).to_have_text(
        "12 prompt tokens (8 from the prefix cache) · 5 answer tokens"
    )
    assert sent[0]["stream_options"] == {"include_usage": True}

    for _ in range(2):  # as streamed, then as restored from localStorage after a reload
        expect(bubble.locator("pre code")).to_have_text("print('<b>hi</b>')")
        expect(bubble.locator("strong")).to_have_text("bold")
        expect(bubble.locator("table td").first).to_have_text("1")
        assert bubble.locator("img, script, svg, iframe, b").count() == 0
        hrefs = bubble.locator("a").evaluate_all("links => links.map((a) => a.href)")
        assert not any(href.startswith("javascript:") for href in hrefs), hrefs
        page.screenshot(path=str(tmp_path / "markdown.png"), full_page=True)
        bubble.locator("a", has_text="click").click()
        page.wait_for_timeout(500)  # an image's onerror would have fired by now
        assert page.evaluate("window.pwned") is None
        page.reload()
        expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    assert page.errors == []


def test_reload_keeps_the_conversation_and_temperature_starts_from_the_model(page) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    # The demo model's generation_config.json suggests 0.2 (worker/demo_model.py).
    expect(page.locator("#temperature")).to_have_value("0.2")
    page.fill("#temperature", "0")
    page.fill("#prompt", "What is the capital of France?")
    page.click("#send")
    answer = page.locator("#conversation .bubble.assistant").last
    expect(answer.locator(".note")).to_contain_text("answer tokens")
    first_answer = answer.text_content()
    assert "Paris" in first_answer

    page.reload()
    bubbles = page.locator("#conversation .bubble")
    expect(bubbles).to_have_count(2)
    assert bubbles.nth(0).text_content() == "What is the capital of France?"
    assert bubbles.nth(1).text_content() == first_answer  # the note (token counts) included

    with page.expect_request("**/v1/chat/completions") as request:
        page.fill("#prompt", "And of Italy?")
        page.click("#send")
    messages = request.value.post_data_json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    expect(bubbles).to_have_count(4)
    expect(page.locator("#conversation .bubble.assistant").last).not_to_have_class(
        "bubble assistant streaming"
    )
    page.click("#clear")
    page.reload()
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    expect(bubbles).to_have_count(0)
    assert page.errors == []


def test_the_page_offers_chat_models_only_and_tells_queues_apart(page) -> None:
    """The model list and the fleet come from stubs: an embedding model (its workers say
    so) is not offered for chat; each of a model's queues shows its lane."""
    from playwright.sync_api import expect

    def models(route) -> None:
        data = [
            {"id": "org/minilm", "object": "model", "capabilities": ["embedding"]},
            {"id": DEMO_MODEL_ID, "object": "model", "capabilities": ["completion", "tools"]},
            {"id": "org/untold", "object": "model"},  # a worker that does not say: offered
        ]
        route.fulfill(status=200, json={"object": "list", "data": data})

    def fleet(route) -> None:
        queue = "mlxq-smol"
        queues = [
            {"queue": queue, "lane": "shared", "queued": 3, "failed": 1, "refused": 2},
            {"queue": f"{queue}:w:w1", "lane": "worker w1", "queued": 1, "failed": 0},
            {"queue": f"{queue}:batch:b7", "lane": "batch b7", "queued": 5, "failed": 0},
        ]
        for q in queues:
            q["model"] = DEMO_MODEL_ID
        route.fulfill(status=200, json={"workers": [], "queues": queues})

    page.route("**/v1/models", models)
    page.route("**/fleet", fleet)
    page.goto("/")
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    offered = page.locator("#model option").evaluate_all("options => options.map(o => o.value)")
    assert offered == [DEMO_MODEL_ID, "org/untold"]
    rows = page.locator("#queues tbody tr")
    expect(rows).to_have_count(3)
    lanes = [rows.nth(i).locator("td").nth(1).text_content() for i in range(3)]
    assert lanes == ["shared", "worker w1", "batch b7"]
    assert rows.nth(0).locator("td").nth(4).text_content() == "2"  # refused, apart
    assert page.errors == []
