"""The monitoring pages in a real browser (headless Debian Chromium via Playwright, a real uvicorn server):
the customer page's trend, "Segment moves & cohorts" and "Model health", from a store holding three runs.
Any console or page error fails the test (see ``test_dashboard_browser``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from tests.serving.test_dashboard_browser import _free_port, _wait_until_up, browser, page, sign_in

pytestmark = pytest.mark.browser
__all__ = ["browser", "page"]  # fixtures used by these tests


@pytest.fixture(scope="module")
def monitored(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(server URL, a customer scored at every run): the trained home with a store scored at three dates."""
    from features.loading import load_dataset
    from features.model_store import connect
    from features.settings import get_settings
    from features.snapshots import observed_until
    from serving.batch import PublishRequest, publish_scores
    from serving.monitor import HistoryPolicy
    from serving.store import SqliteScoreStore

    connect(get_settings())
    store_file = tmp_path_factory.mktemp("monitored") / "scores.db"
    store = SqliteScoreStore(store_file)
    end = observed_until(load_dataset(trained.data))
    for months in (2, 1, 0):
        as_of = end - pd.DateOffset(months=months)
        publish_scores(
            PublishRequest(
                trained.data,
                "models:/churnguard@champion",
                as_of=as_of,
                store=store,
                history=HistoryPolicy(),
                threads=1,
            )
        )
    ids = [set(store.snapshot(r["run_id"])["customer_id"]) for r in store.runs()]
    customer = sorted(set.intersection(*ids))[0]
    env = {
        **os.environ,
        "CHURNGUARD_HOME": str(trained.home),
        "CHURNGUARD_POLL_SECONDS": "0",
        "CHURNGUARD_STORE_PATH": str(store_file),
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if not _wait_until_up(base, process, 90):
            pytest.fail("the dashboard server did not start")
        yield base, customer
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(store_file.parent, ignore_errors=True)


def test_customer_page_shows_the_risk_and_value_trend(
    page: Any, monitored: tuple[str, str], trained: Any
) -> None:
    base, customer = monitored
    sign_in(page, base, trained.api_key, f"/customers/{customer}")
    trend = page.locator("#trend")
    assert trend.get_by_role("heading", name="Risk and value trend").is_visible()
    assert page.locator("svg#risk-trend, svg[aria-labelledby^='risk-trend']").count() == 1
    assert trend.locator("circle").count() >= 3  # one point per run at least
    assert page.locator("#segment-moves").is_visible()


def test_segment_moves_and_cohorts_page(page: Any, monitored: tuple[str, str], trained: Any) -> None:
    base, _ = monitored
    sign_in(page, base, trained.api_key, "/movements")
    assert page.get_by_role("link", name="Segment moves & cohorts").get_attribute("aria-current") == "page"
    assert page.locator("#moved-customers").inner_text().strip() != ""
    assert "%" in page.locator("#loyal-share").inner_text()
    assert page.locator("#cohort-table tbody tr").count() >= 1
    assert page.locator("svg[aria-labelledby^='loyal-share'] circle").count() == 3


def test_model_health_page(page: Any, monitored: tuple[str, str], trained: Any) -> None:
    base, _ = monitored
    sign_in(page, base, trained.api_key, "/")
    page.get_by_role("link", name="Model health").click()
    page.wait_for_url(base + "/model-health")
    assert page.locator("#health-status").is_visible()
    assert "Reference:" in page.locator("#drift-reference").inner_text()
    rows = page.locator("#drift-table tbody tr")
    assert rows.count() > 10  # every feature, the outputs and the event columns
    assert page.get_by_role("heading", name="Realised performance").is_visible()
