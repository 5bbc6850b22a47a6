"""The web page's usage panel, in headless Chromium, against a real API process and a worker
whose echo engine answers at once: a user's key shows its own usage, an admin key every
key's."""

from collections.abc import Iterator

import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.keys import make_key
from tests.support.processes import Processes, wait_until
from tests.web.test_page import CHROMIUM_ARGS, chromium  # noqa: F401  (a fixture)


@pytest.fixture
def page_on(chromium, processes: Processes, mlxq_env: dict[str, str]) -> Iterator:  # noqa: F811
    from playwright.sync_api import sync_playwright

    processes.worker({**mlxq_env, "MLXQ_ENGINE": "echo"})
    api = processes.api(mlxq_env)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(base_url=api).new_page()
            page.set_default_timeout(20_000)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            browser.close()


def use_key(page, secret: str) -> None:
    page.fill("#api-key", secret)
    page.dispatch_event("#api-key", "change")


def test_the_page_shows_the_usage_of_the_key_it_holds(page_on, redis_url: str) -> None:
    from playwright.sync_api import expect

    alice = make_key(redis_url, "alice", rpm=100)
    bob = make_key(redis_url, "bob")
    ops = make_key(redis_url, "ops", admin=True)
    page = page_on
    # An API process looks keys up again within a second or so: made keys close it then.
    wait_until(lambda: _closed(page), 10, "the API to see the keys")
    page.goto("/")
    expect(page.locator("#usage-key")).to_have_class("error-text")  # a 401 until a key is given
    use_key(page, alice)
    expect(page.locator("#model")).to_have_value(DEMO_MODEL_ID)
    page.fill("#prompt", "one two three")
    page.click("#send")
    expect(page.locator("#conversation .bubble.assistant .note")).to_contain_text("prompt tokens")
    rows = page.locator("#usage tbody tr")
    expect(page.locator("#usage-key")).to_contain_text("Key alice (100 requests/min)")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td")).to_have_text(["alice", "1", "3", "3", "0"])

    use_key(page, bob)  # another user sees nothing of alice's
    expect(page.locator("#usage-key")).to_contain_text("Key bob (no limits)")
    expect(rows.first).to_have_text("nothing answered yet")

    use_key(page, ops)
    expect(page.locator("#usage-key")).to_contain_text("every key's usage")
    expect(rows.first.locator("td").first).to_have_text("alice")
    assert page.errors == []


def _closed(page) -> bool:
    """The API answers /usage 401 without a key (it has seen that keys were made)."""
    return page.request.get("/usage").status == 401
