"""The campaigns table: loading, the errors a malformed file gets, outcomes after and features before the
assignment (the leakage property for campaign features)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.campaigns import (
    DO_NOTHING,
    campaign_features,
    campaign_outcomes,
    load_campaigns,
    received_action,
)
from features.engine import compute_features
from features.errors import DataValidationError
from features.loading import Dataset, load_dataset

NOW = datetime(2025, 12, 31)
CUSTOMERS = """customer_id,signup_date,segment
A,2023-07-01,retail
B,2024-01-01,retail
C,2024-02-01,business
G,2022-01-01,retail
"""
TRANSACTIONS = """customer_id,timestamp,amount,order_id
A,2024-01-02,100,O1
A,2024-06-21,30,O3
A,2024-07-01,999,O4
A,2024-08-01,20,O5
A,2024-09-29,500,O6
B,2024-03-01,40,O7
B,2024-07-10,25,O8
C,2024-06-01,10,O9
G,2023-06-01,10,O12
"""
CANCELLATIONS = """customer_id,timestamp
B,2024-07-15
"""
CAMPAIGNS = """customer_id,campaign,action,assigned_at,group,assignment_probability,cost
A,summer,loyalty_discount,2024-07-01,treatment,0.8,12
B,summer,loyalty_discount,2024-07-01,control,0.2,
C,summer,no_action,2024-07-01,Treatment ,0.5,0
G,summer,loyalty_discount,2024-07-01,treatment,0.8,12
"""


def _folder(tmp_path: Path, campaigns: str | None = CAMPAIGNS, **tables: str) -> Path:
    texts = {
        "customers": CUSTOMERS,
        "transactions": TRANSACTIONS,
        "cancellations": CANCELLATIONS,
        **tables,
    }
    if campaigns is not None:
        texts["campaigns"] = campaigns
    for name, text in texts.items():
        (tmp_path / f"{name}.csv").write_text(text)
    return tmp_path


@pytest.fixture()
def dataset(tmp_path: Path) -> Dataset:
    return load_dataset(_folder(tmp_path), now=NOW)


def test_a_valid_file_loads_with_groups_normalised_and_no_file_is_none(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    frame = load_campaigns(folder, now=NOW)
    assert frame is not None
    assert list(frame["group"]) == ["treatment", "control", "treatment", "treatment"]
    assert frame["assigned_at"].dtype.kind == "M"
    assert list(received_action(frame)) == ["loyalty_discount", DO_NOTHING, DO_NOTHING, "loyalty_discount"]
    (folder / "campaigns.csv").unlink()
    assert load_campaigns(folder, now=NOW) is None


@pytest.mark.parametrize(
    ("rows", "column", "words"),
    [
        ("A,c,loyalty_discount,2024-07-01,maybe,0.5\n", "group", "other than treatment and control"),
        ("A,c,loyalty_discount,2024-07-01,treatment,0\n", "assignment_probability", "probabilities of 0"),
        ("A,c,loyalty_discount,2024-07-01,treatment,1.5\n", "assignment_probability", ""),
        ("A,c,Loyalty Discount,2024-07-01,treatment,0.5\n", "action", "lower-case words"),
        ("A,c,loyalty_discount,next tuesday,treatment,0.5\n", "assigned_at", ""),
        ("Z,c,loyalty_discount,2024-07-01,treatment,0.5\n", "customer_id", "not in customers"),
        (
            "A,c,loyalty_discount,2024-07-01,treatment,0.5\nA,c,reminder_email,2024-07-01,treatment,0.5\n",
            "customer_id",
            "more than once in one campaign",
        ),
    ],
)
def test_malformed_files_are_refused_naming_file_column_and_fix(
    tmp_path: Path, rows: str, column: str, words: str
) -> None:
    header = "customer_id,campaign,action,assigned_at,group,assignment_probability\n"
    folder = _folder(tmp_path, header + rows)
    before = sorted(p.name for p in folder.iterdir())
    dataset = load_dataset(folder, now=NOW)
    with pytest.raises(DataValidationError) as caught:
        load_campaigns(folder, customers=dataset.customers["customer_id"], now=NOW)
    message = str(caught.value)
    assert "campaigns.csv" in message and f"column '{column}'" in message and "fix:" in message
    assert words in message
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_a_missing_required_column_and_every_problem_are_listed_together(tmp_path: Path) -> None:
    text = "customer_id,campaign,action,assigned_at\nA,c,loyalty_discount,2024-07-01\n"
    with pytest.raises(DataValidationError) as caught:
        load_campaigns(_folder(tmp_path, text), now=NOW)
    problems = caught.value.problems
    assert {p.column for p in problems} == {"group", "assignment_probability"}


def test_outcomes_count_the_horizon_after_assignment(dataset: Dataset, tmp_path: Path) -> None:
    campaigns = load_campaigns(tmp_path, now=NOW)
    assert campaigns is not None
    out = campaign_outcomes(dataset, campaigns, horizon_days=90).set_index("customer_id")
    # A buys on the assignment day and a month later; the purchase on day 90 is outside the window
    assert not out.loc["A", "churned"] and out.loc["A", "future_spend"] == pytest.approx(1019.0)
    assert out.loc["B", "churned"]  # bought, then cancelled inside the window
    assert out.loc["C", "churned"] and out.loc["C", "known"]
    assert out.loc["G", "churned"] and not out.loc["G", "known"]  # lapsed over a year: no outcome row
    assert out["complete"].all()


def test_campaign_features_are_the_features_before_assignment(dataset: Dataset, tmp_path: Path) -> None:
    campaigns = load_campaigns(tmp_path, now=NOW)
    assert campaigns is not None
    features = campaign_features(dataset, campaigns)
    assert set(features["customer_id"]) == {"A", "B", "C"}  # G was not active on 2024-07-01
    expected = compute_features(dataset, pd.Timestamp("2024-07-01")).set_index("customer_id")
    got = features.set_index("customer_id")[expected.columns]
    assert_frame_equal(got.sort_index(), expected.loc[got.index].sort_index(), check_dtype=False)
    assert got.loc["A", "orders_total"] == 2  # the order on the assignment day is an outcome, not a feature


def test_events_after_assignment_never_change_campaign_features(tmp_path: Path) -> None:
    """Leakage: rewriting everything at or after assigned_at leaves the campaign's features identical."""
    first = tmp_path / "first"
    first.mkdir()
    second = tmp_path / "second"
    second.mkdir()
    changed_future = (
        TRANSACTIONS.replace("A,2024-07-01,999,O4", "A,2024-07-01,5,O4")
        + "C,2024-07-01,700,O20\nB,2024-12-01,80,O21\n"
    )
    a = load_dataset(_folder(first), now=NOW)
    b = load_dataset(
        _folder(second, transactions=changed_future, cancellations="customer_id,timestamp\nA,2024-07-02\n"),
        now=NOW,
    )
    campaigns = load_campaigns(first, now=NOW)
    assert campaigns is not None
    assert_frame_equal(campaign_features(a, campaigns), campaign_features(b, campaigns))
    assert not campaign_outcomes(a, campaigns).equals(campaign_outcomes(b, campaigns))


# ------------------------------------------------------------------ the generator's sleeping dogs


def test_generated_sleeping_dogs_are_likelier_among_light_users_but_never_certain() -> None:
    """The world draws sleeping dogs among contract customers with odds that fall with usage (behaviour
    reveals the odds, never the draw); the earlier world's flat share stays available."""
    import numpy as np

    from features.errors import ConfigError
    from features.synthetic.campaigns import sleeping_dog_probability, sleeping_dogs
    from features.synthetic.params import DEFAULT_PARAMS

    rng = np.random.default_rng(0)
    n = 20_000
    rate = rng.gamma(DEFAULT_PARAMS.purchase_rate_shape, DEFAULT_PARAMS.mean_purchase_rate / 0.7, n)
    contract = rng.random(n) < 0.3
    ids = [f"C{i}" for i in range(n)]
    odds = sleeping_dog_probability(contract, rate, DEFAULT_PARAMS)
    dogs = sleeping_dogs(ids, odds)
    assert not dogs[~contract].any() and (odds[~contract] == 0).all()
    assert 0.5 < dogs[contract].mean() < 0.7  # about the earlier world's share
    light, heavy = contract & (rate < np.quantile(rate, 0.1)), contract & (rate > np.quantile(rate, 0.9))
    assert dogs[light].mean() > 0.85 and 0.1 < dogs[heavy].mean() < 0.4  # likelier, never certain
    assert (sleeping_dogs(ids, odds) == dogs).all()  # a hash, not a random draw: the same every run
    flat = sleeping_dog_probability(contract, rate, DEFAULT_PARAMS, "id_hash")
    assert set(np.unique(flat[contract])) == {0.6}
    with pytest.raises(ConfigError, match="sleeping-dog rule"):
        sleeping_dog_probability(contract, rate, DEFAULT_PARAMS, "random")  # type: ignore[arg-type]


def test_the_truth_records_the_effect_expected_over_the_sleeping_dog_draw(tmp_path: Path) -> None:
    """``true_effect_blind`` (what a policy built on the data can know) is the true effect without a
    contract; for a drawn sleeping dog it is milder than the truth, for a contract customer spared it is
    harsher, and the odds fall with the customer's purchase rate."""
    from datetime import date

    import numpy as np

    from features.synthetic import Period, Scenario, generate_dataset
    from features.synthetic.campaigns import CampaignDesign, CampaignSetup, load_campaign_effects
    from features.synthetic.oracle import load_truth

    design = CampaignDesign("spring", date(2025, 3, 1), (("account_review", 0.5),))
    scenario = Scenario("base", Period(date(2024, 1, 1), date(2025, 7, 1)), CampaignSetup(designs=(design,)))
    generate_dataset(tmp_path / "data", 1500, seed=2, scenario=scenario, truth_dir=tmp_path / "truth")
    effects = load_campaign_effects(tmp_path / "truth")
    rows = effects[effects["action"] == "account_review"].set_index("customer_id")
    odds = rows["sleeping_dog_probability"]
    contract = odds > 0
    assert contract.any() and (~contract).any() and rows.loc[contract, "sleeping_dog"].any()
    truth, blind = rows["true_effect"], rows["true_effect_blind"]
    assert np.allclose(blind[~contract], truth[~contract])
    dog, spared = contract & rows["sleeping_dog"], contract & ~rows["sleeping_dog"]
    assert (blind[dog] <= truth[dog] + 1e-12).all() and (blind[spared] >= truth[spared] - 1e-12).all()
    rate = load_truth(tmp_path / "truth")["purchase_rate"].reindex(odds.index)
    assert np.corrcoef(np.log(rate[contract]), odds[contract])[0, 1] < -0.9
