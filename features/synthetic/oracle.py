"""The ground truth: writing it, reading it back, and the best possible churn probability it implies.

The oracle evaluates the same hazard and purchase-rate formulas as the simulation
(:mod:`features.synthetic.params`) with the parameters and per-month world factors the truth folder
recorded, so it stays exact in every scenario. No product command reads a truth folder.
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

from features.errors import ConfigError
from features.synthetic.params import (
    DAYS_PER_MONTH,
    NONE,
    PLANS,
    SECONDS_PER_DAY,
    Calendar,
    Customers,
    Outcome,
    Params,
    Tenure,
    monthly_hazard,
    purchase_rate,
)
from features.synthetic.scenarios import World
from features.synthetic.write import TS, customer_columns, departure_seconds

TRUTH_FORMAT_VERSION = 1
_MONTHLY_STATES = ("gap", "activity")


@dataclass(frozen=True)
class TruthRun:
    """What produced a truth folder: the seed, the world and its calendar."""

    seed: int
    world: World
    calendar: Calendar


def write_truth(folder: Path, customers: Customers, outcome: Outcome, ids: np.ndarray, run: TruthRun) -> None:
    """Write the latent traits, the per-month gap and activity, and the metadata (format in the package
    docstring). ``ids`` are the customer ids exactly as the data's loader will produce them."""
    calendar = run.calendar
    departure = departure_seconds(outcome, calendar)
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
        }
    )
    pq.write_table(traits, folder / "customers.parquet", compression="zstd")
    np.save(folder / "gap.npy", outcome.gap)
    np.save(folder / "activity.npy", outcome.activity)
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
    ``activity_YYYY_MM`` columns per simulated month; ``attrs["synthetic"]`` holds the period (``start``,
    ``end``), the recorded ``params``, the world's per-month ``hazard_factor`` and the ``scenario`` name,
    which :func:`true_churn_probability` needs.
    """
    truth_dir = Path(truth_dir)
    meta = json.loads((truth_dir / "meta.json").read_text())
    if meta.get("format_version") != TRUTH_FORMAT_VERSION:
        raise ConfigError(
            f"{truth_dir} holds truth format {meta.get('format_version')!r}, this version reads "
            f"{TRUTH_FORMAT_VERSION}; regenerate the synthetic data."
        )
    traits = pd.read_parquet(truth_dir / "customers.parquet").set_index("customer_id")
    states = [
        pd.DataFrame(
            np.load(truth_dir / f"{state}.npy"),
            index=traits.index,
            columns=[f"{state}_{label}" for label in meta["months"]],
        )
        for state in _MONTHLY_STATES
    ]
    truth = pd.concat([traits, *states], axis=1)
    scenario = meta.get("scenario") or {}
    truth.attrs["synthetic"] = {
        "start": meta["start"],
        "end": meta["end"],
        "params": meta.get("params", {}),
        "hazard_factor": scenario.get("hazard_factor", [1.0] * len(meta["months"])),
        "scenario": scenario.get("name", "base"),
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
