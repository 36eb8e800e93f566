"""The duplicate-row search gives pandas' own answer, also on the hashed route taken at scale.

Large tables are hashed in DuckDB first and only rows whose hash repeats reach pandas; values pandas
counts as equal (NaN and NaN, -0.0 and 0.0, missing and missing) must therefore never hash apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_series_equal

from features.validation import duplicated_rows

_OTHER_NAN = float(np.array([0x7FF8000000000001], dtype=np.uint64).view(np.float64)[0])  # another NaN
_FLOATS = st.sampled_from([0.0, -0.0, 1.5, float("nan"), _OTHER_NAN, float("inf"), -1.0])
_TEXTS = st.sampled_from(["a", "b", " a", "", None])
_FLAGS = st.sampled_from([True, False, None])
_STAMPS = st.sampled_from([pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-01 00:00:01"), pd.NaT])
_ROW = st.tuples(_FLOATS, _TEXTS, _FLAGS, _STAMPS, st.integers(0, 2))
Row = tuple[float, str | None, bool | None, pd.Timestamp, int]


def _frame(rows: list[Row]) -> pd.DataFrame:
    """A frame with every dtype a parsed contract table holds (plus a plain integer column)."""
    floats, texts, flags, stamps, ints = zip(*rows, strict=True) if rows else ([], [], [], [], [])
    return pd.DataFrame(
        {
            "amount": pd.Series(floats, dtype="float64"),
            "channel": pd.Series(texts, dtype=str),
            "returned": pd.Series(flags, dtype="boolean"),
            "timestamp": pd.Series(stamps, dtype="datetime64[us]"),
            "count": pd.Series(ints, dtype="int64"),
        }
    )


def _mirrored(frame: pd.DataFrame, picked: list[int]) -> pd.DataFrame:
    """The frame plus copies of the picked rows whose zeros change sign and whose NaNs change payload."""
    copies = frame.iloc[[i % len(frame) for i in picked]].copy() if len(frame) else frame
    amount = copies["amount"].to_numpy()
    amount = np.where(amount == 0, -amount, np.where(np.isnan(amount), _OTHER_NAN, amount))
    copies["amount"] = amount
    return pd.concat([frame, copies], ignore_index=True)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(_ROW, max_size=40), picked=st.lists(st.integers(0, 39), max_size=10))
def test_hashed_search_finds_exactly_the_rows_pandas_calls_duplicates(
    rows: list[Row], picked: list[int]
) -> None:
    frame = _mirrored(_frame(rows), picked)

    assert_series_equal(duplicated_rows(frame, pandas_below=0), frame.duplicated(keep="first"))


def test_a_large_table_takes_the_hashed_route_and_finds_every_planted_duplicate() -> None:
    rng = np.random.default_rng(0)
    n = 150_000
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series([f"C{i}" for i in rng.integers(0, 10**9, n)], dtype=str),
            "amount": rng.random(n),
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**8, n), unit="s"),
        }
    )
    frame.loc[[10, 20], "amount"] = [0.0, float("nan")]
    copies = frame.iloc[[10, 20, 30, 30]].copy()
    copies.iloc[0, copies.columns.get_loc("amount")] = -0.0  # equal to 0.0 for pandas
    frame = pd.concat([frame, copies], ignore_index=True)

    found = duplicated_rows(frame)

    assert found.sum() == 4 and found.iloc[-4:].all()
    assert_series_equal(found, frame.duplicated(keep="first"))


def test_a_table_without_duplicates_reports_none_on_either_route() -> None:
    frame = pd.DataFrame({"order_id": pd.Series([f"O{i}" for i in range(1000)], dtype=str)})

    assert not duplicated_rows(frame).any()
    assert not duplicated_rows(frame, pandas_below=0).any()
