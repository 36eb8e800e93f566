"""The campaigns page in a real browser (headless Debian Chromium via Playwright, a real uvicorn server):
a campaign planned from the CLI shows as planned, the generator replays the plan, and once
``campaign report`` has run the measured results show on the same page. Any console or page error fails
the test (see ``test_dashboard_browser``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.serving.test_campaigns import PERIOD, _scores
from tests.serving.test_dashboard_browser import _free_port, _wait_until_up, browser, page, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["browser", "page"]  # fixtures used by these tests

CUSTOMERS = 600


@dataclass(frozen=True)
class Site:
    base: str
    key: str
    home: Path
    log: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A serving home whose store holds scores of a small world, an API key, and a server on it."""
    from features.synthetic import generate_dataset
    from serving.keys import KeyStore
    from serving.store import SqliteScoreStore

    root = tmp_path_factory.mktemp("campaigns-browser")
    home = root / "home"
    before = root / "before"
    generate_dataset(before, CUSTOMERS, seed=7, scenario=PERIOD)
    SqliteScoreStore(home / "scores.db").replace_all(_scores(before), {"as_of": "2025-03-01"})
    _, key = KeyStore(home / "api_keys.json").create("browser")
    env = {
        **os.environ,
        "CHURNGUARD_HOME": str(home),
        "CHURNGUARD_POLL_SECONDS": "0",
        "CHURNGUARD_MODEL_URI": str(root / "no-model"),  # campaigns need no model
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
        yield Site(base, key, home, root / "campaigns.csv")
    finally:
        process.terminate()
        process.wait(10)


def _churnguard(site: Site, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    from serving.campaign_cli import app
    from serving.settings import get_serving_settings

    monkeypatch.setenv("CHURNGUARD_HOME", str(site.home))
    get_serving_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["campaign", *args])
    finally:
        get_serving_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_simulate_report_shows_in_the_browser(
    page: Any, site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from features.synthetic import generate_dataset
    from features.synthetic.campaigns import CampaignSetup

    _churnguard(
        site, monkeypatch,
        "plan", "--campaign", "browser_spring", "--action", "service_recovery_call", "--count", "200",
        "--holdout", "0.5", "--log", str(site.log),
    )  # fmt: skip
    sign_in(page, site.base, site.key, "/campaigns")
    section = page.get_by_role("region", name="browser_spring", exact=True)
    assert section.get_by_text("to contact with").is_visible()
    assert section.get_by_text("Not measured yet").is_visible()

    log = pd.read_csv(site.log, parse_dates=["assigned_at"])
    after = tmp_path / "after"
    generate_dataset(after, CUSTOMERS, seed=7, scenario=replace(PERIOD, campaigns=CampaignSetup(logs=(log,))))
    output = _churnguard(site, monkeypatch, "report", "--data", str(after))
    assert "service_recovery_call" in output

    page.reload()
    results = page.get_by_role("region", name="Results of browser_spring")
    assert results.is_visible()
    assert results.get_by_role("columnheader", name="Incremental retention").is_visible()
    row = results.locator("tbody tr", has=page.locator("code", has_text="service_recovery_call"))
    treated, control = (int(n.replace(",", "")) for n in row.locator("td").nth(0).inner_text().split(" / "))
    assert treated + control == len(log)
    assert "%" in row.locator("td").nth(2).inner_text()  # the incremental retention with its interval
    assert page.get_by_text("Not measured yet").count() == 0
