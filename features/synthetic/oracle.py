"""The ground truth: writing it, reading it back, and the best possible churn probability and residual
value it implies.

The oracle evaluates the same hazard and purchase-rate formulas as the simulation
(:mod:`features.synthetic.params`) with the parameters and per-month world factors the truth folder
recorded, so it stays exact in every scenario. The residual value follows each customer's latent process
forward (:mod:`features.synthetic.residual`). No product command reads a truth folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.economics import DEFAULT_DISCOUNT_RATE
from features.errors import ConfigError
from features.synthetic.params import (
    DAYS_PER_MONTH,
    NONE,
    ORDER_CHANNELS,
    PLANS,
    SECONDS_PER_DAY,
    SEGMENTS,
    Calendar,
    Customers,
    Experience,
    Outcome,
    Params,
    Tenure,
    monthly_hazard,
    purchase_rate,
)
from features.synthetic.residual import (
    DRAWS,
    Horizon,
    MonteCarlo,
    Start,
    ValueTraits,
    expected_residual_value,
)
from features.synthetic.scenarios import World, build_world
from features.synthetic.write import TS, customer_columns, departure_seconds, vocab_strings

TRUTH_FORMAT_VERSION = 1
_MONTHLY_STATES = ("gap", "activity")
# The state residual value grows from (written since it exists); a folder without it still reads for churn.
_EXPERIENCE_STATES = ("failures", "orders_seen", "pull")
_END_STATE = {name: f"end_{name}" for name in ("failures", "orders_seen", "pull", "activity")}


@dataclass(frozen=True)
class TruthRun:
    """What produced a truth folder: the seed, the world and its calendar."""

    seed: int
    world: World
    calendar: Calendar


def write_truth(folder: Path, customers: Customers, outcome: Outcome, ids: np.ndarray, run: TruthRun) -> None:
    """Write the latent traits, the per-month states, the state at the end and the metadata (format in the
    package docstring). ``ids`` are the customer ids exactly as the data's loader will produce them."""
    calendar = run.calendar
    departure = departure_seconds(outcome, calendar)
    left = departure >= 0
    left_us = np.where(departure >= 0, calendar.start_us + departure * 1_000_000, 0)
    death_time = pa.array(left_us, type=TS, mask=departure < 0)
    cancellation_time = pa.array(left_us, type=TS, mask=(departure < 0) | (customers.plan == NONE))
    traits = pa.table(
        {
            **customer_columns(customers, ids, calendar),
            "is_contract": pa.array(customers.plan != NONE),
            "loyal_unprofitable": pa.array(customers.loyal),
            "purchase_rate": pa.array(customers.purchase_rate),
            "spend_level": pa.array(customers.spend_level),
            "discount_propensity": pa.array(customers.discount_propensity),
            "late_delivery_prob": pa.array(customers.late_prob),
            "defect_prob": pa.array(customers.defect_prob),
            "expectation": pa.array(customers.expectation),
            "base_hazard": pa.array(customers.base_hazard),
            "death_time": death_time,
            "cancellation_time": cancellation_time,
            "complain_propensity": pa.array(customers.complain_propensity),
            "return_prob": pa.array(customers.discretionary_return_prob),
            "primary_channel": vocab_strings(customers.primary_channel, ORDER_CHANNELS),
            **{
                column: pa.array(getattr(outcome.final, name), mask=left)
                for name, column in _END_STATE.items()
            },
        }
    )
    pq.write_table(traits, folder / "customers.parquet", compression="zstd")
    for state in (*_MONTHLY_STATES, *_EXPERIENCE_STATES):
        np.save(folder / f"{state}.npy", getattr(outcome, state))
    meta: dict[str, object] = {
        "format_version": TRUTH_FORMAT_VERSION,
        "seed": run.seed,
        "start": calendar.start.isoformat(),
        "end": calendar.end.isoformat(),
        "months": list(calendar.labels),
        "params": dataclasses.asdict(run.world.params),
    }
    scenario = run.world.meta()
    if scenario is not None:
        meta["scenario"] = scenario
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_truth(truth_dir: Path) -> pd.DataFrame:
    """Read a truth folder written by :func:`~features.synthetic.generate_dataset` into one frame indexed
    by ``customer_id``.

    Columns are the latent traits of ``customers.parquet`` plus float32 ``gap_YYYY_MM`` and
    ``activity_YYYY_MM`` columns per simulated month, and ``failures_``, ``orders_seen_`` and ``pull_``
    ones when the folder has them (older truth folders do not); ``attrs["synthetic"]``
    holds the period (``start``, ``end``), the recorded ``params``, the world's per-month ``hazard_factor``
    and ``late_factor``, the ``scenario`` name and the ``seed``, which :func:`true_churn_probability` and
    :func:`true_residual_value` need.
    """
    truth_dir = Path(truth_dir)
    meta = json.loads((truth_dir / "meta.json").read_text())
    if meta.get("format_version") != TRUTH_FORMAT_VERSION:
        raise ConfigError(
            f"{truth_dir} holds truth format {meta.get('format_version')!r}, this version reads "
            f"{TRUTH_FORMAT_VERSION}; regenerate the synthetic data."
        )
    traits = pd.read_parquet(truth_dir / "customers.parquet").set_index("customer_id")
    present = [s for s in _EXPERIENCE_STATES if (truth_dir / f"{s}.npy").exists()]
    states = [
        pd.DataFrame(
            np.load(truth_dir / f"{state}.npy"),
            index=traits.index,
            columns=[f"{state}_{label}" for label in meta["months"]],
        )
        for state in (*_MONTHLY_STATES, *present)
    ]
    truth = pd.concat([traits, *states], axis=1)
    scenario = meta.get("scenario") or {}
    ones = [1.0] * len(meta["months"])
    truth.attrs["synthetic"] = {
        "start": meta["start"],
        "end": meta["end"],
        "params": meta.get("params", {}),
        "hazard_factor": scenario.get("hazard_factor", ones),
        "late_factor": scenario.get("late_factor", ones),
        "scenario": scenario.get("name", "base"),
        "seed": meta.get("seed", 0),
    }
    return truth


def true_churn_probability(truth: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """Oracle probability that each customer churns in [cutoff, cutoff + horizon_days).

    Churn means what the observable label means: no purchase in the window, or a cancellation in it. The
    oracle knows the latent state at the cutoff: customers who already left (silently or by cancelling) get
    1.0; for the others it uses their purchase rate, activity and gap at the cutoff: the gap is held through
    the horizon, activity decays as its AR(1) is expected to, and tenure, anniversaries, seasonality and the
    world's per-month hazard factor advance as in the simulation. With piecewise-constant rates λ_k, μ_k over
    the months k of the window (durations Δ_k):

    * no contract (silent death): P = 1 − Σ_k S_k λ_k/(λ_k+μ_k)(1 − e^{−(λ_k+μ_k)Δ_k}), with S_k the
      probability of neither buying nor dying before month k (for constant rates this is
      e^{−(λ+μ)H} + μ/(λ+μ)(1 − e^{−(λ+μ)H}));
    * contract (explicit cancellation): P = 1 − e^{−Σμ_kΔ_k}(1 − e^{−Σλ_kΔ_k}).

    The window is clipped at the end of the simulated period, like the tables. Customers who had not signed
    up by the cutoff are left out. Returns a float Series in [0, 1] indexed by ``customer_id``.
    """
    world, cutoff_day = _OracleWorld.of(truth, cutoff, horizon_days)
    signed_up = truth[truth["signup_date"] <= pd.Timestamp(cutoff)]
    state = _OracleState.at_cutoff(signed_up, world.calendar, world.calendar.month_of_day(cutoff_day))
    window_end = min(cutoff_day + horizon_days, world.calendar.total_days)
    probability = world.window_churn_probability(state, cutoff_day, window_end)
    gone = (signed_up["death_time"] <= pd.Timestamp(cutoff)).to_numpy(dtype=bool, na_value=False)
    probability = np.where(gone, 1.0, probability)
    return pd.Series(probability, index=signed_up.index, name="true_churn_probability")


def true_residual_value(
    truth: pd.DataFrame,
    cutoff: pd.Timestamp,
    *,
    annual_discount_rate: float = DEFAULT_DISCOUNT_RATE,
    draws: int = DRAWS,
    seed: int | None = None,
) -> pd.Series:
    """Oracle residual value at ``cutoff``: each customer's expected revenue from the cutoff to the end of
    the relationship, discounted to the cutoff at ``annual_discount_rate`` (``(1 + r) ** (-days / 365.25)``,
    as the value model discounts), from the latent state at the cutoff (see
    :mod:`features.synthetic.residual`).

    The state is the one in force in the cutoff's month (the same information as
    :func:`true_churn_probability`); at the period ``end`` it is the state at the end. Customers who had not
    signed up by the cutoff are left out; those who had left are worth 0. It is a Monte-Carlo estimate with
    ``draws`` paths per customer (with the default 32, about 5% from the exact expectation for the median
    customer and 13% at the 90th percentile, errors independent between customers); ``seed`` defaults to the
    world's, so the same truth gives the same figures. It takes about 0.3 s of CPU per thousand customers
    there at the cutoff. Returns a float Series indexed by ``customer_id``.
    """
    period = truth.attrs.get("synthetic")
    if not period:
        raise ConfigError("truth lacks attrs['synthetic']; load it with load_truth(truth_dir).")
    calendar = Calendar.between(pd.Timestamp(period["start"]).date(), pd.Timestamp(period["end"]).date())
    cutoff = pd.Timestamp(cutoff)
    if not calendar.start <= cutoff <= calendar.end:
        raise ConfigError(
            f"cutoff {cutoff} lies outside the simulated period [{calendar.start}, {calendar.end}]."
        )
    signed_up = truth[truth["signup_date"] <= cutoff]
    gone = (signed_up["death_time"] <= cutoff).to_numpy(dtype=bool, na_value=False)
    there = signed_up[~gone]
    day = (cutoff - calendar.start) / pd.Timedelta(days=1)
    traits = _value_traits(there, calendar)
    start = _start(there, calendar, day, traits.signup_day)
    world = build_world(period.get("scenario", "base"), calendar)
    n_months = calendar.n_months
    horizon = Horizon(
        Params.from_meta(period.get("params") or {}),
        calendar,
        np.asarray(period.get("hazard_factor") or np.ones(n_months), dtype=np.float64),
        np.asarray(period.get("late_factor") or np.ones(n_months), dtype=np.float64),
        cyclic=world.cyclic,
        net_of_returns=world.shape == "shop_export",
    )
    seed = int(period.get("seed", 0)) if seed is None else seed
    mc = MonteCarlo(annual_discount_rate=annual_discount_rate, draws=draws, seed=seed)
    values = np.zeros(len(signed_up))
    values[~gone] = expected_residual_value(traits, start, horizon, mc)
    return pd.Series(values, index=signed_up.index, name="true_residual_value")


_VALUE_TRAITS = ("complain_propensity", "return_prob", "primary_channel", *_END_STATE.values())


def _value_traits(truth: pd.DataFrame, calendar: Calendar) -> ValueTraits:
    """The traits the future depends on, from truth rows; ConfigError for a truth written before them."""
    missing = [column for column in _VALUE_TRAITS if column not in truth.columns]
    if missing:
        raise _older_truth(missing)
    signup_day = (truth["signup_date"] - calendar.start).dt.total_seconds().to_numpy() / SECONDS_PER_DAY

    def number(column: str) -> np.ndarray:
        return truth[column].to_numpy(dtype=np.float64)

    def codes(column: str, vocabulary: tuple[str, ...]) -> np.ndarray:
        return pd.Categorical(truth[column], categories=vocabulary).codes.astype(np.int8)

    return ValueTraits(
        signup_day=signup_day,
        signup_month=np.searchsorted(calendar.edges, signup_day, side="right") - 1,
        segment=codes("segment", SEGMENTS),
        plan=codes("plan", PLANS),
        loyal=truth["loyal_unprofitable"].to_numpy(dtype=bool),
        purchase_rate=number("purchase_rate"),
        spend_level=number("spend_level"),
        discount_propensity=number("discount_propensity"),
        late_prob=number("late_delivery_prob"),
        defect_prob=number("defect_prob"),
        return_prob=number("return_prob"),
        complain_propensity=number("complain_propensity"),
        expectation=number("expectation"),
        base_hazard=number("base_hazard"),
        primary_channel=codes("primary_channel", ORDER_CHANNELS),
    )


def _older_truth(missing: list[str]) -> ConfigError:
    return ConfigError(
        f"the truth lacks {', '.join(missing)}: it was written before truth folders kept what residual "
        "value needs; regenerate the synthetic data."
    )


def _start(truth: pd.DataFrame, calendar: Calendar, day: float, signup_day: np.ndarray) -> Start:
    """The state the future grows from: the end state at the period end, else the cutoff month's."""
    if day >= calendar.total_days:
        state = Experience(*(truth[column].to_numpy(dtype=np.float64) for column in _END_STATE.values()))
        window = np.full(len(truth), calendar.total_days)
        return Start(day, calendar.n_months - 1, state, window)
    month = calendar.month_of_day(day)
    columns = [f"{name}_{calendar.labels[month]}" for name in _END_STATE]
    missing = [column for column in columns if column not in truth.columns]
    if missing:
        raise _older_truth(missing)
    state = Experience(*(np.nan_to_num(truth[column].to_numpy(dtype=np.float64)) for column in columns))
    return Start(day, month, state, np.maximum(calendar.edges[month], signup_day))


@dataclass(frozen=True)
class _OracleState:
    """What the generator knows about each signed-up customer at a cutoff in month ``month``."""

    month: int
    plan: np.ndarray
    base_hazard: np.ndarray
    purchase_rate: np.ndarray
    signup_day: np.ndarray
    signup_month: np.ndarray
    gap: np.ndarray
    activity: np.ndarray

    @staticmethod
    def at_cutoff(truth: pd.DataFrame, calendar: Calendar, month: int) -> _OracleState:
        """Traits plus the cutoff month's gap and activity of the customers in ``truth``."""
        label = calendar.labels[month]
        signup_day = (truth["signup_date"] - calendar.start).dt.total_seconds().to_numpy() / SECONDS_PER_DAY
        return _OracleState(
            month=month,
            plan=pd.Categorical(truth["plan"], categories=PLANS).codes.astype(np.int8),
            base_hazard=truth["base_hazard"].to_numpy(dtype=np.float64),
            purchase_rate=truth["purchase_rate"].to_numpy(dtype=np.float64),
            signup_day=signup_day,
            signup_month=np.searchsorted(calendar.edges, signup_day, side="right") - 1,
            gap=np.nan_to_num(truth[f"gap_{label}"].to_numpy(dtype=np.float64)),
            activity=np.nan_to_num(truth[f"activity_{label}"].to_numpy(dtype=np.float64)),
        )


@dataclass(frozen=True)
class _OracleWorld:
    """The recorded world the oracle integrates over: calendar, parameters and per-month hazard factor."""

    calendar: Calendar
    params: Params
    hazard_factor: np.ndarray

    @staticmethod
    def of(truth: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> tuple[_OracleWorld, float]:
        """The truth's world and the cutoff in days since its start, after checking the arguments."""
        period = truth.attrs.get("synthetic")
        if not period:
            raise ConfigError("truth lacks attrs['synthetic']; load it with load_truth(truth_dir).")
        calendar = Calendar.between(pd.Timestamp(period["start"]).date(), pd.Timestamp(period["end"]).date())
        cutoff = pd.Timestamp(cutoff)
        if not calendar.start <= cutoff < calendar.end:
            raise ConfigError(
                f"cutoff {cutoff} lies outside the simulated period [{calendar.start}, {calendar.end})."
            )
        if horizon_days <= 0:
            raise ConfigError(f"horizon_days must be positive, got {horizon_days}.")
        factor = np.asarray(period.get("hazard_factor") or np.ones(calendar.n_months), dtype=np.float64)
        world = _OracleWorld(calendar, Params.from_meta(period.get("params") or {}), factor)
        return world, (cutoff - calendar.start) / pd.Timedelta(days=1)

    def window_churn_probability(self, state: _OracleState, begin: float, finish: float) -> np.ndarray:
        """P(churn in [begin, finish)) for customers alive at ``begin``, integrating month by month."""
        n = len(state.plan)
        survive_no_buy, buy_first = np.ones(n), np.zeros(n)
        total_hazard, total_rate = np.zeros(n), np.zeros(n)
        for month, segment_start, segment_end in self._month_segments(begin, finish):
            hazard, rate = self._daily_rates(state, month)
            span = segment_end - segment_start
            both = hazard + rate
            share_buying = np.divide(rate, both, out=np.zeros_like(both), where=both > 0)
            buy_first += survive_no_buy * share_buying * -np.expm1(-both * span)
            survive_no_buy *= np.exp(-both * span)
            total_hazard += hazard * span
            total_rate += rate * span
        silent = 1.0 - buy_first  # no purchase before dying or the window ending
        explicit = 1.0 - np.exp(-total_hazard) * -np.expm1(-total_rate)  # cancels, or survives without buying
        return np.clip(np.where(state.plan == NONE, silent, explicit), 0.0, 1.0)

    def _month_segments(self, begin: float, finish: float) -> Iterator[tuple[int, float, float]]:
        """(month index, start day, end day) of the parts of [begin, finish) inside each simulated month."""
        calendar = self.calendar
        month = calendar.month_of_day(begin)
        while month < calendar.n_months and calendar.edges[month] < finish:
            yield month, max(begin, calendar.edges[month]), min(finish, calendar.edges[month + 1])
            month += 1

    def _daily_rates(self, state: _OracleState, month: int) -> tuple[np.ndarray, np.ndarray]:
        """(hazard, purchase rate) per day in ``month``: the cutoff's gap held, activity decaying as expected."""
        p, calendar = self.params, self.calendar
        tenure = Tenure(
            months=np.maximum(calendar.edges[month] - state.signup_day, 0.0) / DAYS_PER_MONTH,
            whole_months=month - state.signup_month,
        )
        factor = float(self.hazard_factor[month])
        hazard = monthly_hazard(p, state.base_hazard, state.plan, tenure, state.gap, factor)
        activity = _projected_activity(p, state.activity, month - state.month)
        rate = purchase_rate(p, state.purchase_rate, activity, state.gap, calendar.month_of_year[month])
        return hazard / DAYS_PER_MONTH, rate / DAYS_PER_MONTH


def _projected_activity(p: Params, activity: np.ndarray, months_ahead: int) -> np.ndarray:
    """The activity whose multiplier equals the expected AR(1) multiplier ``months_ahead`` months on."""
    decay = p.activity_persistence**months_ahead
    return decay * activity + p.stationary_activity_sd**2 * (1.0 - decay**2) / 2.0
