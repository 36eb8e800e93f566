"""The scoring core: exact reasons that add up, sensible actions, and one path for batch and online."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.bundle import ModelBundle
from features.errors import ConfigError
from features.model_store import connect
from features.settings import get_settings
from serving.actions import NO_ACTION, Action, Playbook, choose_actions, load_playbook
from serving.explain import sentence
from serving.model_source import load_model
from serving.scoring import Scorer
from serving.store import CustomerQuery, SqliteScoreStore


@pytest.fixture(scope="module")
def champion(trained):
    connect(get_settings())
    return load_model("models:/churnguard@champion")


def test_shap_contributions_add_up_to_the_raw_score(champion, trained) -> None:
    store = SqliteScoreStore(trained.home / "scores.db")
    rows, _ = store.query(CustomerQuery(limit=200))
    frame = pd.DataFrame([r["features"] for r in rows])
    bundle: ModelBundle = champion.bundle
    matrix = bundle.matrix(frame)
    contrib = bundle.contributions(matrix)
    assert np.allclose(contrib.sum(axis=1), bundle.churn_raw(matrix), atol=1e-9)
    assert np.allclose(bundle.probability(contrib.sum(axis=1)), bundle.predict(frame)["churn_probability"])


def test_batch_and_online_give_the_same_score(champion, trained) -> None:
    store = SqliteScoreStore(trained.home / "scores.db")
    stored = store.query(CustomerQuery(limit=20))[0]
    online = Scorer.for_model(champion, load_playbook()).score_records(
        [r["customer_id"] for r in stored], [r["features"] for r in stored], "x"
    )
    for batch_row, online_row in zip(stored, online, strict=True):
        assert online_row["churn_probability"] == pytest.approx(batch_row["churn_probability"], abs=1e-6)
        assert online_row["expected_revenue_90d"] == pytest.approx(
            batch_row["expected_revenue_90d"], abs=0.01
        )
        # Online lifetime value is approximated from the features (orders for purchase days, join date
        # for the first purchase): present and on the same basis, not equal to batch's exact summary.
        assert online_row["clv"] is not None and batch_row["clv_detail"] is not None
        assert online_row["clv"]["basis"] == batch_row["clv_detail"]["basis"] == batch_row["value_basis"]
        assert [r["feature"] for r in online_row["reasons"]] == [r["feature"] for r in batch_row["reasons"]]


def test_stored_scores_are_ranked_and_complete(trained) -> None:
    rows, total = SqliteScoreStore(trained.home / "scores.db").query(CustomerQuery(limit=50))
    assert total > 100
    values = [r["value_at_risk"] for r in rows]
    assert values == sorted(values, reverse=True)
    top = rows[0]
    assert 0 <= top["churn_probability"] <= 1
    detail = top["clv_detail"]
    assert detail["residual_value"] == pytest.approx(top["clv"], abs=0.01)
    assert top["value_basis"] == detail["basis"] == "revenue"  # the session model has no economics config
    assert top["value_at_risk"] >= 0
    assert len(top["reasons"]) == 5 and all(r["sentence"] for r in top["reasons"])
    assert top["segment"] in {
        "graceful exit",
        "valuable, at risk",
        "valuable, loyal",
        "low value, at risk",
        "low value, loyal",
    }


def test_no_offer_when_the_value_does_not_cover_the_cost() -> None:
    playbook = Playbook(
        actions=(Action(name="call", label="Call", addresses=("service",), cost=20, success_rate=0.5),)
    )
    decisions = choose_actions(
        playbook, np.array([0.9, 0.9]), np.array([10.0, 1000.0]), [{"service"}, {"service"}]
    )
    assert decisions[0]["name"] == NO_ACTION and "Not worth an offer" in str(decisions[0]["why"])
    assert decisions[1]["name"] == "call"
    assert decisions[1]["expected_net_value"] == pytest.approx(
        1000 * 0.5 - 20
    )  # value at risk x success - cost


def test_action_answers_the_reason_family() -> None:
    playbook = load_playbook()
    decisions = choose_actions(
        playbook, np.array([0.8, 0.8]), np.array([2000.0, 2000.0]), [{"service"}, {"price"}]
    )
    assert decisions[0]["name"] in {a.name for a in playbook.actions if "service" in a.addresses}
    assert decisions[1]["name"] in {a.name for a in playbook.actions if "price" in a.addresses}


def test_sentences_read_like_a_person_wrote_them(champion) -> None:
    bundle = champion.bundle
    info = bundle.feature_info("recency_days")
    assert (
        sentence(info, 94.0, {"mean_gap_days": 30.0})
        == "Last purchase 94 days ago; usually buys every 30 days."
    )
    complaints = bundle.feature_info("unresolved_complaints_90d")
    text = sentence(complaints, 2.0, {})
    assert text.startswith("2 unresolved complaints in the last 90 days")
    assert sentence(complaints, 1.0, {}).startswith("Unresolved complaints in the last 90 days: 1;")
    assert sentence(bundle.feature_info("last_nps"), None, {}).startswith("No record of")


def test_score_frame_accepts_a_frame_with_missing_columns(champion) -> None:
    frame = pd.DataFrame({"customer_id": ["a", "b"], "recency_days": [5.0, 300.0]})
    scores = Scorer.for_model(champion, load_playbook()).score_frame(frame, "2026-01-01")
    assert list(scores["customer_id"]) == ["a", "b"]
    assert scores["churn_probability"].iloc[1] > scores["churn_probability"].iloc[0]


def test_the_three_ways_in_give_the_same_scores(champion) -> None:
    frame = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "recency_days": [5.0, 90.0, 300.0], "orders_90d": [3, 1, 0]}
    )
    scorer = Scorer.for_model(champion, load_playbook(), top_k=3)
    by_frame = scorer.score_frame(frame, "2026-01-01").to_dict("records")
    by_records = scorer.score_records(
        ["a", "b", "c"], frame.drop(columns="customer_id").to_dict("records"), "2026-01-01"
    )
    by_matrix = scorer.score_matrix(["a", "b", "c"], champion.bundle.matrix(frame), "2026-01-01")
    assert by_frame == by_records
    assert [r["churn_probability"] for r in by_records] == by_matrix["churn_probability"]
    assert all(len(r["reasons"]) <= 3 for r in by_records)


def test_a_playbook_without_an_engagement_fallback_is_a_config_error() -> None:
    playbook = Playbook(
        actions=(Action(name="call", label="Call", addresses=("service",), cost=20, success_rate=0.5),)
    )
    with pytest.raises(ConfigError, match="engagement"):
        choose_actions(playbook, np.array([0.9]), np.array([100.0]), [{"price"}])
