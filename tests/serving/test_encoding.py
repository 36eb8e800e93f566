"""The stored forms' fast paths write exactly what their plain (dict) forms say, for any values: quotes,
backslashes, unicode, control characters, unknown values and non-finite numbers included."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.encoding import (
    FILE_COLUMNS,
    STORE_COLUMNS,
    ActionText,
    ReasonFeature,
    ReasonTable,
    columnwise_objects,
    decision_dict,
    encode_decisions,
    encode_reasons,
    expand_history,
    expand_inputs,
    expand_reasons,
    history_objects,
    input_rows,
    reason_dicts,
    spreadsheet_cell,
    spreadsheet_safe,
)
from serving.schemas import BatchResponse, ScoreResponse

AWKWARD = ['"', "\\", "'", "é", "日本", "😀", "\x00", "\n", "\t", "\x1f", "\u2028", "],[", "=", "-", "NaN"]
# Text made of awkward pieces and any other characters (surrogates excepted: not valid UTF-8).
texts = st.lists(
    st.sampled_from(AWKWARD) | st.text(st.characters(codec="utf-8"), max_size=3), max_size=5
).map("".join)
finite = st.floats(allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | finite | texts


def _same(a: Any, b: Any) -> bool:
    """Equality that takes NaN as equal to itself (json writes NaN and reads it back as a new NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# ---------------------------------------------------------------------------------------------- reasons
@st.composite
def reason_tables(draw: st.DrawFn) -> ReasonTable:
    features = draw(
        st.lists(
            st.builds(ReasonFeature, name=texts, typical=scalars | any_float, group=texts),
            min_size=1,
            max_size=4,
        )
    )
    heads = draw(
        st.lists(
            st.tuples(st.integers(0, len(features) - 1), st.none() | any_float | texts),
            min_size=1,
            max_size=6,
        )
    )
    sentences = draw(st.lists(texts, min_size=1, max_size=5))
    n, k = draw(st.integers(0, 5)), draw(st.integers(0, 4))

    def indices(upper: int) -> np.ndarray:
        return np.array(
            draw(st.lists(st.integers(0, upper - 1), min_size=n * k, max_size=n * k)), dtype=np.intp
        )

    contribution = draw(st.lists(any_float, min_size=n * k, max_size=n * k))
    raises = draw(st.lists(st.booleans(), min_size=n * k, max_size=n * k))
    return ReasonTable(
        features=features,
        heads=heads,
        head_of=indices(len(heads)).reshape(n, k),
        contribution=np.array(contribution, dtype=float).reshape(n, k),
        raises=np.array(raises, dtype=bool).reshape(n, k),
        sentences=sentences,
        sentence_of=indices(len(sentences)).reshape(n, k),
        kept=np.array(draw(st.lists(st.integers(0, k), min_size=n, max_size=n)), dtype=np.int64),
    )


@settings(max_examples=100, deadline=None)
@given(reason_tables())
def test_reasons_are_written_as_json_writes_their_dicts(table: ReasonTable) -> None:
    objects, arrays = encode_reasons(table)
    dicts = reason_dicts(table)
    assert objects == [json.dumps(row, default=str) for row in dicts]  # byte for byte
    for text, compact, row in zip(objects, arrays, dicts, strict=True):
        typical_as_read = [{**r, "typical": json.loads(json.dumps(r["typical"], default=str))} for r in row]
        assert _same(json.loads(text), typical_as_read)
        assert _same(expand_reasons(json.loads(compact)), json.loads(text))


def test_a_contribution_rounded_to_minus_zero_is_written_as_zero_whatever_the_batch_holds() -> None:
    # a tiny negative SHAP value rounds to -0.0; np.unique counts it as 0.0, so a batch holding both zeros
    # wrote whichever sorted first while one customer's reasons wrote -0.0
    for zeros in ([-0.0, 0.0], [-0.0, -0.0], [0.0, -0.0]):
        table = ReasonTable(
            features=[ReasonFeature("visits", None, "usage")],
            heads=[(0, 1.0)],
            head_of=np.zeros((2, 1), dtype=np.intp),
            contribution=np.array(zeros).reshape(2, 1),
            raises=np.zeros((2, 1), dtype=bool),
            sentences=["Visits are usual."],
            sentence_of=np.zeros((2, 1), dtype=np.intp),
            kept=np.ones(2, dtype=np.int64),
        )
        objects, _ = encode_reasons(table)
        assert all('"contribution": 0.0,' in text and "-0.0" not in text for text in objects)
        assert objects == [json.dumps(row) for row in reason_dicts(table)]


def test_reasons_stored_as_objects_pass_through() -> None:
    stored = [{"feature": "a", "value": 1}]
    assert expand_reasons(stored) == stored and expand_reasons([]) == []


# ---------------------------------------------------------------------------------------------- actions
actions = st.builds(ActionText, name=texts, label=texts, description=texts, cost=finite, success_rate=finite)


@settings(max_examples=100, deadline=None)
@given(st.lists(actions, min_size=1, max_size=4), st.data())
def test_decisions_are_written_as_json_writes_their_dicts(
    known: list[ActionText], data: st.DataObject
) -> None:
    rows = data.draw(st.lists(st.tuples(st.integers(0, len(known) - 1), any_float, texts), max_size=6))
    texts_ = encode_decisions(
        known, [c for c, _, _ in rows], [e for _, e, _ in rows], [w for _, _, w in rows]
    )
    for text, (chosen, expected, why) in zip(texts_, rows, strict=True):
        plain = decision_dict(known[chosen], expected, why)
        assert text == json.dumps(plain)
        assert _same(json.loads(text), plain)


# ----------------------------------------------------------------------------------------------- inputs
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**53), 2**53), st.none() | st.floats(-1e12, 1e12), st.none() | texts),
        max_size=6,
    )
)
def test_inputs_read_back_as_the_values_to_six_decimals(
    rows: list[tuple[int, float | None, str | None]],
) -> None:
    names = ["count", "amount", "country", "absent"]
    frame = pd.DataFrame(rows, columns=["count", "amount", "country"]).astype(
        {"count": "int64", "amount": "float64"}
    )
    frame["country"] = frame["country"].astype(object)
    stored = [expand_inputs(json.loads(text), names) for text in input_rows(frame, names)]
    assert len(stored) == len(rows)
    for read, (count, amount, country) in zip(stored, rows, strict=True):
        assert list(read) == names
        assert read["count"] == count and read["country"] == country and read["absent"] is None
        if amount is None:
            assert read["amount"] is None
        else:
            assert math.isclose(read["amount"], amount, rel_tol=1e-9, abs_tol=1e-6)


def test_a_value_holding_the_row_boundary_makes_rows_objects() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.1234567, np.nan], "c": ["x", "y],[z"]})
    rows = input_rows(frame, ["a", "b", "c"])
    expected = [{"a": 1, "b": 0.123457, "c": "x"}, {"a": 2, "b": None, "c": "y],[z"}]
    assert [expand_inputs(json.loads(r), ["a", "b", "c"]) for r in rows] == expected
    assert input_rows(frame.iloc[:0], ["a"]) == []


# ---------------------------------------------------------------------------------------------- history
events = st.lists(st.tuples(texts, scalars, st.booleans() | st.none()), max_size=4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(events, events), max_size=5))
def test_history_is_read_back_as_the_events_it_was_built_from(customers: list[tuple[Any, Any]]) -> None:
    fields = ("timestamp", "amount", "returned")
    kinds = {}
    for k, kind in enumerate(("purchases", "interactions")):
        rows = [event for customer in customers for event in customer[k]]
        values = {f: pa.array([json.dumps(e[i]) for e in rows], pa.string()) for i, f in enumerate(fields)}
        kinds[kind] = columnwise_objects(values, np.array([len(c[k]) for c in customers], dtype=np.int64))
    stored = history_objects(kinds)
    assert len(stored) == len(customers)
    for text, customer in zip(stored, customers, strict=True):
        expected = {
            kind: [dict(zip(fields, e, strict=True)) for e in customer[k]]
            for k, kind in enumerate(("purchases", "interactions"))
        }
        assert _same(expand_history(json.loads(text)), expected)


def test_history_stored_as_lists_of_events_passes_through() -> None:
    stored = {"purchases": [{"timestamp": "2025-01-01 10:00", "amount": 1.5}], "interactions": []}
    assert expand_history(stored) == stored


# ------------------------------------------------------------------------------------------ columns
def test_files_and_the_store_share_the_score_columns() -> None:
    shared = [c for c in FILE_COLUMNS if c in STORE_COLUMNS]
    assert (
        shared[:7]
        == list(STORE_COLUMNS)[:7]
        == ["customer_id", "as_of", "churn_probability", "risk_tier", "clv", "value_at_risk", "segment"]
    )
    assert {"action_name", "expected_net_value", "reasons", "action", "model"} <= set(shared)
    assert STORE_COLUMNS["referral_value"] == "REAL" and "referral_value" in shared


# Numbers in the API that are not money: probabilities, rates, a reason's SHAP contribution and the feature
# values it shows.
NOT_MONEY = {"churn_probability", "p_alive", "success_rate", "annual_discount_rate", "contribution"}
NOT_MONEY |= {"incremental_retention"}  # a change in a probability, like churn_probability
NOT_MONEY |= {"value", "typical"}
HORIZONS = ("horizon", "days", "end of the relationship", "end of their relationships", "as_of", "order")


def test_every_value_field_of_the_api_says_its_horizon_and_its_discounting() -> None:
    """The OpenAPI schema documents, for every money figure a CRM reads, over what period it runs and
    whether (and how) it is discounted, so no one mistakes one horizon or basis for another."""
    schema = ScoreResponse.model_json_schema(ref_template="{model}")
    models = {**schema["$defs"], **BatchResponse.model_json_schema(ref_template="{model}")["$defs"]}
    checked = []
    for model in models.values():
        for name, field in model.get("properties", {}).items():
            kinds = {field.get("type")} | {option.get("type") for option in field.get("anyOf", [])}
            if "number" not in kinds or name in NOT_MONEY:
                continue
            description = field.get("description", "")
            assert any(h in description for h in HORIZONS), (name, description)
            assert "discount" in description, (name, description)  # "discounted ..." or "undiscounted"
            checked.append(name)
    assert {"residual_value", "value_1y", "historic_value", "expected_revenue_90d", "value_at_risk"} <= set(
        checked
    )
    assert {"referral_value", "expected_net_value", "cost", "p05", "days_90"} <= set(checked)


# ---------------------------------------------------------------------------------------- spreadsheets
@settings(max_examples=100, deadline=None)
@given(st.lists(st.none() | texts, min_size=1, max_size=8), st.lists(finite, min_size=1, max_size=8))
def test_a_frame_is_made_spreadsheet_safe_cell_by_cell(cells: list[str | None], numbers: list[float]) -> None:
    frame = pd.DataFrame({"text": pd.Series(cells, dtype=object)})
    safe = spreadsheet_safe(frame)
    for before, after in zip(cells, safe["text"], strict=True):
        if before is None:
            assert after is None or after != after  # unknown stays unknown
        else:
            assert after == spreadsheet_cell(before)
            assert not after.startswith(("=", "+", "-", "@", "\t", "\r"))
    numeric = pd.DataFrame({"x": numbers})
    pd.testing.assert_frame_equal(spreadsheet_safe(numeric), numeric)  # negative numbers are not formulas


def test_spreadsheet_cells_keep_ordinary_text() -> None:
    assert spreadsheet_cell("=1+1") == "'=1+1" and spreadsheet_cell("-3") == "'-3"
    assert spreadsheet_cell("Last purchase 94 days ago.") == "Last purchase 94 days ago."
    assert spreadsheet_cell(None) == "" and spreadsheet_cell(-3.5) == "'-3.5"
