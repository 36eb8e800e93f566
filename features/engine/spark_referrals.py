"""Referral values on Spark: :mod:`features.referrals`' ``referral_value``, to the cent the one local batch
scoring gives, for a data folder Spark reads.

What runs where, and why:

- **The referrals table is read on the driver**, by the loader's own code
  (:func:`features.loading.load_referrals`): the same file search and column mapping, parsing, blank ids,
  exact repeats (the duplicate policy), self-referrals, unknown customers and repeat referrals, the same
  refusal of a table with nothing usable. Only "which of these ids does the data know" is asked of Spark
  (:func:`known_customers`: a semi-join; the ids the table names come back, never the customers table). Two
  implementations of the cleaning rules would drift apart, and the order-sensitive one (the earliest
  referral of a customer counts; ties keep the file's order) is exactly what a distributed sort would
  not promise. The table is small next to the events (one row per referral), and the driver holds it as
  local scoring does: millions of referrals fit; a table too big for one machine is this design's limit.
- **The referred customers' spend is aggregated in Spark**, where the transactions lie: their lines
  before as-of are joined to the counted referrals (one row per referred customer, broadcast while
  small) and summed per customer, net spend from the day of the referral on and the spend-weighted margin
  of :mod:`.spark_value` (``value_inputs``' ``value_margin``). One row per referred customer comes back.
- **Residual values come from the scores**: the referred customers' own ``clv`` as scored in the same
  run, looked up in the scores frame by a semi-join (one row per referred customer comes back; a
  referred customer with no row was not scored, not active: residual 0).
- **The sums per referrer are the local code's** (:func:`features.referrals.referred_frame` and
  :func:`~features.referrals.referral_values`) on those collected rows, so NaN propagation, the 0 for
  a referrer whose referrals all came after as-of and the summing order are the local ones.

Sums of spend are Spark's, in its order: they equal pandas' to the last bit or two (see
:mod:`.spark_value`), so a value differs from the local one only where it lies within about 1e-12 of half
a cent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

from features.engine.spark import spark_frame
from features.engine.spark_source import SparkSource
from features.engine.spark_value import customer_margin, epoch_micros, line_margin
from features.referrals import counted_referrals, referral_values, referred_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame

    from features.economics import EconomicsConfig

__all__ = ["known_customers", "referrer_values"]

_EPOCH = pd.Timestamp("1970-01-01")


def known_customers(source: SparkSource) -> Callable[[pd.Series], pd.Series]:
    """What :func:`features.loading.load_referrals` asks: which of the ids a referrals table names the
    data knows, answered by a semi-join with ``source``'s customers when it has a customers file, else
    with the ids of its events (as the loader checks them); only those ids come back to the driver."""

    def known(ids: pd.Series) -> pd.Series:
        if not len(ids):
            return ids
        customers = _known_customers(source)
        named = customers.sparkSession.createDataFrame(
            pd.DataFrame({"customer_id": ids.astype(str)}), "customer_id string"
        )
        found = pd.DataFrame(named.join(customers, "customer_id", "left_semi").toPandas())
        return pd.Series(found["customer_id"].to_numpy(), dtype=str)

    return known


def _known_customers(source: SparkSource) -> SparkFrame:
    """The customer ids the loader checks referrals against, as one Spark column ``customer_id``."""
    tables = source.tables
    if "customers" in source.files:
        return spark_frame(tables.customers.select("customer_id"))
    events = {"transactions": tables.transactions, "interactions": tables.interactions}
    events["cancellations"] = tables.cancellations
    frames = [
        spark_frame(table.select("customer_id")) for name, table in events.items() if name in source.files
    ]
    known = frames[0]
    for frame in frames[1:]:
        known = known.unionByName(frame)
    return known


def referrer_values(
    referrals: pd.DataFrame,
    transactions: SparkFrame,
    scored: SparkFrame,
    as_of: pd.Timestamp,
    economics: EconomicsConfig | None,
) -> pd.DataFrame:
    """``customer_id`` and ``referral_value`` (unrounded) of every customer with a referral that counts at
    ``as_of``; every other customer's value is 0 (with a referrals table).

    ``referrals``: as :func:`features.loading.load_referrals` gives them. ``transactions``: the contract's, on Spark.
    ``scored``: ``customer_id`` and ``residual_value`` of the customers scored at ``as_of``, on Spark.
    ``economics``: the value model's, for the margin the historic part is valued at (None: revenue)."""
    counted = counted_referrals(referrals, as_of)
    if not len(counted):
        return pd.DataFrame({"customer_id": pd.Series([], dtype=str), "referral_value": []})
    ids = pd.Series(counted["referred_id"].to_numpy(), dtype=str)
    since = (counted["timestamp"].dt.normalize() - _EPOCH) // pd.Timedelta(microseconds=1)
    referred = transactions.sparkSession.createDataFrame(
        pd.DataFrame({"customer_id": ids, "_from": since.to_numpy("int64")}), "customer_id string, _from long"
    )
    spent, margin = _spend_since_referral(transactions, referred, as_of, economics)
    default_margin = 1.0 if economics is None else economics.gross_margin
    margins = margin.reindex(ids.to_numpy()).fillna(default_margin).to_numpy(float)
    own = pd.DataFrame(scored.join(referred.select("customer_id"), "customer_id", "left_semi").toPandas())
    figures = referred_frame(ids, spent, margins, own)
    referrers = pd.Series(counted["referrer_id"].unique(), dtype=str)
    values = referral_values(referrals, figures, as_of, referrers)
    return pd.DataFrame({"customer_id": referrers.to_numpy(), "referral_value": values})


def _spend_since_referral(
    transactions: SparkFrame, referred: SparkFrame, as_of: pd.Timestamp, economics: EconomicsConfig | None
) -> tuple[pd.Series, pd.Series]:
    """Per referred customer with a transaction before ``as_of`` (by customer id): the net spend from the
    day of the referral (``_from``, epoch microseconds) on, and the spend-weighted margin of every
    purchase line before ``as_of`` (NaN without one), as ``features.referrals.referred_values`` has them."""
    from pyspark.sql import functions as F

    micros = F.unix_micros(F.col("timestamp").cast("timestamp"))
    rows = (
        transactions.select(
            "customer_id", micros.alias("_us"), "amount", line_margin(transactions, economics)
        )
        .where(F.col("_us") < F.lit(epoch_micros(as_of)))
        .join(referred, "customer_id")
    )
    line = F.col("amount") > 0
    per_customer = pd.DataFrame(
        rows.groupBy("customer_id")
        .agg(
            F.sum(F.when(F.col("_us") >= F.col("_from"), F.col("amount")).otherwise(0.0)).alias("_spent"),
            F.sum(F.when(line, F.col("amount") * F.col("_margin"))).alias("_weighted"),
            F.sum(F.when(line, F.col("amount"))).alias("_spend"),
        )
        .select("customer_id", "_spent", customer_margin(economics).alias("_margin"))
        .toPandas()
    )
    index = per_customer["customer_id"].astype(str).to_numpy()
    spent = pd.Series(per_customer["_spent"].to_numpy(float), index=index)
    return spent, pd.Series(pd.to_numeric(per_customer["_margin"]).to_numpy(float), index=index)
