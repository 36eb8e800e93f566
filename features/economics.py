"""The economics config: what turns revenue into contribution, and how future money is discounted.

A YAML file (``--economics`` on ``churnguard train``, or the ``CHURNGUARD_ECONOMICS`` environment variable)
parsed into :class:`EconomicsConfig`. Example, every key optional except ``gross_margin``::

    gross_margin: 0.35            # share of net revenue that is gross profit (0 < margin <= 1)
    margin_by_channel:            # overrides gross_margin for spend through these sales channels
      store: 0.25
      web: 0.40
    cost_per_support_contact: 6.0 # handling one support contact or complaint
    cost_per_return: 9.0          # handling one returned order (shipping, restocking)
    cost_per_late_delivery: 4.0   # handling one late delivery (contact, goodwill)
    annual_discount_rate: 0.10    # yearly rate future money is discounted at

Without a config, value is revenue (``basis: "revenue"``) discounted at :data:`DEFAULT_DISCOUNT_RATE`.
Cost to serve is a yearly rate per customer, from the customer's last 365 days: support contacts and
complaints, returned orders and late deliveries, each times its unit cost (:func:`cost_per_year`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypeAlias

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError

# Rows of features: a DataFrame, or column name -> values (the API's few records, without pandas).
Columns: TypeAlias = "pd.DataFrame | Mapping[str, np.ndarray]"

DEFAULT_DISCOUNT_RATE: Final = 0.10
ENV_VAR: Final = "CHURNGUARD_ECONOMICS"

# Model features a cost-to-serve rate reads (all over the last 365 days), with the config key pricing each.
COST_FEATURES: Final = {
    "support_365d": "cost_per_support_contact",
    "complaints_365d": "cost_per_support_contact",
    "late_deliveries_365d": "cost_per_late_delivery",
}


class EconomicsConfig(BaseModel):
    """Gross margin, unit costs of serving a customer, and the discount rate (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gross_margin: float = Field(gt=0, le=1, description="Share of net revenue that is gross profit.")
    margin_by_channel: dict[str, float] = Field(default_factory=dict)
    cost_per_support_contact: float = Field(default=0.0, ge=0)
    cost_per_return: float = Field(default=0.0, ge=0)
    cost_per_late_delivery: float = Field(default=0.0, ge=0)
    annual_discount_rate: float = Field(default=DEFAULT_DISCOUNT_RATE, gt=0, lt=1)

    def model_post_init(self, context: object) -> None:
        bad = {k: v for k, v in self.margin_by_channel.items() if not 0 < v <= 1}
        if bad:
            raise ConfigError(
                f"economics: margin_by_channel.{next(iter(bad))} is {next(iter(bad.values()))}; "
                "a margin is a share between 0 (excluded) and 1"
            )

    def channel_margins(self) -> dict[str, float]:
        """Margin per lower-cased channel name."""
        return {k.lower(): v for k, v in self.margin_by_channel.items()}


def load_economics(path: Path) -> EconomicsConfig:
    """Read and validate an economics YAML; every problem names its key and what to write instead."""
    try:
        body = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the economics config ({exc})") from exc
    if not isinstance(body, dict):
        raise ConfigError(
            f"{path}: the economics config must be a mapping of keys such as gross_margin: 0.35"
        )
    try:
        return EconomicsConfig.model_validate(body)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(lines)) from None


def economics_from_env(path: Path | None = None) -> EconomicsConfig | None:
    """``path`` if given, else the file named by ``CHURNGUARD_ECONOMICS``, else None (revenue basis)."""
    chosen = path if path is not None else os.environ.get(ENV_VAR) or None
    return None if chosen is None else load_economics(Path(chosen))


def cost_per_year(features: Columns, rows: int, economics: EconomicsConfig | None) -> np.ndarray:
    """Each customer's yearly cost to serve from their last 365 days (0 without a config).

    ``features``: a DataFrame or a mapping of column name to numbers, ``rows`` long. Returned orders are
    ``return_share x orders_365d``; a feature the input lacks counts as none, so a caller supplying
    fewer features gets a lower cost, never an error."""
    if economics is None:
        return np.zeros(rows)

    def column(name: str) -> np.ndarray:
        if name not in features:
            return np.zeros(rows)
        return np.nan_to_num(numeric(features[name])).clip(0)

    cost = np.zeros(rows)
    for name, key in COST_FEATURES.items():
        cost += column(name) * float(getattr(economics, key))
    cost += column("return_share") * column("orders_365d") * economics.cost_per_return
    return cost


def numeric(values: object) -> np.ndarray:
    """Numbers as a float array; what is not a number becomes NaN (no pandas work for float arrays)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values.astype(float, copy=False)
    if isinstance(values, list):  # a few records' values (the API): numbers and None convert directly
        try:
            return np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            pass
    return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
