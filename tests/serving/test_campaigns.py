"""Campaigns end to end: planning from stored scores, the generator replaying the plan, the report against
the generator's true effect, and the CLI, API and dashboard showing it."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.campaigns import DO_NOTHING
from features.errors import ConfigError
from features.synthetic import Period, Scenario, generate_dataset
from features.synthetic.campaigns import CampaignDesign, CampaignSetup, load_campaign_effects
from serving.actions import NO_ACTION, load_playbook
from serving.campaign_plan import Eligibility, PlanRequest, plan_campaign, write_contacts
from serving.campaigns import customers_needed, holm, measure_campaign, report_campaigns

PERIOD = Scenario("base", Period(date(2023, 1, 1), date(2025, 9, 1)))
START = date(2025, 3, 1)


def test_do_nothing_is_the_playbooks_no_action() -> None:
    assert DO_NOTHING == NO_ACTION


# ------------------------------------------------------------------------------------------- statistics


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_customers_needed_matches_the_stack_notes_rule_of_thumb() -> None:
    assert 5_500 < customers_needed(0.80, 0.02) < 7_000  # 20% -> 18% churn: about 6,000 per arm


def _outcomes(n_t: int, n_c: int, kept_t: float, kept_c: float, action: str = "a") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for group, n, kept in (("treatment", n_t, kept_t), ("control", n_c, kept_c)):
        churned = rng.random(n) > kept
        rows.append(
            pd.DataFrame(
                {
                    "customer_id": [f"{group}{action}{i}" for i in range(n)],
                    "campaign": "c",
                    "action": action if group == "treatment" else DO_NOTHING,
                    "assigned_at": pd.Timestamp("2025-01-01"),
                    "group": group,
                    "assignment_probability": 0.5,
                    "cost": 2.0 if group == "treatment" else 0.0,
                    "churned": churned,
                    "future_spend": np.where(churned, 0.0, 50.0),
                    "known": True,
                    "complete": True,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_small_groups_are_flagged_and_many_actions_get_a_holm_note() -> None:
    small = measure_campaign(_outcomes(40, 40, 0.7, 0.6), 90)
    assert any("too small to tell" in w for w in small.arms[0].warnings)
    big = pd.concat([_outcomes(3000, 3000, 0.75, 0.6, "a"), _outcomes(3000, 0, 0.6, 0.6, "b")])
    report = measure_campaign(big, 90)
    assert [a.action for a in report.arms] == ["a", "b"]
    a, b = report.arms
    assert a.significant and not a.warnings and a.incremental_retention.low > 0.1
    assert a.incremental_customers.value == pytest.approx(3000 * a.incremental_retention.value)
    assert a.cost == 6000.0 and a.roi is not None
    assert not b.significant and b.p_adjusted >= b.p_value
    assert any("Holm" in note for note in report.notes)


# ---------------------------------------------------------------------------------- report vs the truth


@pytest.fixture(scope="module")
def randomised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("randomised") / "data"
    design = CampaignDesign("spring", START, (("service_recovery_call", 0.45), ("loyalty_discount", 0.1)))
    generate_dataset(out, 3000, seed=5, scenario=replace(PERIOD, campaigns=CampaignSetup(designs=(design,))))
    return out


def test_report_matches_the_generators_true_effect_within_its_interval(randomised: Path) -> None:
    (report,) = report_campaigns(randomised)
    arm = next(a for a in report.arms if a.action == "service_recovery_call")
    effects = load_campaign_effects(randomised.parent / "data-truth")
    campaign = pd.read_parquet(randomised / "campaigns.parquet")
    truth = effects[effects["action"] == "service_recovery_call"].merge(
        campaign[["customer_id", "campaign"]], on=["customer_id", "campaign"]
    )
    true_lift = -truth["true_effect"].mean()  # retention gained = churn probability removed
    estimate = arm.incremental_retention
    assert estimate.low <= true_lift <= estimate.high
    assert arm.treatment + arm.control > 1000
    assert arm.control == (campaign["group"] == "control").sum()  # the shared control group
    # a share of contract customers are sleeping dogs: contacting them raises their churn
    dogs = truth[truth["sleeping_dog"]]
    assert len(dogs) and (dogs["true_effect"] > 0).mean() > 0.5


def test_the_world_before_a_campaign_is_unchanged_by_it(randomised: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    generate_dataset(plain, 3000, seed=5, scenario=PERIOD)
    before = pd.Timestamp(START)
    a = pd.read_parquet(plain / "transactions.parquet")
    b = pd.read_parquet(randomised / "transactions.parquet")
    pd.testing.assert_frame_equal(
        a[a["timestamp"] < before].reset_index(drop=True), b[b["timestamp"] < before].reset_index(drop=True)
    )
    assert not a[a["timestamp"] >= before].equals(b[b["timestamp"] >= before].reset_index(drop=True))


# -------------------------------------------------------------------------------------------- planning


class FakeStore:
    """Stored scores as the plan reads them (through ``columns``: raw, a stored action as JSON text)."""

    def __init__(self, n: int = 400) -> None:
        rng = np.random.default_rng(1)
        self.rows = [
            {
                "customer_id": f"C{i:07d}" if i else "=HYPERLINK(1)",
                "churn_probability": float(p),
                "clv": float(v),
                "segment": "high" if v > 300 else "low",
                "risk_tier": "high" if p > 0.5 else "low",
                "action_name": "service_recovery_call",
                "as_of": "2025-03-01",
            }
            for i, (p, v) in enumerate(zip(rng.random(n), rng.gamma(2.0, 200.0, n), strict=True))
        ]

    def columns(self, names: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows).reindex(columns=list(names))
        if "action" in frame:
            frame["action"] = frame["action"].map(lambda a: json.dumps(a) if isinstance(a, dict) else a)
        return frame


def test_a_plan_ranks_by_net_value_assigns_by_hash_and_logs_probabilities(tmp_path: Path) -> None:
    request = PlanRequest("p1", "service_recovery_call", count=100, holdout=0.2, exploration=0.1)
    playbook = load_playbook()
    plan = plan_campaign(FakeStore(), playbook, request)  # type: ignore[arg-type]
    again = plan_campaign(FakeStore(), playbook, request)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(plan.rows, again.rows)  # deterministic
    rows = plan.rows
    assert len(rows) == 125 and (rows["selected_by"] == "exploration").sum() == 13
    control = rows["group"] == "control"
    assert 0.08 < control.mean() < 0.35
    assert set(rows.loc[control, "assignment_probability"]) == {0.2}
    assert set(rows.loc[~control, "assignment_probability"]) == {0.8}
    ranked = rows[rows["selected_by"] == "ranked"]["expected_net_value"]
    assert ranked.is_monotonic_decreasing and (ranked > 0).all()
    assert "playbook prior" in plan.summary["estimates"]
    write_contacts(plan, tmp_path / "contacts.csv")
    with (tmp_path / "contacts.csv").open() as handle:
        cells = [row["customer_id"] for row in csv.DictReader(handle)]
    assert len(cells) == (~control).sum()
    assert not any(c.startswith("=") for c in cells)


def test_a_contribution_value_is_not_weighed_by_the_margin_again() -> None:
    """The plan ranks by what scoring weighs: the stored value at risk, x the playbook margin only on a
    revenue basis (a contribution already nets the margin)."""
    playbook = load_playbook()
    action = next(a for a in playbook.actions if a.name == "service_recovery_call")
    request = PlanRequest("p2", action.name, count=50, holdout=0.2, exploration=0.0)
    for basis, weight in (("contribution", 1.0), ("revenue", playbook.margin)):
        store = FakeStore()
        for row in store.rows:
            row |= {"value_at_risk": 0.5 * row["clv"], "value_basis": basis}
        rows = plan_campaign(store, playbook, request).rows  # type: ignore[arg-type]
        expected = 0.5 * rows["clv"] * weight * action.success_rate - action.cost
        np.testing.assert_allclose(rows["expected_net_value"], expected, atol=0.006)  # kept to the cent


def test_a_different_campaign_name_draws_different_groups_and_rules_filter() -> None:
    playbook = load_playbook()
    store = FakeStore()
    a = plan_campaign(store, playbook, PlanRequest("a", "loyalty_discount", count=80))  # type: ignore[arg-type]
    b = plan_campaign(store, playbook, PlanRequest("b", "loyalty_discount", count=80))  # type: ignore[arg-type]
    assert set(a.rows["customer_id"]) == set(b.rows["customer_id"]) or len(a.rows) == len(b.rows)
    assert not a.rows["group"].equals(b.rows["group"])
    rich = plan_campaign(
        store,  # type: ignore[arg-type]
        playbook,
        PlanRequest("r", "loyalty_discount", budget=240.0, eligibility=Eligibility(min_clv=300.0)),
    )
    assert (rich.rows["clv"] >= 300).all()
    assert (rich.rows["group"] == "treatment").sum() <= 21  # 240 / 12 = 20 contacts, rounding up once


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (PlanRequest("x", "free_pony", count=10), "not in the playbook"),
        (PlanRequest("x", "loyalty_discount"), "either --count or --budget"),
        (PlanRequest("x", "loyalty_discount", count=10, holdout=0.0), "no control group"),
    ],
)
def test_plans_that_cannot_be_measured_are_refused(request_: PlanRequest, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        plan_campaign(FakeStore(), load_playbook(), request_)  # type: ignore[arg-type]


# ------------------------------------------------- plan -> the generator replays it -> report (CLI, API, UI)


def _scores(data: Path) -> pd.DataFrame:
    customers = pd.read_parquet(data / "customers.parquet")
    rng = np.random.default_rng(2)
    n = len(customers)
    p = rng.random(n)
    clv = rng.gamma(2.0, 150.0, n)
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "as_of": "2025-03-01",
            "churn_probability": p,
            "clv": clv,
            "value_at_risk": p * clv,
            "segment": "all",
            "risk_tier": np.where(p > 0.5, "high", "low"),
            "action_name": NO_ACTION,
            "expected_net_value": 0.0,
            "action": "{}",
        }
    )


@pytest.mark.slow
def test_plan_then_simulate_then_report_through_cli_api_and_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.app import create_app
    from serving.campaign_cli import app
    from serving.keys import KeyStore
    from serving.settings import ServingSettings, get_serving_settings
    from serving.store import SqliteScoreStore

    home = tmp_path / "home"
    monkeypatch.setenv("CHURNGUARD_HOME", str(home))
    get_serving_settings.cache_clear()
    before = tmp_path / "before"
    generate_dataset(before, 1500, seed=7, scenario=PERIOD)
    SqliteScoreStore(home / "scores.db").replace_all(_scores(before), {"as_of": "2025-03-01"})
    runner = CliRunner()
    planned = runner.invoke(
        app,
        [
            "campaign", "plan", "--campaign", "e2e", "--action", "service_recovery_call", "--count", "400",
            "--holdout", "0.5", "--log", str(tmp_path / "campaigns.csv"), "--out", str(tmp_path / "contacts.csv"),
        ],
    )  # fmt: skip
    assert planned.exit_code == 0, planned.output
    log = pd.read_csv(tmp_path / "campaigns.csv", parse_dates=["assigned_at"])
    after = tmp_path / "after"
    generate_dataset(after, 1500, seed=7, scenario=replace(PERIOD, campaigns=CampaignSetup(logs=(log,))))
    reported = runner.invoke(app, ["campaign", "report", "--data", str(after)])
    assert reported.exit_code == 0, reported.output
    assert "service_recovery_call" in reported.output and "retention" in reported.output

    _, key = KeyStore(home / "api_keys.json").create("test")
    settings = ServingSettings(model_uri=str(tmp_path / "no-model"))
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        report = client.get("/v1/campaigns/e2e/report", headers=headers)
        assert report.status_code == 200
        (arm,) = report.json()["arms"]
        assert arm["action"] == "service_recovery_call" and arm["treatment"] + arm["control"] == len(log)
        contacts = client.get("/v1/campaigns/e2e/contacts?limit=5", headers=headers).json()
        assert contacts["total"] == len(log) and len(contacts["contacts"]) == 5
        assert client.get("/v1/campaigns/nope/report", headers=headers).status_code == 404
        token = client.get("/sign-in").text.split('name="csrf_token" value="')[1].split('"')[0]
        client.post("/sign-in", data={"api_key": key, "csrf_token": token, "next": "/campaigns"})
        page = client.get("/campaigns")
        assert page.status_code == 200 and "e2e" in page.text and "Incremental retention" in page.text
    get_serving_settings.cache_clear()


# ------------------------------------------------------------- actions by learned effects (uplift in scoring)


def test_effects_decide_actions_and_do_not_contact_gets_nothing_paid() -> None:
    from serving.actions import Effects, decide_actions

    playbook = load_playbook()
    estimates = np.array(
        [
            [0.30, 0.01],  # the call keeps 30% of a 500 customer: 150 - 25 > 0
            [0.01, 0.0005],  # nothing pays: 5 - 25 for the call, 0.25 - 0.5 for the e-mail
            [-0.05, -0.02],  # every action pushes this customer away: do not contact
            [0.30, 0.01],  # would pay, but a graceful exit
        ]
    )
    effects = Effects(["service_recovery_call", "reminder_email"], estimates, np.full(4, 500.0))
    decisions = decide_actions(
        playbook,
        np.full(4, 0.5),
        np.full(4, 250.0),
        [frozenset({"engagement"})] * 4,
        lifetime=np.array([900.0, 900.0, 900.0, -5.0]),
        effects=effects,
    ).as_dicts()
    assert [d["name"] for d in decisions] == ["service_recovery_call", NO_ACTION, NO_ACTION, NO_ACTION]
    assert all(d["decided_by"] == "uplift effects" for d in decisions)
    assert decisions[0]["expected_net_value"] == pytest.approx(0.30 * 500 - 25)
    assert decisions[0]["incremental_retention"] == pytest.approx(0.30)
    assert "randomised campaigns" in str(decisions[0]["why"])
    assert [d["do_not_contact"] for d in decisions] == [False, False, True, False]
    assert str(decisions[2]["why"]).startswith("Do not contact") and decisions[2]["expected_net_value"] == 0
    assert "Graceful exit" in str(decisions[3]["why"])
    # without effects the playbook's priors decide, and say so
    priors = decide_actions(playbook, np.full(4, 0.5), np.full(4, 250.0), [frozenset({"service"})] * 4)
    assert {d["decided_by"] for d in priors.as_dicts()} == {"playbook priors"}


def _features(trained: Any) -> pd.DataFrame:
    from features.engine import compute_features
    from features.loading import load_dataset

    dataset = load_dataset(trained.data)
    return compute_features(dataset, dataset.last_date.normalize() - pd.Timedelta(days=90))


def _made_up_effects(bundle: Any, frame: pd.DataFrame) -> Any:
    """Effects a test can reason about: the service call keeps a third of the customers with complaints
    and changes nothing for the others, a reminder e-mail keeps 0.1% of anyone, every other action
    slightly hurts, and recent buyers (the 'sleeping dogs' here) are pushed away by every action."""
    import lightgbm as lgb

    from features.bundle import ActionEffects

    x = bundle.model_input(frame)
    complained = frame["complaints_365d"].to_numpy() > 0
    dog = frame["recency_days"].to_numpy() < 20
    playbook = load_playbook()
    targets = {
        "service_recovery_call": np.where(complained, 0.30, 0.0),
        "reminder_email": np.full(len(x), 0.001),
    }
    models = {}
    for action in playbook.costs():
        target = np.where(dog, -0.10, targets.get(action, np.full(len(x), -0.02)))
        regressor = lgb.LGBMRegressor(
            n_estimators=40, learning_rate=0.5, num_leaves=8, min_child_samples=5, verbose=-1, n_jobs=1
        )
        models[action] = regressor.fit(x, target).booster_
    return ActionEffects(
        models, playbook.costs(), weight=playbook.margin, min_net_value=playbook.min_net_value
    )


@pytest.mark.slow
def test_a_bundle_with_effects_round_trips_through_mlflow_and_changes_actions(
    trained: Any, tmp_path: Path
) -> None:
    import importlib.util
    from dataclasses import replace as swap

    import mlflow

    from features.model_store import load_model
    from features.settings import get_settings
    from serving.scoring import Scorer
    from training.registry import configure_mlflow

    configure_mlflow(get_settings())
    champion = load_model("models:/churnguard@champion")
    frame = _features(trained)
    bundle = swap(champion.bundle, effects=_made_up_effects(champion.bundle, frame))
    bundle.save(tmp_path / "bundle")
    code = importlib.util.find_spec("features.pyfunc_model")
    assert code is not None and code.origin is not None
    with mlflow.start_run(run_name="effects-round-trip"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=code.origin,
            artifacts={"bundle": str(tmp_path / "bundle")},
            pip_requirements=[],  # (inferring them loads the model in a subprocess: 13 s)
        )
    version = mlflow.register_model(info.model_uri, "churnguard_effects_test").version
    uri = f"models:/churnguard_effects_test/{version}"
    loaded = load_model(uri)
    effects = loaded.bundle.effects
    assert effects is not None and effects.actions == bundle.effects.actions  # type: ignore[union-attr]
    matrix = bundle.matrix(frame)
    np.testing.assert_allclose(effects.estimate(matrix), bundle.effects.estimate(matrix))  # type: ignore[union-attr]

    playbook = load_playbook()
    learned = Scorer.for_model(loaded, playbook).score_frame(frame, "2026-01-01")
    priors = Scorer.for_model(champion, playbook).score_frame(frame, "2026-01-01")
    chosen = [a["name"] for a in learned["action"]]
    complained = (frame["complaints_365d"] > 0).to_numpy() & (frame["recency_days"] >= 20).to_numpy()
    calls = np.array(chosen) == "service_recovery_call"
    prior_calls = np.array([a["name"] for a in priors["action"]]) == "service_recovery_call"
    assert {a["decided_by"] for a in learned["action"]} == {"uplift effects"}
    assert {a["decided_by"] for a in priors["action"]} == {"playbook priors"}
    # the call is now given where it was learned to work, more often than the priors gave it, and ~only there
    assert calls[complained].mean() > prior_calls[complained].mean()
    # (the fitted trees say +0.4% where 0 was meant, which pays for a few customers of huge value)
    assert calls[~complained].mean() < 0.01
    assert set(chosen) <= {
        "service_recovery_call",
        "reminder_email",
        NO_ACTION,
    }  # the others hurt: never chosen
    dnc = np.array([a["do_not_contact"] for a in learned["action"]])
    assert dnc.any() and (frame["recency_days"].to_numpy()[dnc] < 20).mean() > 0.95
    paid = np.array([a["expected_net_value"] for a in learned["action"]])
    assert (np.array(chosen)[dnc] == NO_ACTION).all() and (paid[dnc] == 0).all()

    # the plain MLflow pyfunc answers with the same policy
    predicted = mlflow.pyfunc.load_model(uri).predict(frame)
    assert list(predicted["action_name"]) == chosen
    assert list(predicted["do_not_contact"]) == dnc.tolist()


class InputStore(FakeStore):
    """Stored scores and the inputs they were scored from, as a store returns them."""

    def __init__(self, scored: pd.DataFrame, frame: pd.DataFrame, names: list[str]) -> None:
        inputs = frame[names].astype(object).where(frame[names].notna(), None)
        self.rows = [
            {
                "customer_id": str(customer),
                "as_of": "2026-01-01",
                "churn_probability": float(row["churn_probability"]),
                "clv": float(row["clv"]["residual_value"]),
                "value_at_risk": float(row["value_at_risk"]),
                "value_basis": row["value_basis"],
                "segment": row["segment"],
                "risk_tier": row["risk_tier"],
                "action_name": row["action"]["name"],
                "action": row["action"],
            }
            for customer, (_, row) in zip(frame["customer_id"], scored.iterrows(), strict=True)
        ]
        self.inputs = dict(zip(frame["customer_id"].astype(str), inputs.to_dict("records"), strict=True))

    def get_many(self, ids: list[str], with_inputs: bool = True) -> dict[str, dict[str, Any]]:
        assert with_inputs
        return {i: {"customer_id": i, "features": self.inputs[i]} for i in ids if i in self.inputs}


@pytest.mark.slow
def test_a_plan_ranks_by_the_learned_effect_and_never_takes_do_not_contact(trained: Any) -> None:
    """With learned effects in the model that scored the store, the plan picks the customers the action
    was learned to keep (here: the service call works on customers with complaints), by that effect x
    the value if retained - cost, and leaves out every customer scoring flagged do-not-contact."""
    from dataclasses import replace as swap

    from features.model_store import LoadedModel, load_model
    from features.settings import get_settings
    from serving.scoring import Scorer
    from training.registry import configure_mlflow

    configure_mlflow(get_settings())
    champion = load_model("models:/churnguard@champion")
    frame = _features(trained)
    bundle = swap(champion.bundle, effects=_made_up_effects(champion.bundle, frame))
    playbook = load_playbook()
    scored = Scorer.for_model(LoadedModel(bundle, champion.info), playbook).score_frame(frame, "2026-01-01")
    store = InputStore(scored, frame, [f.name for f in bundle.features])
    request = PlanRequest("learned", "service_recovery_call", count=60, holdout=0.2, exploration=0.1)

    learned = plan_campaign(store, playbook, request, bundle)  # type: ignore[arg-type]
    priors = plan_campaign(store, playbook, request)  # type: ignore[arg-type]

    assert "learned uplift effects" in learned.summary["estimates"]
    assert "playbook prior" in priors.summary["estimates"]
    dnc = {r["customer_id"] for r in store.rows if r["action"]["do_not_contact"]}
    assert dnc and learned.summary["do_not_contact"] > 0
    assert not dnc & set(learned.rows["customer_id"]) and not dnc & set(priors.rows["customer_id"])
    complained = dict(zip(frame["customer_id"].astype(str), frame["complaints_365d"] > 0, strict=True))

    def complainers(plan: Any) -> float:
        ranked = plan.rows[plan.rows["selected_by"] == "ranked"]
        return float(np.mean([complained[c] for c in ranked["customer_id"]]))

    assert complainers(learned) > 0.9 and complainers(learned) > complainers(priors)
    ranked = learned.rows[learned.rows["selected_by"] == "ranked"]
    assert ranked["expected_net_value"].is_monotonic_decreasing and (ranked["expected_net_value"] > 0).all()
    assert all("learned from randomised campaigns" in why for why in ranked["why"])


@pytest.mark.slow
def test_a_bundle_of_the_format_before_effects_still_loads_and_uses_the_priors(
    trained: Any, tmp_path: Path
) -> None:
    import json

    from features.bundle import ModelBundle
    from features.model_store import load_model
    from features.settings import get_settings
    from serving.scoring import Scorer
    from training.registry import configure_mlflow

    configure_mlflow(get_settings())
    champion = load_model("models:/churnguard@champion")
    champion.bundle.save(tmp_path)
    spec = json.loads((tmp_path / "bundle.json").read_text())
    spec["format"], spec["clv_scale"] = 3, spec.pop("revenue_scale")  # format 3 named them clv
    del spec["effects"]
    (tmp_path / "revenue_model.txt").rename(tmp_path / "clv_model.txt")
    (tmp_path / "bundle.json").write_text(json.dumps(spec))
    old = ModelBundle.load(tmp_path)
    assert old.effects is None
    frame = _features(trained).head(50)
    scores = Scorer(old, load_playbook(), champion.info).score_frame(frame, "2026-01-01")
    assert {a["decided_by"] for a in scores["action"]} == {"playbook priors"}
    assert "action_name" not in old.predict(frame).columns  # no learned policy in the pyfunc's answer
