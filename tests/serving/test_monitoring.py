"""Monitoring from the score history: snapshots per run, retention, the history API, drift on a world whose
change date is known, no alert on a stable world, realised performance against a hand computation from the
raw tables, and the retrain signal of ``churnguard monitor``."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import brier_score_loss, roc_auc_score

from features.loading import load_dataset
from features.model_store import connect, load_model
from features.settings import get_settings
from features.snapshots import observed_until
from serving.batch import PublishRequest, publish_scores
from serving.monitor import HistoryPolicy, MonitorLimits, measure_matured_runs, model_health, run_summary
from serving.store import SqliteScoreStore
from tests.conftest import Trained, clear_settings_caches


def _score(
    data: Path, store: SqliteScoreStore, dates: list[pd.Timestamp], model: str, keep: int = 36
) -> list[int]:
    """Score ``data`` at each date into ``store`` with history kept; the run ids."""
    runs = []
    for as_of in dates:
        published = publish_scores(
            PublishRequest(data, model, as_of=as_of, store=store, history=HistoryPolicy(keep), threads=1)
        )
        assert published.batch.run_id is not None
        runs.append(published.batch.run_id)
    return runs


def _monthly(end: pd.Timestamp, count: int) -> list[pd.Timestamp]:
    return [end - pd.DateOffset(months=count - 1 - k) for k in range(count)]


@pytest.fixture(scope="module")
def history(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> SqliteScoreStore:
    """The trained world scored at three monthly dates, the last horizon's worth before the data's end."""
    connect(get_settings())
    end = observed_until(load_dataset(trained.data))
    store = SqliteScoreStore(tmp_path_factory.mktemp("history") / "scores.db")
    _score(trained.data, store, _monthly(end - pd.Timedelta(days=100), 3), "models:/churnguard@champion")
    return store


def test_scoring_at_several_dates_builds_a_history(history: SqliteScoreStore) -> None:
    runs = history.runs()
    assert [r["as_of"] for r in runs] == sorted(r["as_of"] for r in runs) and len(runs) == 3
    assert (
        runs[0]["summary"]["previous_run"] is None and runs[2]["summary"]["previous_run"] == runs[1]["run_id"]
    )
    last = history.snapshot(runs[-1]["run_id"])
    assert len(last) == runs[-1]["customers"] > 100
    customer = last["customer_id"].iloc[0]
    trend = history.history(customer)
    assert [t["as_of"] for t in trend] == [
        r["as_of"] for r in runs if customer in set(history.snapshot(r["run_id"])["customer_id"])
    ]
    assert trend[-1]["churn_probability"] == pytest.approx(last["churn_probability"].iloc[0])
    assert trend[-1]["expected_revenue"] == pytest.approx(last["expected_revenue"].iloc[0])


def test_moves_between_segments_add_up(history: SqliteScoreStore) -> None:
    first, second = (history.snapshot(r["run_id"]) for r in history.runs()[:2])
    both = first.merge(second, on="customer_id", suffixes=("_a", "_b"))
    summary = history.runs()[1]["summary"]
    assert summary["moved_customers"] == int((both["segment_a"] != both["segment_b"]).sum())
    assert sum(m["customers"] for m in summary["moves"]) == summary["moved_customers"]
    assert summary["new_customers"] == len(set(second["customer_id"]) - set(first["customer_id"]))
    value = second["clv"]
    assert value.notna().all()  # the champion has a lifetime-value model: every customer is valued
    loyal = value[second["segment"].str.endswith("loyal")].sum() / value.sum()
    assert summary["loyal_clv_share"] == pytest.approx(loyal, abs=1e-6)
    assert summary["clv"] == pytest.approx(value.sum(), rel=1e-9)
    cohorts = summary["cohorts"]
    assert cohorts and sum(c["active"] for c in cohorts) <= len(second)


def test_runs_of_a_model_without_lifetime_value_sum_no_revenue_as_value() -> None:
    """A model trained without a lifetime-value model scores no clv: the run's value figures are unknown
    (None, shown as a dash), never the revenue forecast over the horizon summed as if it were value."""
    snapshot = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "segment": ["loyal", "at_risk_valuable", "loyal"],
            "churn_probability": [0.1, 0.7, 0.2],
            "expected_revenue": [120.0, 80.0, 40.0],
            "clv": [np.nan, np.nan, np.nan],
            "value_at_risk": [12.0, 56.0, 8.0],
        }
    )
    previous = snapshot.assign(segment=["loyal", "loyal", "loyal"])
    summary = run_summary(snapshot, previous, {"medium": 0.3, "high": 0.6})
    assert summary["clv"] is None and summary["loyal_clv_share"] is None and summary["moved_clv"] is None
    assert [s["clv"] for s in summary["segments"]] == [None, None]
    assert summary["moves"] == [{"from": "loyal", "to": "at_risk_valuable", "customers": 1, "clv": None}]
    json.dumps(summary, allow_nan=False)  # stored as JSON: no NaN anywhere

    valued = run_summary(snapshot.assign(clv=[1000.0, np.nan, 500.0]), None, {"medium": 0.3})
    assert valued["clv"] == 1500.0 and valued["loyal_clv_share"] == 1.0  # known values only


def test_retention_keeps_the_newest_runs(trained: Trained, tmp_path: Path) -> None:
    connect(get_settings())
    store = SqliteScoreStore(tmp_path / "scores.db")
    end = observed_until(load_dataset(trained.data))
    ids = _score(trained.data, store, _monthly(end, 3), "models:/churnguard@champion", keep=2)
    assert [r["run_id"] for r in store.runs()] == ids[1:]
    assert store.snapshot(ids[0]).empty and not store.snapshot(ids[2]).empty
    assert set(store.reports("drift")) == set(ids[1:])


def test_the_history_route_needs_a_key_and_returns_the_trend(
    trained: Trained, history: SqliteScoreStore
) -> None:
    from serving.app import create_app
    from serving.settings import ServingSettings

    customer = history.snapshot(history.runs()[-1]["run_id"])["customer_id"].iloc[0]
    with TestClient(create_app(ServingSettings(store_path=history.path))) as client:
        assert client.get(f"/v1/customers/{customer}/history").status_code == 401
        headers = {"Authorization": f"Bearer {trained.api_key}"}
        body = client.get(f"/v1/customers/{customer}/history", headers=headers).json()
        assert body["customer_id"] == customer and len(body["runs"]) >= 1
        assert client.get("/v1/customers/nobody-here/history", headers=headers).status_code == 404
        health = client.get("/v1/model/health", headers=headers).json()
        assert health["runs"] == 3 and health["drift"]["reference"]["source"] in (
            "training",
            "training_cutoffs",
        )
        metrics = client.get("/metrics", headers=headers).text
        assert "churnguard_drift_psi{column=" in metrics and "churnguard_drift_status" in metrics


def _hand_labels(data: Path, as_of: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """Churned and future spend from the raw files, written out without the feature engine: churned = no
    purchase (a row with a non-negative amount) in [as_of, as_of + horizon) or a cancellation in it."""
    tx = pd.read_parquet(data / "transactions.parquet")
    cancellations = pd.read_parquet(data / "cancellations.parquet")
    end = as_of + pd.Timedelta(days=horizon)
    window = tx[(tx["timestamp"] >= as_of) & (tx["timestamp"] < end)]
    bought = window[window["amount"] >= 0].groupby("customer_id").size()
    spend = window.groupby("customer_id")["amount"].sum().clip(lower=0)
    left = set(
        cancellations.loc[
            (cancellations["timestamp"] >= as_of) & (cancellations["timestamp"] < end), "customer_id"
        ]
    )
    known = pd.read_parquet(data / "customers.parquet")["customer_id"]
    ids = pd.concat([known, tx["customer_id"]]).astype(str).unique()
    frame = pd.DataFrame({"customer_id": ids})
    bought.index, spend.index = bought.index.astype(str), spend.index.astype(str)
    frame["churned"] = ~frame["customer_id"].isin(bought.index) | frame["customer_id"].isin(
        {str(c) for c in left}
    )
    frame["future_spend"] = frame["customer_id"].map(spend).fillna(0.0)
    return frame.astype({"customer_id": str})


def test_realised_performance_of_a_matured_run_equals_a_hand_computation(
    trained: Trained, history: SqliteScoreStore
) -> None:
    measured = measure_matured_runs(history, load_dataset(trained.data), limits=MonitorLimits(), threads=1)
    first = history.runs()[0]
    assert first["run_id"] in measured  # its horizon has passed in the data; the newest runs' have not
    report = history.reports("performance")[first["run_id"]]
    snapshot = history.snapshot(first["run_id"])
    labels = _hand_labels(trained.data, pd.Timestamp(first["as_of"]), int(first["model"]["horizon_days"]))
    joined = snapshot.merge(labels, on="customer_id")
    assert report["customers"] == len(joined) == len(snapshot)
    y, p = joined["churned"].to_numpy(dtype=int), joined["churn_probability"].to_numpy()
    assert report["churn_rate"] == pytest.approx(y.mean())
    assert report["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert report["brier"] == pytest.approx(brier_score_loss(y, p))
    bins = np.array_split(np.argsort(p, kind="stable"), 10)
    ece = sum(abs(y[b].mean() - p[b].mean()) * len(b) for b in bins) / len(y)
    assert report["ece"] == pytest.approx(ece)
    forecast, spend = joined["expected_revenue"], joined["future_spend"]
    assert report["revenue_total_ratio"] == pytest.approx(forecast.sum() / spend.sum())
    assert report["revenue_mae"] == pytest.approx(np.mean(np.abs(forecast - spend)))
    for segment, part in joined.groupby("segment"):
        assert report["segments"][segment]["customers"] == len(part)
    assert measure_matured_runs(history, load_dataset(trained.data), limits=MonitorLimits()) == []  # once


@pytest.fixture(scope="module")
def drift_world(
    trained: Trained, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, pd.Timestamp, Path]:
    """(data, the date late deliveries quadrupled, a model folder without training cutoffs: its first run
    becomes its reference)."""
    from features.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("drift")
    generate_dataset(root / "crm", n_customers=2000, seed=11, scenario="drift")
    spike = json.loads((root / "crm-truth" / "meta.json").read_text())["scenario"]["late_delivery_spike"]
    connect(get_settings())
    bundle = load_model("models:/churnguard@champion").bundle
    bundle.metadata = {k: v for k, v in bundle.metadata.items() if k not in ("cutoffs", "reference")}
    bundle.save(root / "model")
    return root / "crm", pd.Timestamp(spike["from"]), root / "model"


@pytest.mark.slow
def test_drift_is_flagged_within_one_run_of_the_change(drift_world, tmp_path: Path) -> None:
    data, change, model = drift_world
    store = SqliteScoreStore(tmp_path / "scores.db")
    before, at_change, after = change - pd.DateOffset(months=1), change, change + pd.DateOffset(months=1)
    ids = _score(data, store, [before, at_change, after], str(model))
    drifts = store.reports("drift")
    assert drifts[ids[0]]["reference"]["source"] == "first_run"
    late = "transactions.delivery_delay_days"

    def status(run_id: int) -> str:
        return next(c["status"] for c in drifts[run_id]["columns"] if c["name"] == late)

    assert status(ids[1]) == "ok"  # its window ends the day the spike begins
    assert status(ids[2]) in ("warn", "alert")  # the first run after it
    health = model_health(store, {}, MonitorLimits())
    assert health["status"] in ("warn", "retrain") and any(late in r for r in health["reasons"])


@pytest.mark.slow
def test_a_stable_world_raises_no_alert_over_six_runs(trained: Trained, tmp_path: Path) -> None:
    connect(get_settings())
    store = SqliteScoreStore(tmp_path / "scores.db")
    end = observed_until(load_dataset(trained.data))
    # Monthly runs after training, the last a month before the data's end. (The synthetic business is young
    # and growing: its tenure distribution ages by itself, about PSI 0.05 a month after the training cutoffs.)
    ids = _score(trained.data, store, _monthly(end - pd.Timedelta(days=30), 6), "models:/churnguard@champion")
    drifts = store.reports("drift")
    assert drifts[ids[0]]["reference"]["source"] == "training"  # the reference training shipped in the bundle
    alerts = {r: [c["name"] for c in d["columns"] if c["status"] == "alert"] for r, d in drifts.items()}
    assert [names for names in alerts.values() if names] == [], alerts


def test_monitor_exits_3_on_a_retrain_signal_and_0_with_report_only(
    drift_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from features.cli import build_app

    data, change, model = drift_world
    store_file = tmp_path / "scores.db"
    _score(data, SqliteScoreStore(store_file), [change - pd.DateOffset(months=1)], str(model))
    monkeypatch.setenv("CHURNGUARD_STORE_PATH", str(store_file))
    monkeypatch.setenv("CHURNGUARD_DRIFT_PSI_WARN", "0.0001")  # any difference at all counts
    monkeypatch.setenv("CHURNGUARD_DRIFT_PSI_ALERT", "0.0002")
    clear_settings_caches()
    try:
        runner = CliRunner()
        healthy = runner.invoke(build_app(), ["monitor"])  # the reference run compared with itself
        assert healthy.exit_code == 0, healthy.output
        assert "first scoring run" in healthy.output
        _score(data, SqliteScoreStore(store_file), [change + pd.DateOffset(months=1)], str(model))
        flagged = runner.invoke(build_app(), ["monitor", "--data", str(data)])
        assert flagged.exit_code == 3, flagged.output
        assert "drift alert" in flagged.output
        reported = runner.invoke(build_app(), ["monitor", "--report-only", "--json"])
        assert reported.exit_code == 0 and json.loads(reported.output)["retrain"] is True
    finally:
        clear_settings_caches()


def test_monitor_without_runs_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from features.cli import build_app

    monkeypatch.setenv("CHURNGUARD_STORE_PATH", str(tmp_path / "empty.db"))
    clear_settings_caches()
    try:
        result = CliRunner().invoke(build_app(), ["monitor"])
    finally:
        clear_settings_caches()
    assert result.exit_code == 2 and "churnguard score" in result.output


def test_copy_of_the_history_store_is_its_own(history: SqliteScoreStore, tmp_path: Path) -> None:
    shutil.copy(history.path, tmp_path / "copy.db")
    assert len(SqliteScoreStore(tmp_path / "copy.db").runs()) == 3


def _copy_store(history: SqliteScoreStore, path: Path, *, performance: bool) -> Path:
    """A copy of the history store (SQLite's backup: committed pages wherever they are), with or without
    its realised-performance reports."""
    with sqlite3.connect(history.path) as source, sqlite3.connect(path) as target:
        source.backup(target)
        if not performance:
            target.execute("DELETE FROM run_reports WHERE kind = 'performance'")
    return path


def _monitor(store_file: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    from typer.testing import CliRunner

    from features.cli import build_app

    monkeypatch.setenv("CHURNGUARD_STORE_PATH", str(store_file))
    clear_settings_caches()
    try:
        return CliRunner().invoke(build_app(), ["monitor", "--report-only", *args])
    finally:
        clear_settings_caches()


def test_the_old_degrade_variable_still_sets_the_limit_with_a_warning(
    trained: Trained, history: SqliteScoreStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHURNGUARD_DEGRADE_CLV_RATIO, the revenue forecast's limit before clv meant lifetime value, still
    decides whether a run degraded, and the user is told its new name."""
    flagged = {}
    for name, limit in (("tight", "0.0001"), ("loose", "10")):
        monkeypatch.setenv("CHURNGUARD_DEGRADE_CLV_RATIO", limit)
        store_file = _copy_store(history, tmp_path / f"{name}.db", performance=False)
        result = _monitor(store_file, monkeypatch, "--data", str(trained.data), "--json")
        assert result.exit_code == 0, result.output
        assert (
            "warning: CHURNGUARD_DEGRADE_CLV_RATIO is the old name of CHURNGUARD_DEGRADE_REVENUE_RATIO"
            in result.stderr
        )
        health = json.loads(result.stdout)
        assert health["limits"]["revenue_ratio"] == float(limit) and health["performance"]
        flagged[name] = [r for p in health["performance"] for r in p["degraded"] if "revenue forecast" in r]
    assert flagged["tight"] and not flagged["loose"]


def test_the_new_degrade_variable_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from features.errors import RenamedSettingWarning
    from serving.settings import ServingSettings

    monkeypatch.setenv("CHURNGUARD_DEGRADE_CLV_RATIO", "0.1")
    monkeypatch.setenv("CHURNGUARD_DEGRADE_REVENUE_RATIO", "0.4")
    with pytest.warns(RenamedSettingWarning, match="CHURNGUARD_DEGRADE_CLV_RATIO is ignored"):
        assert MonitorLimits.from_settings(ServingSettings()).revenue_ratio == 0.4
    monkeypatch.delenv("CHURNGUARD_DEGRADE_REVENUE_RATIO")
    monkeypatch.setenv("CHURNGUARD_DEGRADE_CLV_RATIO", "-1")  # refused under the name it is read as
    with pytest.warns(RenamedSettingWarning), pytest.raises(ValueError, match="degrade_revenue_ratio"):
        ServingSettings()


OLD_REPORT_KEYS = {
    "revenue_mae": "clv_mae",
    "revenue_predicted": "clv_predicted",
    "revenue_actual": "clv_actual",
}


def _as_before_the_rename(store_file: Path) -> None:
    """Rewrite a store as the version before the rename (issue #13) left it: its realised-performance
    reports and its runs' validation metrics name the revenue forecast's figures clv_* (a total ratio of
    1.37 and a validation ratio of 1.05 here), and a degraded run says "CLV total ratio"."""
    store = SqliteScoreStore(store_file)
    for run_id, body in store.reports("performance").items():
        old = {OLD_REPORT_KEYS.get(k, k): v for k, v in body.items() if k != "revenue_total_ratio"}
        old |= {
            "clv_total_ratio": 1.37,
            "degraded": ["CLV total ratio 1.37 (predicted/actual) is off 1 by more than 25%"],
        }
        store.save_report(run_id, "performance", old)
    with sqlite3.connect(store_file) as con:
        for run in store.runs():
            metrics = {k: v for k, v in run["model"]["metrics"].items() if not k.startswith("revenue_")}
            model = {**run["model"], "metrics": {**metrics, "clv_predicted_to_actual": 1.05}}
            con.execute("UPDATE runs SET model = ? WHERE run_id = ?", (json.dumps(model), run["run_id"]))


def test_reports_stored_before_the_rename_still_show(
    trained: Trained, history: SqliteScoreStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Realised performance measured and validation figures recorded by the version before the rename:
    `churnguard monitor`, GET /v1/model/health and the Model health page show them under today's names."""
    from serving.app import create_app
    from serving.settings import ServingSettings
    from tests.serving.test_dashboard import sign_in

    store_file = _copy_store(history, tmp_path / "old.db", performance=True)
    measure_matured_runs(SqliteScoreStore(store_file), load_dataset(trained.data), limits=MonitorLimits())
    _as_before_the_rename(store_file)

    health = json.loads(_monitor(store_file, monkeypatch, "--json").stdout)
    assert health["validation"]["revenue_predicted_to_actual"] == 1.05  # from the run's old metric name
    assert {p["revenue_total_ratio"] for p in health["performance"]} == {1.37}
    assert health["status"] == "retrain" and "CLV" not in json.dumps(health)
    text = _monitor(store_file, monkeypatch)
    assert text.exit_code == 0, text.output
    printed = " ".join(text.stdout.split())  # as a terminal of any width shows it
    assert printed.count("revenue ratio 1.37 DEGRADED") == len(health["performance"])
    assert "revenue forecast total ratio 1.37 (predicted/actual) is off 1" in printed

    with TestClient(create_app(ServingSettings(store_path=store_file))) as client:
        api = client.get("/v1/model/health", headers={"Authorization": f"Bearer {trained.api_key}"}).json()
        assert [p["revenue_total_ratio"] for p in api["performance"]] == [1.37] * len(health["performance"])
        assert sign_in(client, trained.api_key).status_code == 303
        page = client.get("/model-health").text
    assert page.count('<td class="num">1.37</td>') == len(health["performance"])
    assert "degraded: revenue forecast total ratio 1.37" in page and "CLV" not in page
