"""The web page at ``/``, in headless Chromium (Debian's, driven by Playwright), against a real
API and a real worker with the demo model: streaming chat and the fleet panel."""

import itertools
import os
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


def test_chat_streams_the_answer_and_fleet_shows_the_worker(page, tmp_path: Path) -> None:
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


def test_charts_draw_the_fleet_history_and_follow_requests(page) -> None:
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
    assert done, charts
    assert any(DEMO_MODEL_ID in label for label in queues["labels"]) or queues["labels"]
    assert len(tokens["data"][0]) >= 15 * 60 // 2  # the whole window, one point per step
    assert page.errors == []
