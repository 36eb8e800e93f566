"""Each customer's exact purchase summary on Spark: what :func:`features.value.value_inputs` gives local
batch scoring, computed where the transactions lie, so Spark-scored lifetime values are the local ones.

The conventions are :func:`features.btyd.rfm_summary`'s, to the letter (its module docstring):

- only transactions strictly before the as-of instant are read;
- one purchase occasion per customer per calendar day (UTC, as every age in the engine): a day's amounts
  are netted first, and a day whose net is positive is an occasion;
- ``frequency`` counts the occasions after the first, ``recency`` runs from the first occasion's day to
  the last one's and ``T`` from the first occasion's day to the as-of instant, both in days;
- ``monetary_value`` is the net of every day after the first occasion's day (returns included), floored
  at zero, divided by ``frequency`` (0 without repeat purchases);
- a customer without a positive day is not in the summary: valued as a new customer (all zeros).

``value_margin`` is :func:`features.value.value_inputs`' too: the spend-weighted margin of the customer's
purchase lines (positive amounts) over the channels of the economics config, the gross margin for a
channel it does not name or a customer without purchases, 1 without a config.

Days are whole numbers of days since 1970 taken from the timestamps' epoch microseconds, so they do not
depend on the session time zone once the timestamps are read. Sums are Spark's, in its order: they equal
pandas' (compensated) sums to the last bit or two, which moves no value by more than about 1e-12 of
itself; only a day whose lines net to within a rounding error of zero (three or more lines cancelling
exactly) could count as a purchase on one engine and not the other.

The summary shuffles the transactions once, by customer: the (customer, day) netting, the first-occasion
window and the per-customer totals all run inside that partitioning (checked in the physical plan).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pandas as pd

from features.value import INPUT_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql import DataFrame as SparkFrame

    from features.economics import EconomicsConfig

__all__ = ["attach_value_inputs", "customer_margin", "line_margin", "purchase_summary"]

DAY_MICROS: Final = 86_400_000_000
_EPOCH: Final = pd.Timestamp("1970-01-01")


def epoch_micros(moment: pd.Timestamp) -> int:
    """A time-zone-less instant as microseconds since 1970 (read as UTC, like the engine's timestamps)."""
    return int((pd.Timestamp(moment) - _EPOCH) // pd.Timedelta(microseconds=1))


def purchase_summary(
    transactions: SparkFrame, as_of: pd.Timestamp, economics: EconomicsConfig | None = None
) -> SparkFrame:
    """Per customer with a transaction before ``as_of``: ``customer_id`` and :data:`INPUT_COLUMNS`.

    ``transactions``: the contract's ``customer_id``, ``timestamp`` (a Spark timestamp), ``amount`` and,
    for channel margins, ``channel``. A customer with transactions but no positive day has null
    frequency, recency, T and monetary value (not in ``rfm_summary``) and a margin from any purchase line;
    :func:`attach_value_inputs` fills both as ``value_inputs`` does."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cutoff = epoch_micros(as_of)
    micros = F.unix_micros(F.col("timestamp").cast("timestamp"))
    rows = (
        transactions.select(
            "customer_id", micros.alias("_us"), "amount", line_margin(transactions, economics)
        )
        .where(F.col("_us") < F.lit(cutoff))
        .repartition("customer_id")  # the one shuffle: every step below groups by customer
    )
    line = F.col("amount") > 0
    daily = rows.groupBy("customer_id", F.expr(f"_us div {DAY_MICROS}").alias("_day")).agg(
        F.sum("amount").alias("_net"),
        F.sum(F.when(line, F.col("amount") * F.col("_margin"))).alias("_weighted"),
        F.sum(F.when(line, F.col("amount"))).alias("_spend"),
    )
    occasion = F.col("_net") > 0
    first = F.min(F.when(occasion, F.col("_day"))).over(Window.partitionBy("customer_id"))
    per_customer = (
        daily.withColumn("_first", first)
        .groupBy("customer_id")
        .agg(
            F.min("_first").alias("_first"),
            F.max(F.when(occasion, F.col("_day"))).alias("_last"),
            F.count(F.when(occasion, F.lit(1))).alias("_occasions"),
            F.sum(F.when(F.col("_day") > F.col("_first"), F.col("_net"))).alias("_repeat"),
            F.sum("_weighted").alias("_weighted"),
            F.sum("_spend").alias("_spend"),
        )
    )
    bought = F.col("_first").isNotNull()
    frequency = (F.col("_occasions") - 1).cast("double")
    repeat = F.greatest(F.coalesce(F.col("_repeat"), F.lit(0.0)), F.lit(0.0))
    frequency_column, recency, age, monetary, margin_column = INPUT_COLUMNS
    return per_customer.select(
        "customer_id",
        F.when(bought, frequency).alias(frequency_column),
        F.when(bought, (F.col("_last") - F.col("_first")).cast("double")).alias(recency),
        F.when(bought, (F.lit(cutoff) - F.col("_first") * DAY_MICROS).cast("double") / DAY_MICROS).alias(age),
        F.when(bought, F.when(frequency > 0, F.try_divide(repeat, frequency)).otherwise(0.0)).alias(monetary),
        customer_margin(economics).alias(margin_column),
    )


def customer_margin(economics: EconomicsConfig | None) -> Column:
    """The spend-weighted margin over a customer's purchase lines (null without any: filled later), as an
    aggregate's output: it reads the per-customer sums ``_weighted`` (amount x :func:`line_margin` over
    the purchase lines) and ``_spend`` (their amount)."""
    from pyspark.sql import functions as F

    if economics is None:
        return F.lit(1.0)
    if not economics.channel_margins():
        return F.lit(economics.gross_margin)
    return F.try_divide(F.col("_weighted"), F.col("_spend")).cast("double")


def line_margin(transactions: SparkFrame, economics: EconomicsConfig | None) -> Column:
    """Each line's margin, as the column ``_margin``: its channel's (lower-cased) from the config, else the
    gross margin; null when the config gives no channel margins (:func:`customer_margin` needs none)."""
    from pyspark.sql import functions as F

    by_channel = {} if economics is None else economics.channel_margins()
    if economics is None or not by_channel or "channel" not in transactions.columns:
        return F.lit(None).cast("double").alias("_margin")
    table = F.create_map(*[F.lit(v) for pair in sorted(by_channel.items()) for v in pair])
    channel = F.lower(F.col("channel").cast("string"))
    return F.coalesce(table[channel], F.lit(economics.gross_margin)).cast("double").alias("_margin")


def attach_value_inputs(
    features: SparkFrame,
    transactions: SparkFrame,
    as_of: pd.Timestamp,
    economics: EconomicsConfig | None = None,
) -> SparkFrame:
    """``features`` (one row per ``customer_id``) with :data:`INPUT_COLUMNS` as
    :func:`features.value.value_inputs` gives them: customers without a purchase before ``as_of`` valued
    as new customers (zeros), their margin the gross margin (1 without a config)."""
    from pyspark.sql import functions as F

    summary = purchase_summary(transactions, as_of, economics)
    default_margin = 1.0 if economics is None else economics.gross_margin
    *summary_columns, margin = INPUT_COLUMNS
    joined = features.drop(*INPUT_COLUMNS).join(summary, "customer_id", "left")
    return joined.select(
        *[F.col(c) for c in features.columns if c not in INPUT_COLUMNS],
        *[F.coalesce(F.col(c), F.lit(0.0)).alias(c) for c in summary_columns],
        F.coalesce(F.col(margin), F.lit(default_margin)).alias(margin),
    )
