"""Referral value: what a customer brought through the customers they referred, and the checks the optional
``referrals`` table (referrer_id, referred_id, timestamp) gets when it is loaded.

**Definition.** Customer *A*'s ``referral_value`` at the as-of date *t* sums, over every customer *B* whose
counted referral is by *A* and dated before *t*::

    referral_value(A, t) = sum over B of  historic(B, from the referral to t)  +  residual(B, t)

- ``historic``: what *B* has brought from the day of the referral until *t*: net spend (returns netted,
  never below 0) times *B*'s margin (1 on a revenue basis, so revenue then), at face value, like
  ``clv.historic_value``.
- ``residual``: what *B* is expected to bring over the rest of *B*'s relationship, each expected purchase
  discounted to *t* at the yearly rate, ``(1 + annual_discount_rate) ** -years``: *B*'s own
  ``clv.residual_value`` when *B* was scored at *t*. A referred customer who was not scored is not active
  at *t* (no purchase or signup within a year, or cancelled), which scoring counts as lost: residual 0.

Choices, and why:

- **Each customer is brought once.** A customer referred several times counts only their earliest
  referral, so two referrers never share (or both get) one customer's value. Self-referrals never count.
- **Only value from the referral on.** A customer who was buying before the referral date was not brought
  by it; what they spent before it is not credited (the loader counts such customers).
- **Past money at face value, future money discounted to t.** Discounting applies to money still to
  come; compounding past money forward would value the shop's cash as if invested at the discount rate,
  which no other figure does, and ``historic_value`` plus ``residual_value`` would no longer add up.
- **No double counting.** *B*'s value stays *B*'s own: ``residual_value``, ``value_at_risk`` and the
  actions use only it, and ``referral_value`` is shown beside them, never added in. Chains are not
  followed: *A* gets *B*'s value, not that of the customers *B* referred (that is *B*'s referral value).
- **It can be negative** on a contribution basis: a referred customer who costs more to serve than they
  bring lowers the referrer's figure.
- **Null is not 0.** Without a referrals table (or a value model) the value is unknown: null. With a
  table, a customer who referred nobody (before *t*) has 0. A referred customer whose own value is
  unknown makes the referrer's value unknown.

At load (:func:`clean_referrals`), rows that cannot be used are left out and counted in the load report:
rows without both ids, exact repeats (the duplicate policy), self-referrals, referrals naming a customer
the data does not know, and repeat referrals of one customer. A table with rows of which none can be used
is refused: that is a mapping or id-format mistake, not data to value as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc

from features.errors import DataProblem
from features.parsing import InputColumn

if TYPE_CHECKING:  # exports -> validation -> engine would close a circle (engine.spark_referrals)
    from features.economics import EconomicsConfig
    from features.exports import TableReport

COLUMNS: Final = ("referrer_id", "referred_id", "timestamp")
# Per referred customer, the value a referral brought: (historic, residual) column pairs accepted.
VALUE_COLUMNS: Final = (("historic_value", "residual_value"), ("value_historic", "value_lifetime"))
_EVENT_TABLES: Final = ("transactions", "interactions", "cancellations")

BLANK = "referrals without a referrer or referred id"
SELF = "self-referrals"
UNKNOWN = "referrals naming a customer the data does not know"
REPEAT = "repeat referrals of a customer already referred (the earliest counts)"


# ----------------------------------------------------------------------------------------------- value


def counted_referrals(referrals: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The referrals that count at ``as_of``: dated before it, not self-referrals, and per referred customer
    only the earliest (the loader already keeps only those; raw tables get the same rules here)."""
    frame = referrals.loc[:, list(COLUMNS)].astype({"referrer_id": str, "referred_id": str})
    frame = frame.loc[
        (frame["timestamp"] < pd.Timestamp(as_of)) & (frame["referrer_id"] != frame["referred_id"])
    ]
    frame = frame.sort_values("timestamp", kind="stable")
    return frame.loc[~frame["referred_id"].duplicated(keep="first")]


def referral_values(
    referrals: pd.DataFrame | None,
    parts_or_values: pd.DataFrame,
    as_of: pd.Timestamp,
    customer_ids: Sequence[str] | pd.Series,
) -> np.ndarray:
    """Each customer's referral value at ``as_of`` (see the module docstring), aligned with ``customer_ids``.

    ``referrals``: the contract's table, None when the data has none (every value is then NaN).
    ``parts_or_values``: per valued customer (a ``customer_id`` column), what a referral of them brought:
    ``historic_value`` and ``residual_value`` (as :func:`referred_values` gives them), or the value parts
    ``value_historic`` and ``value_lifetime`` of :mod:`features.value`. A referred customer absent from it
    does not exist at ``as_of`` and brings nothing; one whose value is NaN makes the referrer's NaN.
    A customer who referred nobody before ``as_of`` gets 0."""
    ids = pd.Index(pd.Series(customer_ids, dtype=object).astype(str))
    if referrals is None:
        return np.full(len(ids), np.nan)
    historic, residual = _value_columns(parts_or_values)
    brought = pd.Series(
        pd.to_numeric(parts_or_values[historic], errors="coerce").to_numpy(float)
        + pd.to_numeric(parts_or_values[residual], errors="coerce").to_numpy(float),
        index=parts_or_values["customer_id"].astype(str).to_numpy(),
    )
    brought = brought[~brought.index.duplicated(keep="first")]
    counted = counted_referrals(referrals, as_of)
    counted = counted.loc[_member(counted["referred_id"], brought.index)]
    amounts = counted["referred_id"].map(brought)
    referrers = counted["referrer_id"].to_numpy()
    totals = amounts.groupby(referrers).sum().astype(float)
    totals[amounts.isna().groupby(referrers).any()] = np.nan
    return totals.reindex(ids, fill_value=0.0).to_numpy(float)


def _value_columns(frame: pd.DataFrame) -> tuple[str, str]:
    for pair in VALUE_COLUMNS:
        if all(column in frame.columns for column in pair):
            return pair
    raise ValueError(
        f"referral values need customer_id and one of the column pairs {VALUE_COLUMNS}; "
        f"the frame has {list(frame.columns)[:12]}"
    )


class ReferralTables(Protocol):
    """What :func:`referred_values` reads from a loaded dataset (a :class:`~features.loading.Dataset`)."""

    referrals: pd.DataFrame | None
    transactions: pd.DataFrame


def referred_values(
    data: ReferralTables, as_of: pd.Timestamp, scored: pd.DataFrame, economics: EconomicsConfig | None
) -> pd.DataFrame:
    """``customer_id``, ``historic_value`` and ``residual_value`` of every customer referred before
    ``as_of`` (the input :func:`referral_values` wants; the module docstring says what each holds).

    ``scored``: ``customer_id`` and ``residual_value`` of the customers scored at ``as_of``. ``economics``
    gives the margin (channel margins included) the historic part is valued at; without it, revenue."""
    from features.value import value_inputs  # scipy's optimisers: kept out of the loader's imports

    empty = pd.DataFrame({"customer_id": [], "historic_value": [], "residual_value": []})
    if data.referrals is None:
        return empty
    counted = counted_referrals(data.referrals, as_of)
    if not len(counted):
        return empty
    ids = pd.Series(counted["referred_id"].to_numpy(), dtype=str)
    tx = data.transactions
    theirs = tx.loc[_member(tx["customer_id"], ids) & (tx["timestamp"] < pd.Timestamp(as_of)).to_numpy()]
    tx_ids = theirs["customer_id"].astype(str)
    referred_on = pd.Series(counted["timestamp"].dt.normalize().to_numpy(), index=ids.to_numpy())
    since = theirs["timestamp"].to_numpy() >= tx_ids.map(referred_on).to_numpy()
    spent = theirs["amount"].where(since, 0.0).groupby(tx_ids.to_numpy()).sum()
    margin = value_inputs(theirs, as_of, ids, economics)["value_margin"].to_numpy(float)
    return referred_frame(ids, spent, margin, scored)


def referred_frame(
    ids: pd.Series, spent: pd.Series, margin: np.ndarray, scored: pd.DataFrame
) -> pd.DataFrame:
    """:func:`referred_values`' frame from its parts, whichever engine computed them (Spark's:
    :mod:`features.engine.spark_referrals`). ``ids``: the referred customers; ``spent``: their net spend
    from the day of their referral until as-of, by customer id (absent: 0); ``margin``: aligned with
    ``ids``; ``scored``: ``customer_id`` and ``residual_value`` of the customers scored (absent: not
    active, residual 0)."""
    net = spent.reindex(ids.to_numpy()).fillna(0.0)
    own = scored.assign(customer_id=scored["customer_id"].astype(str)).drop_duplicates("customer_id")
    own = own.set_index("customer_id")
    residual = pd.to_numeric(own["residual_value"], errors="coerce").reindex(ids.to_numpy())
    residual = residual.where(_member(ids, own.index.to_series()), 0.0)  # not scored: lost
    return pd.DataFrame(
        {
            "customer_id": ids.to_numpy(),
            "historic_value": net.clip(lower=0.0).to_numpy(float) * margin,
            "residual_value": residual.to_numpy(float),
        }
    )


def _member(values: pd.Series, known: pd.Series | pd.Index) -> np.ndarray:
    """``values.isin(known)`` through Arrow's hash lookup (pandas compares Arrow strings slowly at scale)."""
    found = pc.is_in(
        pyarrow.array(values.astype(str)), value_set=pyarrow.array(pd.Series(known).astype(str).unique())
    )
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


# ------------------------------------------------------------------------------------------------ load


def without_blank_ids(frame: pd.DataFrame, report: TableReport) -> pd.DataFrame:
    """Rows lacking either id credit nobody or bring nobody: left out and counted (the loader's first step
    for referrals, where other tables skip guest rows)."""
    blank = np.zeros(len(frame), dtype=bool)
    for column in ("referrer_id", "referred_id"):
        blank |= InputColumn(frame[column]).blank.to_numpy(dtype=bool)
    if not blank.any():
        return frame
    report.skipped[BLANK] = int(blank.sum())
    return frame[~blank]


def clean_referrals(
    frames: Mapping[str, pd.DataFrame],
    files: Mapping[str, Path],
    report: TableReport,
    problems: list[DataProblem],
) -> pd.DataFrame:
    """The parsed ``referrals`` of ``frames`` reduced to the referrals that can count (module docstring),
    every row left out counted in ``report``; a DataProblem when rows were read and none can be used.

    Known customers are those of the customers table when there is one, else every id of the events."""
    if "customers" in files:
        known = frames["customers"]["customer_id"]
    else:
        known = pd.concat([frames[name]["customer_id"] for name in _EVENT_TABLES if name in files])
    load = ReferralsLoad(customer_source(files), str(files["referrals"]), report, problems)
    kept = keep_usable_referrals(frames["referrals"], known, load)
    if len(kept):
        _note_timing(kept, frames, report)
    return kept


def customer_source(files: Mapping[str, object]) -> str:
    """Where the known customers come from, as messages name it: the customers file, else the events."""
    if "customers" in files:
        return Path(str(files["customers"])).name
    return "the transactions, interactions or cancellations"


@dataclass(frozen=True)
class ReferralsLoad:
    """Where :func:`keep_usable_referrals` reports: ``where`` is the referrals file, ``source`` names where
    the known customers come from (:func:`customer_source`); rows left out are counted in ``report``, and
    a table with none usable becomes a problem in ``problems``."""

    source: str
    where: str
    report: TableReport
    problems: list[DataProblem]


def keep_usable_referrals(table: pd.DataFrame, known: pd.Series, load: ReferralsLoad) -> pd.DataFrame:
    """The rows of a parsed referrals table that can count: no self-referral, both customers among
    ``known`` (it need hold only the ids the table names: an engine that keeps the customers elsewhere
    looks those up), per referred customer the earliest. The rules of :func:`clean_referrals`, apart so
    that Spark batch scoring applies them to the same rows (``features.loading.load_referrals``)."""
    report = load.report
    self_referral = (table["referrer_id"] == table["referred_id"]).to_numpy(dtype=bool)
    known_referrer = _member(table["referrer_id"], known)
    known_referred = _member(table["referred_id"], known)
    unknown = ~(known_referrer & known_referred) & ~self_referral
    kept = table.loc[~self_referral & ~unknown]
    earliest_first = kept.sort_values("timestamp", kind="stable")
    repeats = earliest_first.index[earliest_first["referred_id"].duplicated(keep="first").to_numpy()]
    kept = kept.drop(index=repeats).reset_index(drop=True)
    counts = {SELF: int(self_referral.sum()), UNKNOWN: int(unknown.sum()), REPEAT: len(repeats)}
    report.skipped.update({reason: n for reason, n in counts.items() if n})
    report.rows_kept = len(kept)
    strangers = pd.concat(
        [table["referrer_id"][~known_referrer & ~self_referral], table["referred_id"][~known_referred]]
    ).unique()[:5]
    if report.rows_read and not len(kept):
        _refuse(load, list(strangers))
        return kept
    if unknown.any():
        report.warnings.append(
            f"{report.file}: skipped {int(unknown.sum()):,} referrals naming customers not in "
            f"{load.source} (e.g. {', '.join(repr(s) for s in strangers[:3])})"
        )
    return kept


def _refuse(load: ReferralsLoad, strangers: list[object]) -> None:
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in load.report.dropped.items())
    load.problems.append(
        DataProblem(
            load.where,
            "referrer_id, referred_id" if strangers else None,
            f"has no referral that can count among its rows ({reasons})",
            f"referrer_id and referred_id must hold the customer ids of {load.source}, two different "
            "customers per row: check which columns columns.yaml maps to them and that the ids are written "
            "alike (leading zeros, prefixes); or remove the referrals file",
            load.report.rows_read,
            strangers,
        )
    )


def _note_timing(kept: pd.DataFrame, frames: Mapping[str, pd.DataFrame], report: TableReport) -> None:
    """Warn about referrals kept but not counted at the default as-of, and about referred customers who
    were buying before their referral (only their value from it on is credited)."""
    stamps = [frames[n]["timestamp"].max() for n in _EVENT_TABLES if n in frames and len(frames[n])]
    if stamps and len(kept):
        newest = pd.Timestamp(max(stamps))
        late = int((kept["timestamp"] >= newest.normalize() + pd.Timedelta(days=1)).sum())
        if late:
            report.warnings.append(
                f"{report.file}: {late:,} referrals are dated after the newest purchase or contact "
                f"({newest.date()}): they count only when scoring as of a later date"
            )
    tx = frames["transactions"]
    bought = tx.loc[(tx["amount"] > 0).to_numpy() & _member(tx["customer_id"], kept["referred_id"])]
    first = bought["timestamp"].groupby(bought["customer_id"].astype(str).to_numpy()).min()
    referred_on = kept["timestamp"].dt.normalize().to_numpy()
    earlier = int((first.reindex(kept["referred_id"].astype(str).to_numpy()).to_numpy() < referred_on).sum())
    if earlier:
        report.warnings.append(
            f"{report.file}: {earlier:,} referred customers bought before the date of their referral: only "
            "what they spent from that day on is credited to their referrer"
        )
