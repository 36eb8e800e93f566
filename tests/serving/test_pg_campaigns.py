"""Campaigns follow the serving store: planned and reported through the CLI with a PostgreSQL store URL,
they are served by the API and the dashboard of any replica; the SQLite and PostgreSQL backends answer
alike, record a campaign all or nothing, and let the primary key refuse the second of two racing planners."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.errors import ConfigError
from features.synthetic import generate_dataset
from features.synthetic.campaigns import CampaignSetup
from serving.campaign_store import CampaignStore, SqliteCampaigns
from serving.campaigns import measure_campaign
from serving.keys import KeyStore
from tests.pg import fresh_database, opened_store
from tests.serving.test_campaigns import PERIOD, _outcomes, _scores

pytest.importorskip("psycopg_pool")
from serving.pg_auth import PostgresKeys
from serving.pg_campaigns import PostgresCampaigns
from serving.pg_store import PostgresScoreStore
from serving.store import SqliteScoreStore

UNREACHABLE = "postgresql://postgres@127.0.0.1:9/none"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresScoreStore]:
    with opened_store(pg_url) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
def campaigns(request: pytest.FixtureRequest, tmp_path: Path) -> CampaignStore:
    if request.param == "sqlite":
        return SqliteCampaigns(SqliteScoreStore(tmp_path / "scores.db"))
    return PostgresCampaigns(request.getfixturevalue("pg_store"))


def _contacts(name: str, n: int, first: int = 0) -> pd.DataFrame:
    ids = np.arange(first, first + n)
    value = ids * 0.5
    value[0] = np.nan  # a figure the plan could not compute: null in every answer
    return pd.DataFrame(
        {
            "campaign": name,
            "customer_id": [f"C{i:06d}" for i in ids],
            "action": "loyalty_discount",
            "group": np.where(ids % 5 == 0, "control", "treatment"),
            "assignment_probability": np.where(ids % 5 == 0, 0.2, 0.8),
            "assigned_at": pd.Timestamp("2025-03-01"),
            "expected_net_value": value,
            "why": "ranked",
        }
    )


def _plan(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "campaign": name,
        "action": "loyalty_discount",
        "assigned_at": pd.Timestamp("2025-03-01"),
        **extra,
    }


def _without_times(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k not in ("created_at", "reported_at", "computed_at")} for e in entries
    ]


# ------------------------------------------------------------------------------ the two backends alike


def test_both_backends_keep_and_page_a_campaign_alike(pg_store: PostgresScoreStore, tmp_path: Path) -> None:
    name = "parity"
    report = replace(measure_campaign(_outcomes(40, 40, 0.7, 0.6), 90), campaign=name)
    answers = []
    for store in (SqliteCampaigns(SqliteScoreStore(tmp_path / "scores.db")), PostgresCampaigns(pg_store)):
        assert store.stored_contacts(name) is None and store.stored_report(name) is None
        store.record_campaign(_plan(name), _contacts(name, 25))
        store.save_reports([report])
        pages = [store.stored_contacts(name, limit=10, offset=o) for o in (0, 10, 20)]
        answers.append((store.list_campaigns(), pages, store.stored_report(name)))
    (lite_list, lite_pages, lite_report), (pg_list, pg_pages, pg_report) = answers
    listed = next(e for e in pg_list if e["campaign"] == name)
    assert listed["plan"]["assigned_at"] == "2025-03-01 00:00:00" and listed["reported_at"] is not None
    assert _without_times(lite_list) == [e for e in _without_times(pg_list) if e["campaign"] == name]
    assert pg_pages == lite_pages
    ids = [c["customer_id"] for page in pg_pages if page for c in page["contacts"]]
    assert ids == [f"C{i:06d}" for i in range(25)] and pg_pages[0] and pg_pages[0]["total"] == 25
    assert pg_pages[0]["contacts"][0]["expected_net_value"] is None
    assert pg_pages[0]["contacts"][0]["group"] == "control"
    assert pg_report is not None and lite_report is not None
    assert _without_times([pg_report]) == _without_times([lite_report])
    assert pg_report["arms"][0]["treatment"] == 40


def test_a_newer_report_replaces_the_older_one(campaigns: CampaignStore) -> None:
    first = replace(measure_campaign(_outcomes(40, 40, 0.7, 0.6), 90), campaign="measured_twice")
    campaigns.save_reports([first])
    campaigns.save_reports([replace(first, horizon_days=30)])
    stored = campaigns.stored_report("measured_twice")
    assert stored is not None and stored["horizon_days"] == 30
    # measured without being planned here: listed, with no plan
    (entry,) = [e for e in campaigns.list_campaigns() if e["campaign"] == "measured_twice"]
    assert entry["plan"] is None and entry["reported_at"] == stored["computed_at"]


# ------------------------------------------------------------------------- a name once, all or nothing


def test_a_recorded_name_is_refused_and_the_first_campaign_is_kept(campaigns: CampaignStore) -> None:
    campaigns.record_campaign(_plan("spring"), _contacts("spring", 30))
    with pytest.raises(ConfigError, match="'spring' is already recorded: choose another name"):
        campaigns.record_campaign(_plan("spring"), _contacts("spring", 50, first=1000))
    kept = campaigns.stored_contacts("spring", limit=100)
    assert kept is not None and kept["total"] == 30
    assert {c["customer_id"] for c in kept["contacts"]} == {f"C{i:06d}" for i in range(30)}


def test_a_recording_that_fails_midway_leaves_nothing_and_the_name_free(campaigns: CampaignStore) -> None:
    broken = _contacts("halfway", 40)
    broken = pd.concat([broken, broken.tail(1)], ignore_index=True)  # a contact row the table refuses
    with pytest.raises(Exception):  # noqa: B017 - the database's own error: what matters is what is left
        campaigns.record_campaign(_plan("halfway"), broken)
    assert "halfway" not in {e["campaign"] for e in campaigns.list_campaigns()}
    assert campaigns.stored_contacts("halfway") is None
    campaigns.record_campaign(_plan("halfway"), _contacts("halfway", 40))  # the name was never taken
    again = campaigns.stored_contacts("halfway")
    assert again is not None and again["total"] == 40


def test_two_planners_racing_for_one_name_record_one_campaign(
    campaigns: CampaignStore, tmp_path: Path, pg_url: str
) -> None:
    """Two hosts planning the same name at once: one campaign is recorded, the other planner is told so
    (not a database error) and has written nothing."""
    name = "race"
    opened: list[PostgresScoreStore] = []

    def host() -> CampaignStore:  # a planner of its own: its own connection or pool
        if isinstance(campaigns, SqliteCampaigns):
            return SqliteCampaigns(SqliteScoreStore(campaigns.path))
        opened.append(PostgresScoreStore(pg_url).open())
        return PostgresCampaigns(opened[-1])

    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def plan(who: int, store: CampaignStore) -> None:
        contacts = _contacts(name, 4000, first=who * 10_000)
        barrier.wait()
        try:
            store.record_campaign(_plan(name, planner=who), contacts)
            outcomes[who] = "recorded"
        except ConfigError as exc:
            outcomes[who] = str(exc)
        except Exception as exc:  # a database error reaching the user is what this test forbids
            outcomes[who] = f"error: {exc!r}"

    threads = [threading.Thread(target=plan, args=(who, host())) for who in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for store in opened:
            store.close()
    assert sorted(outcomes.values()) == [
        "a campaign named 'race' is already recorded: choose another name",
        "recorded",
    ], outcomes
    winner = next(who for who, outcome in outcomes.items() if outcome == "recorded")
    kept = campaigns.stored_contacts(name, limit=1)
    assert kept is not None and kept["total"] == 4000
    assert kept["contacts"][0]["customer_id"] == f"C{winner * 10_000:06d}"  # only the winner's rows
    (entry,) = [e for e in campaigns.list_campaigns() if e["campaign"] == name]
    assert entry["plan"]["planner"] == winner


# ------------------------------------------------------- the CLI plans on one host, every replica serves it


@pytest.fixture
def pg_home(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A planner's home whose settings name the PostgreSQL store (the scores of a small world in it)."""
    from serving.settings import get_serving_settings

    home = tmp_path / "planner"
    monkeypatch.setenv("CHURNGUARD_HOME", str(home))
    monkeypatch.setenv("CHURNGUARD_STORE_URL", pg_url)
    get_serving_settings.cache_clear()
    yield home
    get_serving_settings.cache_clear()


def _sign_in(client: TestClient, key: str) -> None:
    token = client.get("/sign-in").text.split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/sign-in", data={"api_key": key, "csrf_token": token, "next": "/campaigns"})


def test_a_campaign_planned_and_reported_on_postgres_is_served_by_another_replica(
    pg_home: Path, pg_store: PostgresScoreStore, tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.campaign_cli import app
    from serving.settings import ServingSettings

    before, after = tmp_path / "before", tmp_path / "after"
    generate_dataset(before, 400, seed=7, scenario=PERIOD)
    pg_store.replace_all(_scores(before), {"as_of": "2025-03-01"})
    _, key = KeyStore(backend=PostgresKeys(pg_store)).create("replica")
    runner = CliRunner()
    log, contacts_csv = tmp_path / "campaigns.csv", tmp_path / "contacts.csv"
    plan_args = ["campaign", "plan", "--campaign", "pg_spring", "--action", "service_recovery_call"]
    planned = runner.invoke(app, [*plan_args, "--count", "120", "--holdout", "0.5", "--log", str(log)])
    assert planned.exit_code == 0, planned.output
    assigned = pd.read_csv(log, parse_dates=["assigned_at"])
    generate_dataset(after, 400, seed=7, scenario=replace(PERIOD, campaigns=CampaignSetup(logs=(assigned,))))
    reported = runner.invoke(app, ["campaign", "report", "--data", str(after)])
    assert reported.exit_code == 0, reported.output
    assert not (pg_home / "scores.db").exists()  # nothing went to the planner's local SQLite file

    # the same name again from the CLI (a new log, so the store decides): one clear line, no file written
    other_log = tmp_path / "other.csv"
    again = runner.invoke(
        app, [*plan_args, "--count", "10", "--log", str(other_log), "--out", str(contacts_csv)]
    )
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert "'pg_spring' is already recorded: choose another name" in again.output
    assert not other_log.exists() and not contacts_csv.exists()

    replica = ServingSettings(home=tmp_path / "replica", model_uri=str(tmp_path / "no-model"))
    with TestClient(create_app(replica)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        listed = client.get("/v1/campaigns")
        assert listed.status_code == 200, listed.text
        (entry,) = [c for c in listed.json()["campaigns"] if c["campaign"] == "pg_spring"]
        assert entry["plan"]["action"] == "service_recovery_call" and entry["reported_at"] is not None
        first = client.get("/v1/campaigns/pg_spring/contacts?limit=50").json()
        rest = client.get("/v1/campaigns/pg_spring/contacts?limit=1000&offset=50").json()
        assert first["total"] == rest["total"] == len(assigned) and len(first["contacts"]) == 50
        ids = [c["customer_id"] for c in first["contacts"] + rest["contacts"]]
        assert ids == sorted(assigned["customer_id"].astype(str))  # every assignment once, in id order
        assert {c["group"] for c in first["contacts"] + rest["contacts"]} == {"treatment", "control"}
        report = client.get("/v1/campaigns/pg_spring/report")
        assert report.status_code == 200, report.text
        (arm,) = report.json()["arms"]
        assert arm["action"] == "service_recovery_call" and arm["treatment"] + arm["control"] == len(assigned)
        assert client.get("/v1/campaigns/nope/contacts").status_code == 404
        _sign_in(client, key)
        page = client.get("/campaigns")
        assert page.status_code == 200 and "pg_spring" in page.text and "Incremental retention" in page.text
    assert not (tmp_path / "replica" / "scores.db").exists()


# ------------------------------------------------------------------------------- the database is gone


def test_an_unreachable_store_is_one_line_from_the_cli(
    pg_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.campaign_cli import app
    from serving.settings import get_serving_settings

    data = tmp_path / "data"
    generate_dataset(data, 300, seed=3, scenario=PERIOD)
    pd.DataFrame(
        {
            "customer_id": pd.read_parquet(data / "customers.parquet")["customer_id"].head(50),
            "campaign": "gone",
            "action": "loyalty_discount",
            "assigned_at": "2025-03-01",
            "group": "treatment",
            "assignment_probability": 0.5,
        }
    ).to_csv(data / "campaigns.csv", index=False)
    monkeypatch.setenv("CHURNGUARD_STORE_URL", UNREACHABLE)
    get_serving_settings.cache_clear()
    runner = CliRunner()
    for args in (
        ["plan", "--campaign", "gone", "--action", "loyalty_discount", "--count", "5"],
        ["report", "--data", str(data)],
    ):
        result = runner.invoke(app, ["campaign", *args])
        assert result.exit_code == 2, result.output
        assert "the PostgreSQL serving store is unreachable" in result.output
        assert "CHURNGUARD_STORE_URL" in result.output and "Traceback" not in result.output


def test_an_unreachable_store_is_a_503_from_the_api_and_the_dashboard(
    pg_url: str, pg_store: PostgresScoreStore, tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.settings import ServingSettings

    _, key = KeyStore(backend=PostgresKeys(pg_store)).create("outage")
    settings = ServingSettings(home=tmp_path / "home", store_url=pg_url, model_uri=str(tmp_path / "no-model"))
    with TestClient(create_app(settings)) as client:
        _sign_in(client, key)
        state = client.app.state.churnguard  # type: ignore[attr-defined]
        gone = PostgresScoreStore(UNREACHABLE, timeout=1)
        state.campaigns = PostgresCampaigns(gone)  # the database stops answering this replica
        headers = {"Authorization": f"Bearer {key}"}
        for path in ("/v1/campaigns", "/v1/campaigns/any/report", "/v1/campaigns/any/contacts"):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 503, (path, answer.text)
            assert "127.0.0.1" not in answer.text  # the cause stays in the server's log
        assert client.get("/campaigns").status_code == 503
