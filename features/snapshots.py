"""Training snapshots: several cutoffs whose label windows are fully observed, and the scoring frame.

The newest fully observed cutoff is the validation cutoff. Training cutoffs lie at least one horizon
before it, so no training label window overlaps the validation label window: nothing about a
validation-period outcome can reach a training row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from features.build import Tables, feature_table, label_table
from features.engine import duckdb_tables, to_frame
from features.errors import DataProblem, DataValidationError
from features.loading import Dataset
from features.spec import FeatureDef, available_features


def model_features(dataset: Dataset) -> list[FeatureDef]:
    """The features this dataset supports (no feature is learned from filled-in defaults)."""
    attributes = {
        name: not pd.api.types.is_numeric_dtype(dataset.customers[name]) for name in dataset.attribute_columns
    }
    return available_features(dataset.provided, attributes)


def observed_until(dataset: Dataset) -> pd.Timestamp:
    """The first instant not covered by the data: midnight after its newest event."""
    return dataset.last_date.normalize() + pd.Timedelta(days=1)


def snapshot_cutoffs(
    dataset: Dataset, horizon_days: int, n_train: int, step_days: int = 30
) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    """(training cutoffs oldest first, validation cutoff)."""
    horizon = pd.Timedelta(days=horizon_days)
    validation = observed_until(dataset) - horizon
    first = dataset.transactions["timestamp"].min().normalize()
    newest_train = validation - horizon
    train = [newest_train - pd.Timedelta(days=step_days * k) for k in range(n_train)]
    train = sorted(c for c in train if c - first >= pd.Timedelta(days=step_days))
    if not train:
        needed = 2 * horizon_days + step_days
        raise DataValidationError(
            [
                DataProblem(
                    str(dataset.files.get("transactions", "transactions")),
                    "timestamp",
                    f"covers {(observed_until(dataset) - first).days} days, too short to train with a "
                    f"{horizon_days}-day horizon",
                    f"supply at least {needed} days of history, or choose a shorter --horizon-days",
                )
            ]
        )
    return train, validation


@dataclass(frozen=True)
class Snapshot:
    cutoff: pd.Timestamp
    frame: pd.DataFrame  # customer_id, cutoff, features..., churned, future_spend


def build_snapshot(dataset: Dataset, cutoff: pd.Timestamp, horizon_days: int, threads: int = 2) -> Snapshot:
    return build_snapshots(dataset, [cutoff], horizon_days, threads)[0]


def build_snapshots(
    dataset: Dataset,
    cutoffs: list[pd.Timestamp],
    horizon_days: int,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
) -> list[Snapshot]:
    """Features and labels at each cutoff, on one engine connection (registering the tables once)."""
    with duckdb_tables(dataset, threads) as tables:
        snapshots = []
        for i, cutoff in enumerate(cutoffs):
            if progress is not None:
                progress(i)
            snapshots.append(_snapshot(tables, dataset, cutoff, horizon_days))
        return snapshots


def _snapshot(tables: Tables, dataset: Dataset, cutoff: pd.Timestamp, horizon_days: int) -> Snapshot:
    moment = cutoff.to_pydatetime()
    features = to_frame(feature_table(tables, moment, dataset.attribute_columns))
    labels = to_frame(label_table(tables, moment, horizon_days))
    frame = features.merge(
        labels[["customer_id", "churned", "future_spend"]],
        on="customer_id",
        how="left",
        validate="one_to_one",
    )
    frame.insert(1, "cutoff", cutoff)
    return Snapshot(cutoff, frame)
