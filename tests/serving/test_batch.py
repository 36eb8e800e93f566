"""Batch scoring's encodings: reasons and actions written once as JSON, the compact serving store (read
back in full, old rows included) and each customer's recent history."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import load_dataset
from features.model_store import connect
from features.settings import get_settings
from features.snapshots import observed_until
from serving.actions import load_playbook
from serving.batch import FILE_COLUMNS, ScoresFile, score_dataset
from serving.encoding import expand_history, expand_reasons
from serving.explain import top_reasons
from serving.history import HISTORY_ROWS, recent_history
from serving.model_source import load_model
from serving.schemas import CustomerScore
from serving.scoring import Scorer
from serving.store import CustomerQuery, SqliteScoreStore


@pytest.fixture(scope="module")
def champion(trained):
    connect(get_settings())
    return load_model("models:/churnguard@champion")


@pytest.fixture(scope="module")
def stored(trained) -> list[dict]:
    return SqliteScoreStore(trained.home / "scores.db").query(CustomerQuery(limit=300))[0]


def test_encoded_scores_are_the_api_scores_as_json(champion, stored) -> None:
    frame = pd.DataFrame([{"customer_id": r["customer_id"], **r["features"]} for r in stored])
    scorer = Scorer.for_model(champion, load_playbook())
    decoded, encoded = (
        scorer.score_frame(frame, "2026-01-01"),
        scorer.score_frame(frame, "2026-01-01", encoded=True),
    )
    for plain, text in zip(decoded.to_dict("records"), encoded.to_dict("records"), strict=True):
        assert text["reasons"] == json.dumps(plain["reasons"])  # byte for byte what the file held before
        assert text["action"] == json.dumps(plain["action"])
        assert json.loads(text["model"]) == plain["model"]
        assert expand_reasons(json.loads(text["stored_reasons"])) == plain["reasons"]
        assert text["top_reason"] == (plain["reasons"][0]["sentence"] if plain["reasons"] else "")
        assert text["action_name"] == plain["action"]["name"]
        assert text["expected_net_value"] == plain["action"]["expected_net_value"]


def test_scoring_in_overlapping_chunks_gives_every_customer_the_score_of_one_pass(trained, champion) -> None:
    dataset = load_dataset(trained.data)
    as_of = observed_until(dataset)
    scorer = Scorer.for_model(champion, load_playbook())
    whole = score_dataset(dataset, as_of, scorer, chunk_rows=10**9)
    chunked = score_dataset(dataset, as_of, scorer, chunk_rows=97)  # odd size: a ragged last chunk
    assert len(whole) > 3 * 97
    pd.testing.assert_frame_equal(chunked, whole)


def test_zero_contributions_are_left_out_and_unknown_values_are_null(champion) -> None:
    bundle = champion.bundle
    numeric = [j for j, f in enumerate(bundle.features) if f.categories is None]
    matrix = np.full((3, len(bundle.features)), np.nan)
    matrix[1, numeric] = 2.123456789
    contrib = np.zeros((3, len(bundle.features) + 1))
    contrib[1, numeric[:2]] = [0.5, -0.25]
    contrib[2, numeric[:5]] = 0.1
    reasons = top_reasons(bundle, matrix, contrib, top_k=5)
    decoded = reasons.as_dicts()
    assert decoded[0] == [] and reasons.text[0] == "[]" and reasons.first_sentence[0] == ""
    assert [(r["value"], r["contribution"], r["direction"]) for r in decoded[1]] == [
        (2.1235, 0.5, "raises risk"),
        (2.1235, -0.25, "lowers risk"),
    ]
    assert reasons.first_sentence[1] == decoded[1][0]["sentence"]
    assert len(decoded[2]) == 5 and all(r["value"] is None for r in decoded[2])
    assert all(r["sentence"].startswith("No record of") for r in decoded[2])
    for text, compact in zip(reasons.text, reasons.stored, strict=True):
        assert expand_reasons(json.loads(compact)) == json.loads(text)


def test_file_columns_and_values_match_the_store(trained, stored) -> None:
    file = pd.read_parquet(trained.scores_file)
    assert tuple(file.columns) == FILE_COLUMNS
    assert file["referral_value"].isna().all()  # no referrals table: unknown, never 0
    assert all(record["referral_value"] is None for record in stored)
    by_id = file.set_index("customer_id")
    for record in stored[:50]:
        row = by_id.loc[record["customer_id"]]
        assert json.loads(row["reasons"]) == record["reasons"]
        assert json.loads(row["action"]) == record["action"]
        assert (
            json.loads(row["model"]) == record["model"] and row["model_version"] == record["model"]["version"]
        )
        assert row["action_name"] == record["action_name"] == record["action"]["name"]


def test_the_store_keeps_shared_parts_once_and_reads_them_back(trained, stored) -> None:
    with sqlite3.connect(trained.home / "scores.db") as con:
        model, features, history = con.execute(
            "SELECT model, features, history FROM scores LIMIT 1"
        ).fetchone()
    assert model is None  # the batch's model, kept once in meta
    assert features.startswith("[") and '"purchases": {' in history
    meta = SqliteScoreStore(trained.home / "scores.db").meta()
    for record in stored:
        assert record["model"] == meta["model"]
        assert list(record["features"]) == meta["feature_names"]
        assert set(record["history"]) == {"purchases", "interactions"}


def test_the_store_reads_rows_written_before_the_compact_form(tmp_path: Path) -> None:
    """A store written by an earlier version serves the same records until the next refresh."""
    record = {
        "customer_id": "C1",
        "as_of": "2026-01-01",
        "churn_probability": 0.5,
        "risk_tier": "high",
        "clv": 100.0,
        "value_at_risk": 50.0,
        "segment": "valuable, at risk",
        "action_name": "no_action",
        "expected_net_value": 0.0,
        "reasons": [{"feature": "orders_90d", "value": 0.0, "typical": 2.0, "contribution": 0.2}],
        "action": {"name": "no_action", "label": "No action"},
        "model": {"name": "churnguard", "version": "1"},
        "features": {"orders_90d": 0, "country": "fr"},
        "history": {"purchases": [{"timestamp": "2025-01-01 10:00", "amount": 1.5}], "interactions": []},
    }
    db = tmp_path / "scores.db"
    with sqlite3.connect(db) as con:
        con.execute(
            "CREATE TABLE scores (customer_id TEXT PRIMARY KEY, as_of TEXT, churn_probability REAL, "
            "risk_tier TEXT, clv REAL, value_at_risk REAL, segment TEXT, action_name TEXT, "
            "expected_net_value REAL, reasons TEXT, action TEXT, model TEXT, features TEXT, history TEXT)"
        )
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT INTO meta VALUES ('model', ?)", [json.dumps({"version": "2"})])
        values = [json.dumps(v) if isinstance(v, dict | list) else v for v in record.values()]
        con.execute(f"INSERT INTO scores VALUES ({','.join('?' * len(record))})", values)
    read = SqliteScoreStore(db).get("C1")
    assert read is not None
    # before the lifetime-value fields, clv was the spend forecast over the horizon: read under its new name
    assert read.pop("expected_revenue_90d") == record.pop("clv") and read.pop("clv") is None
    newer = {k: v for k, v in read.items() if k not in record}
    assert all(v is None for v in newer.values()), newer
    assert {k: v for k, v in read.items() if k in record} == record


def test_a_refresh_leaves_no_write_ahead_log_behind(tmp_path: Path, trained) -> None:
    source = SqliteScoreStore(trained.home / "scores.db")
    rows = source.query(CustomerQuery(limit=20))[0]
    scores = pd.DataFrame(rows).drop(columns=["features", "history"])
    store = SqliteScoreStore(tmp_path / "scores.db")
    store.replace_all(scores, {"as_of": "2026-01-01", "model": rows[0]["model"]})
    assert (tmp_path / "scores.db-wal").stat().st_size == 0
    read = store.get(rows[0]["customer_id"], with_inputs=False)
    assert read is not None
    assert {k: v for k, v in read.items() if k not in ("features", "history")} == {
        k: v for k, v in rows[0].items() if k not in ("features", "history")
    }


def test_recent_history_is_the_newest_events_before_the_cutoff(trained) -> None:
    dataset = load_dataset(trained.data)
    as_of = observed_until(dataset) - pd.Timedelta(days=30)
    tx = dataset.transactions
    ids = [*tx["customer_id"].astype(str).unique()[:40], "nobody"]
    histories = [expand_history(json.loads(text)) for text in recent_history(dataset, as_of, ids, threads=1)]
    assert histories[-1] == {"purchases": [], "interactions": []}
    for customer, history in zip(ids[:-1], histories[:-1], strict=True):
        mine = tx[(tx["customer_id"] == customer) & (tx["timestamp"] < as_of)]
        newest = mine.sort_values("timestamp", ascending=False, kind="stable").head(HISTORY_ROWS)
        purchases = history["purchases"]
        assert [p["timestamp"] for p in purchases] == newest["timestamp"].dt.strftime(
            "%Y-%m-%d %H:%M"
        ).tolist()
        assert sorted(p["amount"] for p in purchases) == pytest.approx(sorted(newest["amount"]))
        if purchases:
            assert list(purchases[0]) == ["timestamp", "amount", "channel", "returned", "delivery_delay_days"]


FORMULAS = ["=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "\tx", "\rx"]


def _file_with_formulas(trained) -> pd.DataFrame:
    scores = pd.read_parquet(trained.scores_file).head(len(FORMULAS) + 1).reset_index(drop=True)
    scores.loc[: len(FORMULAS) - 1, "customer_id"] = FORMULAS
    scores.loc[0, "top_reason"] = "-5 orders"
    return scores


def test_a_csv_for_spreadsheets_cannot_start_a_formula(tmp_path: Path, trained) -> None:
    scores = _file_with_formulas(trained)
    out = tmp_path / "scores.csv"
    ScoresFile(out).write(scores)
    read = pd.read_csv(out, keep_default_na=False)
    assert read["customer_id"].tolist()[: len(FORMULAS)] == [f"'{f}" for f in FORMULAS]
    assert read["customer_id"].iloc[-1] == scores["customer_id"].iloc[-1]  # ordinary ids unchanged
    assert read["top_reason"].iloc[0] == "'-5 orders"
    assert read["churn_probability"].tolist() == pytest.approx(scores["churn_probability"].tolist())
    assert [json.loads(a)["name"] for a in read["action"]] == scores["action_name"].tolist()
    assert not out.read_bytes().startswith(b"\xef\xbb\xbf")


def test_raw_csv_keeps_cells_as_computed_and_excel_adds_a_byte_order_mark(tmp_path: Path, trained) -> None:
    scores = _file_with_formulas(trained)
    raw, excel = tmp_path / "raw.csv", tmp_path / "excel.csv"
    ScoresFile(raw, raw=True).write(scores)
    ScoresFile(excel, excel=True).write(scores)
    with raw.open(newline="", encoding="utf-8") as handle:
        ids = [row["customer_id"] for row in csv.DictReader(handle)]
    assert ids == scores["customer_id"].tolist()
    assert excel.read_bytes().startswith(b"\xef\xbb\xbf")
    assert pd.read_csv(excel, encoding="utf-8-sig")["customer_id"].iloc[0] == "'=HYPERLINK(1)"


@pytest.mark.slow
def test_score_command_writes_a_spreadsheet_safe_csv_and_says_how(tmp_path: Path, trained) -> None:
    def churnguard(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", "from features.cli import main; main()", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    out = tmp_path / "scores.csv"
    done = churnguard("score", "--data", str(trained.data), "--out", str(out), "--no-store", "--excel")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbf") and "scored" in done.stdout
    file = pd.read_csv(out, encoding="utf-8-sig")
    assert tuple(file.columns) == FILE_COLUMNS and len(file) > 100
    refused = churnguard(
        "score", "--data", str(trained.data), "--out", str(tmp_path / "s.parquet"), "--excel"
    )
    assert refused.returncode == 2 and "apply to a CSV file" in refused.stderr
    helped = " ".join(churnguard("score", "--help").stdout.split())
    assert "formulas" in helped and "--raw-csv" in helped and "--excel" in helped


def test_batch_scores_value_referrals_from_the_referred_customers_own_figures(
    tmp_path: Path, trained, champion
) -> None:
    """A referrer's referral_value is the sum of what each customer they brought shows on their own
    score (historic value + residual value), or what a customer no longer active spent; it never changes
    the referrer's own value, and the file and the store carry it."""
    data = shutil.copytree(trained.data, tmp_path / "crm")
    plain = load_dataset(data)
    as_of = observed_until(plain)
    active = pd.read_parquet(trained.scores_file)["customer_id"].astype(str).tolist()
    tx = plain.transactions
    lost = sorted(set(tx["customer_id"].astype(str)) - set(active))[0]
    referrer, brought, late_referrer = active[0], active[1:3], active[3]
    before = (tx["timestamp"].min() - pd.Timedelta(days=1)).date()
    rows = [f"{referrer},{b},{before}" for b in [*brought, lost]]
    rows.append(f"{late_referrer},{active[4]},{(as_of + pd.Timedelta(days=1)).date()}")  # not yet made
    (data / "referrals.csv").write_text("referrer_id,referred_id,timestamp\n" + "\n".join(rows) + "\n")
    dataset = load_dataset(data)
    scorer = Scorer.for_model(champion, load_playbook())

    scores = score_dataset(dataset, as_of, scorer).set_index("customer_id")
    without = score_dataset(dataclasses.replace(dataset, referrals=None), as_of, scorer)

    details = {b: json.loads(scores.loc[b, "clv_detail"]) for b in brought}
    lost_spend = max(
        float(tx.loc[(tx["customer_id"] == lost) & (tx["timestamp"] < as_of), "amount"].sum()), 0
    )
    expected = sum(details[b]["historic_value"] + details[b]["residual_value"] for b in brought) + lost_spend
    assert scores.loc[referrer, "referral_value"] == pytest.approx(expected, abs=0.05)
    assert (
        scores.loc[late_referrer, "referral_value"] == 0.0 and scores.loc[active[5], "referral_value"] == 0.0
    )
    assert without["referral_value"].isna().all()
    pd.testing.assert_series_equal(scores["clv"], without.set_index("customer_id")["clv"])  # never added in

    store = SqliteScoreStore(tmp_path / "scores.db")
    store.replace_all(scores.reset_index(), {"as_of": str(as_of.date()), "model": scorer.info.as_dict()})
    record = store.get(referrer, with_inputs=False)
    assert record is not None
    assert CustomerScore.model_validate(record).referral_value == scores.loc[referrer, "referral_value"]
    out = tmp_path / "scores.csv"
    ScoresFile(out).write(scores.reset_index())
    file = pd.read_csv(out).set_index("customer_id")
    assert file.loc[referrer, "referral_value"] == scores.loc[referrer, "referral_value"]
