"""The dashboard in a real browser: headless Chromium (Playwright) against a real uvicorn server process.

Sign in, filter and export, open a customer, run a what-if, sign out. Any console error or page error
fails the test; a failing test leaves a screenshot in ``test-artifacts/``. Needs Debian's Chromium
(``make browser``): Playwright cannot download its own browsers here.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.test_dashboard import write_old_store

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(base: str, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.25)
    return False


def _serve(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """A uvicorn process serving the app on a free loopback port with ``env``; stopped afterwards."""
    for _attempt in range(3):  # a port taken between choosing and binding: try another
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", "1", "--log-level", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        if _wait_until_up(base, process, 90):
            break
        process.terminate()
        process.wait(10)
    else:
        pytest.fail(f"the dashboard server did not start:\n{log_path.read_text()[-3000:]}")
    try:
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _env(trained: Any, **extra: str) -> dict[str, str]:
    return {**os.environ, "CHURNGUARD_HOME": str(trained.home), "CHURNGUARD_POLL_SECONDS": "0", **extra}


@pytest.fixture(scope="module")
def server(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the trained home."""
    yield from _serve(_env(trained), tmp_path_factory.mktemp("server") / "uvicorn.log")


@pytest.fixture(scope="module")
def old_server(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app serving a store written before lifetime value existed (the current model loaded)."""
    folder = tmp_path_factory.mktemp("old-store")
    store = write_old_store(trained.home / "scores.db", folder / "scores.db")
    yield from _serve(_env(trained, CHURNGUARD_STORE_PATH=str(store)), folder / "uvicorn.log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium) and try again")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _open_page(request: pytest.FixtureRequest, browser: Any, width: int, height: int) -> Iterator[Any]:
    """A fresh context and page; console and page errors fail the test; a failure saves a screenshot."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    failed_before = request.session.testsfailed
    try:
        yield page
    finally:
        if request.session.testsfailed > failed_before or errors:
            ARTIFACTS.mkdir(exist_ok=True)
            try:
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the test's own failure matters more
                errors.append(f"(no screenshot: {exc})")
        context.close()
    if errors:
        pytest.fail("browser reported errors:\n" + "\n".join(errors))


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:
    yield from _open_page(request, browser, 1366, 850)


@pytest.fixture
def phone(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:
    yield from _open_page(request, browser, 390, 844)


def sign_in(page: Any, base: str, key: str, path: str = "/") -> None:
    page.goto(base + path)
    assert "/sign-in" in page.url
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + path)


def test_sign_in_filter_and_export(page: Any, server: str, trained: Any) -> None:
    sign_in(page, server, trained.api_key, "/customers")
    assert page.get_by_role("heading", name="Customers").is_visible()
    page.get_by_label("Risk tier").select_option("high")
    page.get_by_label("Minimum lifetime value").fill("50")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**/customers?*risk_tier=high*")
    total = int(page.get_attribute("#result-count", "data-total") or -1)
    shown = page.locator("table.customers tbody tr")
    assert total > 0 and shown.count() == min(total, 50)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    with open(download.value.path(), newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == total
    assert all(r["risk_tier"] == "high" and float(r["clv"]) >= 50 for r in rows)
    terms = page.locator("#value-terms").inner_text()
    assert "Lifetime value: discounted, to the end of the relationship" in terms
    assert "revenue basis: no economics config" in terms
    page.get_by_role("link", name="Lifetime value").click()  # sort by lifetime value, highest first
    page.wait_for_url("**sort=clv*")
    values = [
        float(v.replace(",", ""))
        for v in page.locator("table.customers tbody tr td:nth-child(4)").all_inner_texts()
    ]
    assert values == sorted(values, reverse=True) and len(values) == min(total, 50)


def test_customer_reasons_action_and_what_if(page: Any, server: str, trained: Any) -> None:
    sign_in(page, server, trained.api_key, "/customers")
    first = page.locator("table.customers tbody tr th a").first
    customer = first.inner_text()
    first.click()
    page.wait_for_url(f"**/customers/{customer}")
    assert page.locator("#reasons li").count() >= 1
    assert page.locator("svg[aria-labelledby^='reasons-chart-title']").is_visible()
    assert page.locator("#action-label").inner_text().strip()
    value = page.locator("#lifetime-value")
    assert value.get_by_role("heading", name="Lifetime value").is_visible()
    terms = value.locator("#value-terms").inner_text()
    assert (
        "discounted, to the end of the relationship" in terms
        and "revenue basis: no economics config" in terms
    )
    shown = dict(
        zip(value.locator("dt").all_inner_texts(), value.locator("dd").all_inner_texts(), strict=True)
    )
    residual = float(shown["Residual value (to the end of the relationship)"].replace(",", ""))
    next_year = float(shown["Value next year (next 365 days, discounted)"].replace(",", ""))
    beyond = shown["Value beyond one year"]
    assert float(beyond.split()[0].replace(",", "")) == pytest.approx(residual - next_year, abs=0.011)
    assert "of the lifetime value" in beyond
    assert shown["P(alive) (still a customer, BG/NBD)"].endswith("%")
    assert page.locator("#lifetime-value-figure").inner_text().replace(",", "") == f"{residual:.2f}"
    before = page.locator("#churn-probability").inner_text()
    page.get_by_label("Days since the last purchase", exact=True).fill("400")
    page.get_by_text("All other features").click()
    page.get_by_label("Unresolved complaints in the last 90 days", exact=True).fill("4")
    page.get_by_role("button", name="Score again").click()
    figures = page.locator("#whatif-figures")
    figures.wait_for()
    after = figures.locator("dd").first.inner_text()
    assert after.split()[0] != before and "no change" not in after
    rescored = figures.inner_text()
    assert "Lifetime value (discounted, to the end of the relationship)" in rescored
    assert "NaN" not in rescored and "undefined" not in rescored and "[object Object]" not in rescored
    assert page.locator("#whatif-result .reason-list li").count() >= 1
    assert "Action:" in page.locator("#whatif-result").inner_text()
    assert page.locator("#churn-probability").inner_text() == before  # no reload: the stored score stays


def test_keyboard_and_phone_width(phone: Any, server: str, trained: Any) -> None:
    sign_in(phone, server, trained.api_key)
    phone.keyboard.press("Tab")
    assert phone.evaluate("document.activeElement.textContent") == "Skip to main content"
    for path in ("/", "/customers", "/customers?risk_tier=high"):
        phone.goto(server + path)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390, path
    phone.locator("table.customers tbody tr th a").first.click()
    phone.locator("#reasons").wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390


def test_sign_out_locks_out(page: Any, server: str, trained: Any) -> None:
    sign_in(page, server, trained.api_key)
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    body = {"records": [{"features": {"recency_days": 10}}]}
    headers = {"X-Churnguard-CSRF": csrf}
    assert page.request.post(server + "/v1/score", data=body, headers=headers).status == 200
    copied = [c for c in page.context.cookies() if c["name"] == "churnguard_session"]
    assert copied
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in?signed_out=1")
    assert page.get_by_text("You are signed out").is_visible()
    page.goto(server + "/customers")
    assert "/sign-in" in page.url and page.get_by_label("API key").is_visible()
    assert page.request.post(server + "/v1/score", data=body, headers=headers).status == 401
    page.context.add_cookies(copied)  # the cookie copied before signing out, put back: ended on the server
    page.goto(server + "/customers")
    assert "/sign-in" in page.url and "reason=ended" in page.url
    assert page.request.get(server + "/customers.csv", max_redirects=0).status == 303
    assert page.request.post(server + "/v1/score", data=body, headers=headers).status == 401


def test_a_store_written_before_lifetime_value(page: Any, old_server: str, trained: Any) -> None:
    """Scores kept from before lifetime value existed: the pages say "not available" (never the old 90-day
    forecast as a lifetime value) and the what-if, which scores with the current model, still works."""
    sign_in(page, old_server, trained.api_key, "/customers")
    assert "not available in these scores" in page.locator("#value-terms").inner_text()
    page.locator("table.customers tbody tr th a").first.click()
    value = page.locator("#lifetime-value")
    value.wait_for()
    assert "not available for this score" in value.inner_text()
    assert page.locator("#lifetime-value-figure").inner_text() == "not available"
    assert page.locator("#expected-revenue").inner_text().replace(",", "").replace(".", "").isdigit()
    page.get_by_role("button", name="Score again").click()
    figures = page.locator("#whatif-figures")
    figures.wait_for()
    rescored = figures.inner_text()
    assert "Lifetime value (discounted, to the end of the relationship)" in rescored
    assert "NaN" not in rescored and "undefined" not in rescored
