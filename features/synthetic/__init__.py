"""Synthetic CRM data with a known ground truth, so churn and CLV models can be checked against an oracle.

The package is split by job: ``params`` (constants and the rate formulas simulation and oracle share),
``simulate`` (the month-by-month story), ``write`` (Arrow tables), ``shop_export`` (the invoice-line
export), ``scenarios`` (the worlds), ``oracle`` (truth writing, reading and the oracle) and ``residual``
(the expected residual value the truth carries).

:func:`generate_dataset` writes the four input tables of the data contract (``transactions``, ``customers``,
``interactions``, ``cancellations``), and on request the optional ``referrals`` (:class:`Scenario`
``referrals``), into ``out_dir`` and the latent truth behind them into a separate ``truth_dir`` that no
product command reads. :func:`true_churn_probability` turns that truth into the best
possible churn probability at any cutoff, the ceiling a model trained on the observable tables can approach;
:func:`true_residual_value` into each customer's expected residual value there (discounted revenue to the end
of the relationship), the oracle a lifetime-value model is scored against.

The generative story (simulated month by month, vectorised over all customers):

* Onboarding: signups spread over the whole period, an early launch wave plus steadily growing acquisition.
* Buy till you die: each customer has a long-run purchase rate λ (orders/month, Gamma-distributed, heavy
  spread) and a spend level (lognormal, weakly negatively tied to λ: steady small buyers vs. occasional big
  spenders). The rate in force drifts with the customer's needs (a latent AR(1) "activity", mean-one
  multiplier, so alive customers have dormant spells). Order counts are Poisson with yearly seasonality
  (November/December peak); amounts are lognormal around the spend level.
* Service failures: every order may be delivered late (customer-, country-, channel- and season-dependent;
  store purchases never) and may be defective (returned). Failures trigger complaints and support contacts in
  the following days; complaints are resolved or not, quickly or slowly. Surveys go to a random subset each
  month and reflect the customer's recent experience with noise.
* Expectation–perception gap: failure points (late, defect, unresolved or slow contacts) accumulate in a
  decaying experience state; occasionally a latent "pull" (a competitor's offer, a life event) raises the
  customer's expectations for a few months. ``gap = max(0, expectation * failures / (1 + 0.1 * orders) + pull
  - threshold)`` multiplies the monthly hazard of leaving by ``exp(1.3 * gap)`` and lowers the purchase rate
  (engagement fades before leaving).
* Leaving: non-contract customers (``plan == "none"``) die silently; contract customers (monthly/annual) leave
  only by an explicit cancellation, annual ones mostly around their signup anniversaries. New customers have
  a higher hazard for their first months. A minority are loyal but unprofitable: frequent, cheap orders, heavy
  discounts and returns, low hazard.

Within a month every rate is constant, so the month's departure time is exponential and orders are a Poisson
process up to it. The oracle uses exactly these rates from the state at the cutoff.

Ground-truth folder format (``truth_dir``; read it with :func:`load_truth`):

* ``customers.parquet``: one row per customer, in the order of ``customers`` (ids ascend with signup):
  ``customer_id``, ``signup_date``, ``country``, ``segment``, ``acquisition_channel``, ``plan``,
  ``is_contract`` (bool), ``loyal_unprofitable`` (bool), ``purchase_rate`` (λ, long-run orders per month,
  before activity, seasonality and engagement), ``spend_level`` (typical order value), ``discount_propensity``,
  ``late_delivery_prob``, ``defect_prob``, ``expectation``, ``base_hazard`` (monthly, before tenure, plan and
  gap factors), ``death_time`` (when the customer left for good: silent death or cancellation; NaT if still
  there at ``end``), ``cancellation_time`` (contract customers only, else NaT), ``complain_propensity``,
  ``return_prob`` (discretionary returns), ``primary_channel`` and the state at ``end`` a customer's future
  grows from (``end_failures``, ``end_orders_seen``, ``end_pull``, ``end_activity``; null for customers who
  left).
* ``gap.npy`` and ``activity.npy``: float32 arrays of shape (n_customers, n_months), rows aligned with
  ``customers.parquet``: the expectation–perception gap and the log purchase-rate multiplier in force during
  each simulated month (NaN before signup and after leaving). Hazard and purchase rate of any month follow
  from these and the traits (see ``params.monthly_hazard`` and ``params.purchase_rate``).
* ``failures.npy``, ``orders_seen.npy`` and ``pull.npy``: alike, what the gap is made of (decayed failure
  points and order count at the month's start, the pull on expectations in force).
* ``meta.json``: ``format_version``, ``seed``, ``start``, ``end``, ``months`` (labels ``YYYY_MM``) and the model
  parameters used (``params``). Worlds other than ``base`` add a ``scenario`` block: ``name``,
  ``description``, ``shape``, per-month ``hazard_factor`` (multiplies the monthly hazard; the oracle
  reads it) and ``late_factor``, ``plan_probs_by_segment``, ``cohort_days`` and, for ``drift``,
  ``late_delivery_spike`` (``from`` date, ``factor``). ``base`` writes no such block (factors of 1).

:func:`load_truth` returns the traits indexed by ``customer_id`` with float32 columns ``gap_YYYY_MM``,
``activity_YYYY_MM``, ``failures_YYYY_MM``, ``orders_seen_YYYY_MM`` and ``pull_YYYY_MM`` per month, and
``attrs["synthetic"]`` holding ``start``, ``end``, ``params``, ``hazard_factor``, ``late_factor``,
``scenario`` and ``seed``.

Residual value (the oracle for lifetime value): ``true_residual_value(truth, cutoff)`` gives, per customer
signed up by the cutoff (any day of the period, its ``end`` included), the expected revenue from the cutoff
to the end of the relationship, discounted to the cutoff at 10% a year
(``features.economics.DEFAULT_DISCOUNT_RATE``; a cash flow ``s`` days ahead counts ``1.1 ** (-s / 365.25)``,
as the value model discounts), under the generator's own process from the latent state then (survival and
order value in closed form, the drift of the state simulated: :mod:`features.synthetic.residual`), 0 for
customers who have left. Revenue is order amounts net of discounts, as the data books them (the shop
export also nets returned orders out). The generator has no margins or unit costs, so there is no
contribution figure. It is computed when read, not written by :func:`generate_dataset`: a precise figure
takes about 0.3 s of CPU per thousand customers there, several times what generating them takes.

Worlds (``generate_dataset(..., scenario=NAME)``, listed in :data:`SCENARIOS`) vary this story: a seasonal
churn hazard, acquisition growth or decline with a hazard trend, a single signup cohort, contracts only, a
bare purchase log, a shop's invoice-line export (``invoices.csv`` + ``columns.yaml``; customer ``13085.0``
in the export is truth id ``"13085"``) and a late-delivery spike. See :mod:`features.synthetic.scenarios`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from features.errors import ConfigError
from features.io import ensure_empty_dir, publish_dirs, staging_dir
from features.progress import Report, silent
from features.synthetic.campaigns import CampaignEffects, CampaignSetup, write_campaign_truth
from features.synthetic.oracle import (
    TruthRun,
    load_truth,
    true_churn_probability,
    true_residual_value,
    write_truth,
)
from features.synthetic.params import Calendar, Customers, FileFormat
from features.synthetic.scenarios import SCENARIOS, World, build_world
from features.synthetic.shop_export import ShopExportSink, customer_numbers, write_columns_yaml
from features.synthetic.simulate import OrderSink, Simulation, draw_customers
from features.synthetic.write import TransactionSink, id_bytes, write_other_tables, write_referrals

__all__ = [
    "SCENARIOS",
    "TABLE_NAMES",
    "GenerationSummary",
    "Period",
    "Scenario",
    "generate_dataset",
    "load_truth",
    "true_churn_probability",
    "true_residual_value",
]

TABLE_NAMES: tuple[str, ...] = ("transactions", "customers", "interactions", "cancellations")
REFERRAL_STREAM = 0x5EF  # the referrals' own random stream, next to the seed (see Scenario.referrals)


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate_dataset` wrote, for the CLI to report."""

    out_dir: Path
    truth_dir: Path
    n_customers: int
    n_transactions: int
    n_interactions: int
    n_cancellations: int
    start: date
    end: date
    seconds: float
    n_referrals: int = 0


@dataclass(frozen=True)
class Period:
    """The simulated span [start, end): the data's first and (exclusive) last day."""

    start: date = date(2023, 1, 1)
    end: date = date(2026, 6, 30)


@dataclass(frozen=True)
class Scenario:
    """A world to simulate: its story (one of :data:`SCENARIOS`) over a period, optionally with
    randomised campaigns run or replayed inside it (``tables`` worlds only: the data folder gains
    ``campaigns.<format>`` and the truth ``campaign_effects.parquet``, see
    :mod:`features.synthetic.campaigns`)."""

    name: str = "base"
    period: Period = Period()
    campaigns: CampaignSetup | None = None
    referrals: bool = (
        False  # also write who referred whom (tables worlds; features.synthetic.write.referrers)
    )


def generate_dataset(
    out_dir: Path,
    n_customers: int = 5000,
    seed: int = 0,
    *,
    scenario: str | Scenario = "base",
    truth_dir: Path | None = None,
    file_format: FileFormat = "parquet",
    progress: Report | None = None,
) -> GenerationSummary:
    """Simulate ``n_customers`` customers of the world ``scenario`` (a name from :data:`SCENARIOS`, or a
    :class:`Scenario` with its own period) and write the tables and their ground truth.

    The ``base`` world writes ``<table>.parquet`` (or ``.csv``) for each of :data:`TABLE_NAMES` into
    ``out_dir``; other worlds write what :data:`SCENARIOS` describes (``purchase_log``: ``transactions``
    only; ``shop_export``: ``invoices.csv`` and ``columns.yaml`` whatever ``file_format`` says). The truth
    (see the package docstring) goes into ``truth_dir`` (default: sibling ``<out_dir>-truth``). Both folders
    are built in hidden temporary siblings and renamed into place at the end, so readers never see half a
    dataset. The same seed and scenario give byte-identical files. ``progress(stage, fraction)`` is called
    as the stages ``"simulate"``, ``"write"`` and ``"truth"`` advance.

    A :class:`Scenario` with ``campaigns`` also runs randomised campaigns (or replays logged ones) inside
    the world; without them nothing changes. One with ``referrals`` also writes ``referrals.<format>``:
    each customer acquired through the ``referral`` channel, referred by an earlier customer still there
    (:func:`~features.synthetic.write.referrers`), drawn from a random stream of its own, so every other
    file is the same with or without it.

    Raises ``FileExistsError`` if ``out_dir`` or ``truth_dir`` exists and is not empty (the caller decides
    whether to delete it), and :class:`~features.errors.ConfigError` for invalid arguments.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    truth_dir = Path(truth_dir) if truth_dir is not None else out_dir.parent / f"{out_dir.name}-truth"
    spec = scenario if isinstance(scenario, Scenario) else Scenario(scenario)
    campaigns = spec.campaigns
    start, end = spec.period.start, spec.period.end
    _validate_arguments(n_customers, file_format, spec.period, (out_dir, truth_dir))
    calendar = Calendar.between(start, end)
    world = build_world(spec.name, calendar)
    if spec.referrals and world.shape != "tables":
        raise ConfigError(f"referrals need a world with the contract tables; {world.name!r} has none")
    for target in (out_dir, truth_dir):
        ensure_empty_dir(target)
    report = progress or silent
    rng = np.random.default_rng(seed)
    customers = draw_customers(rng, n_customers, calendar, world)
    if world.shape == "shop_export":
        ids = customer_numbers(n_customers)
    else:
        ids = id_bytes("C", np.arange(1, n_customers + 1), max(7, len(str(n_customers))))

    with staging_dir(out_dir) as data_tmp, staging_dir(truth_dir) as truth_tmp:
        sink = _open_sink(world, data_tmp, file_format, ids, calendar, customers, seed)
        effects = _campaign_effects(campaigns, world, customers, calendar, ids)
        try:
            outcome = Simulation(rng, customers, calendar, world, effects).run(sink, report)
        finally:
            n_transactions = sink.close()
        report("write", 0.0)
        n_interactions = n_cancellations = n_referrals = 0
        if world.shape == "tables":
            n_interactions, n_cancellations = write_other_tables(
                data_tmp, file_format, customers, outcome, calendar, ids
            )
            if spec.referrals:
                referral_rng = np.random.default_rng(np.random.SeedSequence([seed, REFERRAL_STREAM]))
                n_referrals = write_referrals(
                    data_tmp, file_format, referral_rng, customers, outcome, calendar, ids
                )
        elif world.shape == "shop_export":
            write_columns_yaml(data_tmp)
        report("write", 1.0)
        write_truth(truth_tmp, customers, outcome, ids, TruthRun(seed, world, calendar))
        if effects is not None:
            effects.write(data_tmp, file_format)
            write_campaign_truth(truth_tmp, effects.assignments(), rule=effects.setup.sleeping_dogs)
        report("truth", 1.0)
        publish_dirs((truth_tmp, truth_dir), (data_tmp, out_dir))

    return GenerationSummary(
        out_dir=out_dir,
        truth_dir=truth_dir,
        n_customers=n_customers,
        n_transactions=n_transactions,
        n_interactions=n_interactions,
        n_cancellations=n_cancellations,
        n_referrals=n_referrals,
        start=start,
        end=end,
        seconds=time.perf_counter() - began,
    )


def _campaign_effects(
    setup: CampaignSetup | None, world: World, customers: Customers, calendar: Calendar, ids: np.ndarray
) -> CampaignEffects | None:
    if setup is None:
        return None
    if world.shape != "tables":
        raise ConfigError(f"campaigns need a world with the contract tables; {world.name!r} has none")
    names = ids.view(f"S{ids.shape[1]}").ravel().astype(str)
    return CampaignEffects(setup, customers, calendar, list(names), world.params)


def _open_sink(
    world: World,
    folder: Path,
    file_format: FileFormat,
    ids: np.ndarray,
    calendar: Calendar,
    customers: Customers,
    seed: int,
) -> OrderSink:
    """Where the world's orders are written: the contract's transactions, a bare purchase log, or invoices."""
    if world.shape == "shop_export":
        return ShopExportSink(folder, ids, calendar, customers.country, seed)
    return TransactionSink(folder, file_format, ids, calendar, bare=world.shape == "purchase_log")


def _validate_arguments(
    n_customers: int, file_format: str, period: Period, folders: tuple[Path, Path]
) -> None:
    """Refuse arguments that cannot produce a dataset, before any work or file is touched."""
    if n_customers < 1:
        raise ConfigError(f"n_customers must be at least 1, got {n_customers}.")
    if file_format not in ("parquet", "csv"):
        raise ConfigError(f"file_format must be 'parquet' or 'csv', got {file_format!r}.")
    if not period.start < period.end:
        raise ConfigError(f"the period's start ({period.start}) must be before its end ({period.end}).")
    out_dir, truth_dir = folders
    if out_dir.resolve() == truth_dir.resolve():
        raise ConfigError(f"truth_dir must differ from out_dir ({out_dir}); no command may read the truth.")
