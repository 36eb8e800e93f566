"""The analyst notebooks and the analysis functions behind them, on the session's small generated data.

Both notebooks are executed end to end with nbclient in a fresh kernel (the venv's python), pointed at
the session's data folder and its really trained champion; the committed notebooks must carry no
outputs. The functions behind them (``features.profile`` for 01, ``training.analysis`` and
``serving.insights`` for 02) are checked for the properties the notebooks' text relies on.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from features import profile
from features.engine import compute_features, compute_labels
from features.errors import DataValidationError
from features.loading import Dataset, load_dataset
from features.snapshots import observed_until
from serving import insights
from training import analysis as an

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("01_explore.ipynb", "02_model_report.ipynb")
HORIZON = 90
CELL_TIMEOUT = 300


# ------------------------------------------------------------------------------------ committed state


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [], f"cell {cell.get('id')} carries outputs: clear them before committing"
        assert cell.execution_count is None, f"cell {cell.get('id')} carries an execution count"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"extra notebook metadata {set(nb.metadata)}"
    assert nb.metadata["kernelspec"]["name"] == "python3"


# ------------------------------------------------------------------------------------------ execution


def _execute(name: str) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # The kernel inherits os.environ when it starts; "python" in the kernelspec becomes sys.executable.
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _images(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for output in _outputs(nb):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _check_clean(nb: nbformat.NotebookNode) -> None:
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


def _cell_with(nb: nbformat.NotebookNode, needle: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


@pytest.fixture
def notebook_env(trained, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The session's data folder; CHURNGUARD_HOME stays as the ``trained`` fixture set it."""
    monkeypatch.setenv(profile.DATA_ENV, str(trained.data))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert os.environ["CHURNGUARD_HOME"] == str(trained.home)


@pytest.mark.usefixtures("notebook_env")
def test_explore_notebook_runs() -> None:
    nb = _execute("01_explore.ipynb")
    _check_clean(nb)
    text = _text(nb)
    assert "transactions" in text and "churn_rate" in text and "adjusted_churn_rate" in text
    for needle in ("activity_figure", "distribution_figure", "churn_over_time_figure", "cohort_figure"):
        assert _images(_cell_with(nb, needle)) == 1, f"no figure from {needle}"
    assert _images(_cell_with(nb, "service_figure")) == 1


@pytest.mark.usefixtures("notebook_env")
def test_model_report_notebook_runs(trained) -> None:  # type: ignore[no-untyped-def]
    nb = _execute("02_model_report.ipynb")
    _check_clean(nb)
    text = _text(nb)
    assert f"churnguard version {trained.version} (@champion)" in text
    assert "rfm_logistic" in text and "recency_rule" in text
    assert _images(_cell_with(nb, "reliability_figure")) == 1
    assert _images(_cell_with(nb, "gains_figure")) == 1
    assert _images(_cell_with(nb, "backtest_figure")) == 1, "the rolling-origin backtest is shown"
    assert _images(_cell_with(nb, "shap.plots.beeswarm")) == 1
    assert _images(_cell_with(nb, "shap.plots.scatter")) == 3
    assert _images(_cell_with(nb, "shap.plots.waterfall")) == 2
    assert "raises risk" in _text(nb)  # the reason sentences of the two example customers
    assert _images(_cell_with(nb, "lifetime_value_figure")) == 1
    assert "lifetime value (discounted, to the end of the relationship)" in text
    assert "revenue basis: no economics config" in text  # the session's model has no economics config
    assert "share_beyond_1y" in _text(nb)  # value by segment, with the part beyond one year


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_never_call_the_revenue_forecast_clv(name: str) -> None:
    """CLV used to name the 90-day revenue forecast; the notebooks say "lifetime value" or "revenue
    forecast", so no reader takes one horizon for the other."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        assert not re.search(r"\bCLV\b", cell.source), f"cell {cell.get('id')} says CLV"
        assert "report.clv" not in cell.source


# ------------------------------------------------------------------------------------ analysis: data


@pytest.fixture(scope="module")
def dataset(small_data: Path) -> Dataset:
    return load_dataset(small_data)


@pytest.fixture(scope="module")
def quarterly(dataset: Dataset) -> list[pd.Timestamp]:
    """Cutoffs one horizon apart (label windows never overlap)."""
    return profile.label_cutoffs(dataset, HORIZON, step_days=HORIZON)


def test_table_profile_counts_rows_and_dates(dataset: Dataset) -> None:
    tables = profile.table_profile(dataset).set_index("table")
    assert list(tables.index) == list(profile.TABLE_NAMES)
    assert tables.loc["transactions", "rows"] == len(dataset.transactions)
    assert tables.loc["transactions", "last"] == dataset.transactions["timestamp"].max()
    assert tables["null_share"].between(0, 1).all()


def test_monthly_activity_counts_every_order_once(dataset: Dataset) -> None:
    monthly = profile.monthly_activity(dataset)
    assert monthly["orders"].sum() == len(profile.orders(dataset))
    assert monthly["month"].is_monotonic_increasing
    assert monthly["partial"].iloc[-1]  # the data ends mid-month
    assert not monthly["partial"].iloc[1:-1].any()


def test_label_cutoffs_end_at_the_validation_cutoff(dataset: Dataset) -> None:
    cutoffs = profile.label_cutoffs(dataset, HORIZON, step_days=30)
    assert cutoffs[-1] == observed_until(dataset) - pd.Timedelta(days=HORIZON)
    assert all(b - a == pd.Timedelta(days=30) for a, b in itertools.pairwise(cutoffs))
    assert cutoffs[0] >= dataset.transactions["timestamp"].min()


def test_churn_rate_over_time_is_a_rate_and_matches_the_labels(
    dataset: Dataset, quarterly: list[pd.Timestamp]
) -> None:
    labels = profile.labels_at(dataset, quarterly, HORIZON)
    rates = profile.churn_rate_over_time(dataset, HORIZON, labels=labels)
    assert len(rates) == len(quarterly)
    assert rates["churn_rate"].between(0, 1).all()
    assert (rates["churn_rate_low"] <= rates["churn_rate"]).all()
    assert (rates["churn_rate"] <= rates["churn_rate_high"]).all()
    newest = compute_labels(dataset, quarterly[-1], HORIZON)
    assert rates["churn_rate"].iloc[-1] == pytest.approx(newest["churned"].mean())
    assert rates["customers"].iloc[-1] == len(newest)

    cohorts = profile.churn_by_cohort(dataset, HORIZON, labels=labels)
    per_cutoff = cohorts.groupby("cutoff")["customers"].sum()
    assert (per_cutoff.to_numpy() == rates["customers"].to_numpy()).all()  # every customer has a cohort
    assert cohorts["churn_rate"].between(0, 1).all()
    assert (cohorts["tenure_months"] >= 0).all()


def test_service_problems_go_with_more_churn_among_comparable_customers(
    dataset: Dataset, quarterly: list[pd.Timestamp]
) -> None:
    """The generator raises the hazard of leaving with unresolved complaints. Among customers who buy
    equally often that shows; raw rates hide it (only buyers complain, and buyers churn less)."""
    service = profile.service_vs_churn(dataset, quarterly[-8:], HORIZON)  # two years: enough complainers
    assert service[["churn_rate", "adjusted_churn_rate", "share"]].stack().between(0, 1).all()
    assert np.allclose(service.groupby("feature")["share"].sum(), 1.0)
    unresolved = service.loc[service["feature"] == "unresolved_complaints_365d"].set_index("level")
    some = unresolved.drop(index="0")
    adjusted = float(np.average(some["adjusted_churn_rate"], weights=some["customers"]))
    assert adjusted > unresolved.loc["0", "adjusted_churn_rate"] + 0.05


def test_service_vs_churn_leaves_out_factors_without_source_data(dataset: Dataset) -> None:
    without = dataclasses.replace(
        dataset, provided=frozenset(p for p in dataset.provided if not p.startswith("interactions"))
    )
    cutoff = observed_until(dataset) - pd.Timedelta(days=HORIZON)
    service = profile.service_vs_churn(without, cutoff, HORIZON)
    assert set(service["feature"]) == {"late_deliveries_365d"}


@pytest.fixture(scope="module")
def bare(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Only the required columns of transactions: no customers, interactions or cancellations."""
    folder = tmp_path_factory.mktemp("bare")
    tx = pd.read_parquet(small_data / "transactions.parquet", columns=["customer_id", "timestamp", "amount"])
    tx.to_csv(folder / "transactions.csv", index=False)
    return load_dataset(folder)


def test_exploration_works_on_transactions_alone(bare: Dataset) -> None:
    tables = profile.table_profile(bare).set_index("table")
    assert not tables.loc[["customers", "interactions", "cancellations"], "provided"].any()
    columns = profile.column_profile(bare).set_index(["table", "column"])
    assert not columns.loc[("transactions", "delivery_delay_days"), "provided"]
    assert columns.loc[("transactions", "amount"), "provided"]
    monthly = profile.monthly_activity(bare)
    assert monthly["new_customers"].sum() == bare.transactions["customer_id"].nunique()  # first orders
    assert profile.interaction_summary(bare).empty
    cutoffs = profile.label_cutoffs(bare, HORIZON, step_days=HORIZON)[-3:]
    labels = profile.labels_at(bare, cutoffs, HORIZON)
    cohorts = profile.churn_by_cohort(bare, HORIZON, labels=labels)
    assert cohorts["customers"].sum() == len(labels)
    service = profile.service_vs_churn(bare, cutoffs[-1], HORIZON)
    assert service.empty and list(service.columns) == profile.SERVICE_COLUMNS
    figures = [
        profile.activity_figure(monthly),
        profile.distribution_figure(profile.customer_purchases(bare), profile.purchase_gaps(bare)),
        profile.churn_over_time_figure(profile.churn_rate_over_time(bare, HORIZON, labels=labels)),
        profile.cohort_figure(cohorts),
        profile.service_figure(service),
    ]
    for figure in figures:
        figure.savefig(io.BytesIO(), format="png", dpi=40)  # draws without error


def test_orders_are_the_orders_the_features_count(dataset: Dataset) -> None:
    """The profiles and the model read the same purchases: an order in the notebook is one for the model
    (the features cover the customers active in the last year)."""
    per_customer = profile.orders(dataset).groupby("customer_id").size()
    features = compute_features(dataset, observed_until(dataset)).set_index("customer_id")
    assert len(features) > 100
    expected = per_customer.reindex(features.index, fill_value=0)
    assert (features["orders_total"] == expected).all()


def test_service_vs_churn_without_cutoffs_says_the_data_is_too_short(dataset: Dataset) -> None:
    with pytest.raises(DataValidationError, match="too short"):
        profile.service_vs_churn(dataset, [], HORIZON)


def test_purchase_rhythm_and_gaps(dataset: Dataset) -> None:
    gaps = profile.purchase_gaps(dataset)
    assert (gaps >= 0).all()
    assert len(gaps) == len(profile.orders(dataset)) - profile.orders(dataset)["customer_id"].nunique()
    rhythm = profile.purchase_rhythm(gaps, HORIZON).iloc[0]
    assert 0 <= rhythm["share_of_gaps_beyond_horizon"] <= 1


def test_reliability_and_gains_tables() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    table = an.reliability_table(y, p, bins=10)
    assert table["count"].sum() == 1000 and table["churned"].sum() == y.sum()
    assert np.allclose(table["observed"], table["mean_predicted"], atol=0.12)  # calibrated by construction
    assert (table["observed_low"] <= table["observed"]).all()
    assert (table["observed"] <= table["observed_high"]).all()
    gains = an.gains_by_model(y, {"perfect": y.astype(float), "model": p})
    end = gains.groupby("model")["churners_reached"].last()
    assert np.allclose(end, 1.0)
    assert gains.groupby("model")["churners_reached"].apply(lambda s: s.is_monotonic_increasing).all()


# ----------------------------------------------------------------------------------- analysis: model


@pytest.fixture(scope="module")
def champion(trained) -> an.Champion:  # type: ignore[no-untyped-def]
    from features.settings import get_settings

    return an.load_champion(get_settings())


def test_the_backtest_logged_with_the_champion_has_an_origin_per_row(champion: an.Champion) -> None:
    table = an.backtest_table(champion)
    assert len(table) >= 1 and table["origin"].is_unique and table["origin"].is_monotonic_increasing
    assert {"origin", "roc_auc", "ece"} <= set(table.columns)
    assert table["roc_auc"].between(0.5, 1.0).all() and table["ece"].between(0.0, 1.0).all()


@pytest.fixture(scope="module")
def valid(trained, champion: an.Champion) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return an.validation_frame(load_dataset(trained.data), champion.bundle)


def test_evaluation_reproduces_the_metrics_recorded_at_training(
    trained,  # type: ignore[no-untyped-def]
    champion: an.Champion,
    valid: pd.DataFrame,
) -> None:
    assert champion.info.version == trained.version
    assert str(valid["cutoff"].iloc[0].date()) == champion.bundle.metadata["cutoffs"]["validation"]
    history = an.baseline_frame(load_dataset(trained.data), champion.bundle, valid["cutoff"].iloc[0])
    assert history["cutoff"].iloc[0] + pd.Timedelta(days=HORIZON) <= valid["cutoff"].iloc[0]
    report = an.evaluation_report(champion.bundle, valid, history)
    assert list(report.churn["model"]) == ["churnguard", "rfm_logistic", "recency_rule"]
    check = an.recorded_vs_recomputed(champion.bundle, report)
    assert np.allclose(check["difference"], 0.0, atol=1e-9), check


@pytest.fixture(scope="module")
def scores(champion: an.Champion, valid: pd.DataFrame) -> pd.DataFrame:
    return insights.score_frame(champion, valid)


def test_scores_summaries_and_examples(scores: pd.DataFrame, valid: pd.DataFrame) -> None:
    summary = insights.segment_action_summary(scores, valid)
    assert summary["customers"].sum() == len(valid)
    assert summary["share"].sum() == pytest.approx(1.0)
    assert summary["observed_churn_rate"].between(0, 1).all()
    tiers = insights.risk_tier_summary(scores, valid).set_index("risk_tier")
    if {"low", "high"} <= set(tiers.index):  # the model separates who leaves from who stays
        assert tiers.loc["high", "observed_churn_rate"] > tiers.loc["low", "observed_churn_rate"]
    examples = insights.example_customers(scores, n=2)
    assert len(set(examples)) == 2
    for customer_id in examples:
        reasons = insights.reasons_table(scores, customer_id)
        assert len(reasons) and reasons["sentence"].str.len().gt(0).all()


def test_shap_explanation_adds_up_to_the_raw_score(champion: an.Champion, valid: pd.DataFrame) -> None:
    rows = insights.rows_of(valid, list(valid["customer_id"].iloc[:5]))
    explanation = an.shap_explanation(champion.bundle, rows, max_rows=None)
    raw = champion.bundle.churn_raw(champion.bundle.matrix(rows))
    assert np.allclose(explanation.base_values + explanation.values.sum(axis=1), raw)
    importance = an.shap_importance(an.shap_explanation(champion.bundle, valid, max_rows=300))
    assert importance["share"].sum() == pytest.approx(1.0)
    top = an.numeric_top_features(champion.bundle, importance, n=3)
    assert len(top) == 3 and all(champion.bundle.feature_info(f).categories is None for f in top)


def test_lifetime_value_by_segment_and_beyond_one_year(scores: pd.DataFrame) -> None:
    values = an.lifetime_values(scores)
    assert len(values) == scores["clv"].map(lambda v: isinstance(v, dict)).sum() > 0
    detail = scores.set_index("customer_id").loc[values["customer_id"], "clv"]
    assert np.allclose(values["residual_value"], [d["residual_value"] for d in detail])
    assert np.allclose(values["beyond_1y"], values["residual_value"] - values["value_1y"])
    assert (values["basis"] == "revenue").all()  # no economics config in the session's model
    # on a revenue basis every year adds value: the part beyond one year is never negative
    assert (values["beyond_1y"] >= -0.01).all() and values["share_beyond_1y"].dropna().between(0, 1).all()
    assert "revenue basis: no economics config" in an.value_terms(values, scored=len(scores))

    table = an.value_by_segment(values)
    segments, total = table[table["segment"] != "all"], table[table["segment"] == "all"].iloc[0]
    assert set(segments["segment"]) == set(values["segment"])
    assert segments["customers"].sum() == total["customers"] == len(values)
    assert segments["lifetime_value"].sum() == pytest.approx(total["lifetime_value"])
    assert segments["share_of_value"].sum() == pytest.approx(1.0) and total[
        "share_of_value"
    ] == pytest.approx(1.0)
    assert segments["lifetime_value"].is_monotonic_decreasing
    expected = values["beyond_1y"].sum() / values["residual_value"].sum()
    assert total["share_beyond_1y"] == pytest.approx(expected)
    an.lifetime_value_figure(values).savefig(io.BytesIO(), format="png", dpi=40)
    assert an.value_by_segment(values.iloc[:0]).empty
    assert "not available" in an.value_terms(values.iloc[:0])
