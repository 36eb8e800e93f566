"""The one home of scoring's stored forms: the JSON each score carries and the columns files and the store hold.

Batch scoring writes a million customers' reasons, actions, inputs and histories, so each form is written
here by a fast path that assembles JSON text from pieces prepared once per distinct value (measured about
1.6x faster than building dicts and encoding them). Each form also has its plain description, a dict form
built in Python, and ``tests/serving/test_encoding.py`` checks with Hypothesis that the fast text decodes
to it (awkward strings, unknown values and NaN included). Everything off the hot path uses :mod:`json`.

The forms:

- **reasons**: a JSON array of ``{feature, value, typical, contribution, direction, group, sentence}``
  objects (files and the API), and the store's compact twin, arrays in :data:`REASON_FIELDS` order
  (:func:`encode_reasons`, :func:`expand_reasons`);
- **action**: ``{name, label, description, expected_net_value, cost, success_rate, why}``
  (:func:`encode_decisions`);
- **inputs**: a customer's model inputs, a JSON array in feature order, or an object when a text value
  would confuse the split (:func:`input_rows`, :func:`expand_inputs`);
- **history**: ``{"purchases": {field: [newest, ...]}, "interactions": {...}}``, column-wise
  (:func:`history_objects`, :func:`expand_history`);
- **model**: the model's description (:func:`model_json`);
- the **columns** of the scores file (:data:`FILE_COLUMNS`) and of the serving store (:data:`STORE_COLUMNS`).

And :func:`spreadsheet_cell` / :func:`spreadsheet_safe`, how a text cell is written for a spreadsheet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from json.encoder import encode_basestring_ascii
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# ----------------------------------------------------------------------------------------------- columns
# What every score row holds, name -> SQLite type, in the serving store's order. Money fields:
#   clv                   lifetime value: residual value, discounted to the end of the relationship (the
#                         API's clv.residual_value); null when unavailable, never 0
#   value_at_risk         churn probability within the horizon x the value if retained (discounted)
#   expected_revenue_90d  LightGBM's spend forecast over the model's horizon, undiscounted revenue
#   value_1y              discounted value of the next 365 days
#   value_basis           "contribution" (an economics config) or "revenue"
#   clv_detail            the API's whole clv object as JSON
#   referral_value        what the customers this one referred brought from their referral on (face value)
#                         plus their residual value (discounted to the end of their relationships); null
#                         without a referrals table, 0 with one and no referrals (features.referrals)
FIGURE_COLUMNS: dict[str, str] = {
    "customer_id": "TEXT PRIMARY KEY",
    "as_of": "TEXT",
    "churn_probability": "REAL",
    "risk_tier": "TEXT",
    "clv": "REAL",
    "value_at_risk": "REAL",
    "segment": "TEXT",
    "expected_revenue_90d": "REAL",
    "value_1y": "REAL",
    "p_alive": "REAL",
    "value_basis": "TEXT",
    "clv_detail": "TEXT",
    "referral_value": "REAL",
}
DECISION_COLUMNS: dict[str, str] = {"action_name": "TEXT", "expected_net_value": "REAL"}
NESTED_COLUMNS = ("reasons", "action", "model")  # JSON text in files and the store
INPUT_COLUMNS = ("features", "history")  # JSON text kept by the store only

# The scores file (``churnguard score --out``): flat columns a CRM can import, nested parts as JSON text.
FILE_COLUMNS = (*FIGURE_COLUMNS, *NESTED_COLUMNS, *DECISION_COLUMNS, "top_reason", "model_version")
# The serving store's table, name -> SQLite type.
STORE_COLUMNS: dict[str, str] = {
    **FIGURE_COLUMNS,
    **DECISION_COLUMNS,
    **dict.fromkeys((*NESTED_COLUMNS, *INPUT_COLUMNS), "TEXT"),
}
STORE_JSON_COLUMNS = (*NESTED_COLUMNS, *INPUT_COLUMNS, "clv_detail")


# ------------------------------------------------------------------------------------------ JSON values
def float_json(value: float) -> str:
    """A float as ``json.dumps`` writes it (``NaN``/``Infinity`` for the non-finite, as json does)."""
    return repr(value) if -math.inf < value < math.inf else json.dumps(value)


def value_json(value: float | str | None) -> str:
    """A reason's value as ``json.dumps`` writes it."""
    if value is None:
        return "null"
    return json.dumps(value) if isinstance(value, str) else float_json(value)


def _distinct_texts(values: np.ndarray, write: Callable[[float], str]) -> np.ndarray:
    """``write`` of every element, called once per distinct value (an object array of the same shape)."""
    distinct, where = np.unique(values, return_inverse=True)
    texts = np.array([write(v) for v in distinct.tolist()] + [""], dtype=object)
    return texts[where.reshape(values.shape)]


# ---------------------------------------------------------------------------------------------- reasons
REASON_FIELDS = (
    "feature",
    "value",
    "typical",
    "contribution",
    "direction",
    "group",
    "sentence",
)  # the store's order
RAISES, LOWERS = "raises risk", "lowers risk"


@dataclass(frozen=True)
class ReasonFeature:
    """What every reason of one feature shares."""

    name: str
    typical: object  # JSON-encoded with ``default=str``
    group: str


@dataclass(frozen=True)
class ReasonTable:
    """The top reasons of ``n`` rows in ``k`` slots, as indices into lists of distinct parts, so that each
    part is written once however many rows share it.

    A row's reason in slot ``s`` is feature ``features[heads[head_of[i, s]][0]]`` with the (decoded)
    value ``heads[head_of[i, s]][1]``, the contribution ``contribution[i, s]`` (already rounded), the
    direction ``raises[i, s]`` and the sentence ``sentences[sentence_of[i, s]]``. Only the first
    ``kept[i]`` slots of a row are reasons."""

    features: Sequence[ReasonFeature]
    heads: Sequence[tuple[int, float | str | None]]
    head_of: np.ndarray  # (n, k) intp
    contribution: np.ndarray  # (n, k) float
    raises: np.ndarray  # (n, k) bool
    sentences: Sequence[str]
    sentence_of: np.ndarray  # (n, k) intp
    kept: np.ndarray  # (n,) int


@dataclass(frozen=True)
class _Pieces:
    """A reason is written as head (up to its contribution) + contribution + middle (direction and group)
    + sentence + close; these are the distinct texts of each piece."""

    heads: list[str]
    middles: list[str]
    close: str


@dataclass(frozen=True)
class _FeatureTexts:
    """The JSON texts of each feature's name, typical value and group, and the distinct middles of its
    reasons (by direction) as objects and as arrays: the same for every call with the same features."""

    names: list[str]
    typicals: list[str]
    object_middles: list[str]
    array_middles: list[str]


# The features' texts by the identity of their sequence (a served model's features are written once,
# not at every request); at most a few sequences are kept, each with a reference that pins its id.
_FEATURE_TEXTS: dict[int, tuple[Sequence[ReasonFeature], _FeatureTexts]] = {}


def _feature_texts(features: Sequence[ReasonFeature]) -> _FeatureTexts:
    cached = _FEATURE_TEXTS.get(id(features))
    if cached is not None and cached[0] is features:
        return cached[1]
    groups = [json.dumps(f.group) for f in features]
    texts = _FeatureTexts(
        [json.dumps(f.name) for f in features],
        [json.dumps(f.typical, default=str) for f in features],
        [f', "direction": "{d}", "group": {g}, "sentence": ' for g in groups for d in (LOWERS, RAISES)],
        [f', "{d}", {g}, ' for g in groups for d in (LOWERS, RAISES)],
    )
    if len(_FEATURE_TEXTS) >= 8:
        _FEATURE_TEXTS.clear()
    _FEATURE_TEXTS[id(features)] = (features, texts)
    return texts


def encode_reasons(table: ReasonTable) -> tuple[list[str], list[str]]:
    """(objects, arrays): each row's reasons as a JSON array of objects, byte for byte what
    ``json.dumps(reason_dicts(table)[i])`` writes, and the store's twin with arrays in REASON_FIELDS order."""
    texts = _feature_texts(table.features)
    names, typicals = texts.names, texts.typicals
    values = [value_json(v) for _, v in table.heads]
    objects = _Pieces(
        [
            f'{{"feature": {names[j]}, "value": {v}, "typical": {typicals[j]}, "contribution": '
            for (j, _), v in zip(table.heads, values, strict=True)
        ],
        texts.object_middles,
        "}",
    )
    arrays = _Pieces(
        [f"[{names[j]}, {v}, {typicals[j]}, " for (j, _), v in zip(table.heads, values, strict=True)],
        texts.array_middles,
        "]",
    )
    # + 0.0 writes a contribution rounded to -0.0 as 0.0: np.unique counts the two zeros as one value, so
    # without it a batch wrote whichever zero sorted first, and "-0.0" means nothing to a reader anyway
    contributions = _distinct_texts(table.contribution + 0.0, float_json)
    sentences = [encode_basestring_ascii(s) for s in table.sentences]
    return (
        _reason_rows(table, objects, contributions, sentences),
        _reason_rows(table, arrays, contributions, sentences),
    )


def _reason_rows(
    table: ReasonTable, pieces: _Pieces, contributions: np.ndarray, sentences: list[str]
) -> list[str]:
    """Each row's JSON array of reasons, joined from the pieces of its first ``kept`` reasons."""
    n, k = table.head_of.shape
    if not k:
        return ["[]"] * n
    feature_of = np.array([j for j, _ in table.heads] + [0], dtype=np.intp)[table.head_of]
    middle = np.array(pieces.middles, dtype=object)[feature_of * 2 + table.raises]
    first = np.array([f"[{s}" for s in pieces.heads] + [""], dtype=object)
    later = np.array([f", {s}" for s in pieces.heads] + [""], dtype=object)
    closed = np.array([f"{s}{pieces.close}" for s in sentences] + [""], dtype=object)
    columns: list[list[str]] = []
    for slot in range(k):
        columns += [
            (later if slot else first)[table.head_of[:, slot]].tolist(),
            contributions[:, slot].tolist(),
            middle[:, slot].tolist(),
            closed[table.sentence_of[:, slot]].tolist(),
        ]
    rows = ["".join(row) for row in zip(*columns, repeat("]", n), strict=True)]
    kept = table.kept
    for i in np.flatnonzero(kept < k).tolist():  # fewer reasons than slots
        rows[i] = "".join(c[i] for c in columns[: 4 * kept[i]]) + "]" if kept[i] else "[]"
    return rows


def reason_dicts(table: ReasonTable) -> list[list[dict[str, Any]]]:
    """The plain form of :func:`encode_reasons`' objects (slow: for tests and few rows)."""
    rows = []
    for i, kept in enumerate(table.kept.tolist()):
        row = []
        for slot in range(kept):
            j, value = table.heads[int(table.head_of[i, slot])]
            feature = table.features[j]
            row.append(
                {
                    "feature": feature.name,
                    "value": value,
                    "typical": feature.typical,
                    "contribution": float(table.contribution[i, slot]) + 0.0,  # never -0.0, as above
                    "direction": RAISES if table.raises[i, slot] else LOWERS,
                    "group": feature.group,
                    "sentence": table.sentences[int(table.sentence_of[i, slot])],
                }
            )
        rows.append(row)
    return rows


def expand_reasons(stored: list[Any]) -> list[dict[str, Any]]:
    """Reasons as the API returns them, from their stored form (reasons stored as objects pass through)."""
    if not stored or isinstance(stored[0], dict):
        return stored
    return [dict(zip(REASON_FIELDS, reason, strict=True)) for reason in stored]


# ---------------------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class ActionText:
    """The fields of an action's stored form that do not depend on the customer."""

    name: str
    label: str
    description: str
    cost: float
    success_rate: float


def encode_decisions(
    actions: Sequence[ActionText], chosen: Sequence[int], expected: Sequence[float], why: Sequence[str]
) -> list[str]:
    """Each customer's decision as JSON text, byte for byte ``json.dumps(decision_dict(...))``: action
    ``actions[chosen[i]]`` with expected net value ``expected[i]`` and the words ``why[i]``."""
    heads = [
        f'{{"name": {json.dumps(a.name)}, "label": {json.dumps(a.label)}, '
        f'"description": {json.dumps(a.description)}, "expected_net_value": '
        for a in actions
    ]
    tails = [
        f', "cost": {json.dumps(a.cost)}, "success_rate": {json.dumps(a.success_rate)}, "why": '
        for a in actions
    ]
    return [
        f"{heads[c]}{float_json(e)}{tails[c]}{encode_basestring_ascii(w)}}}"
        for c, e, w in zip(chosen, expected, why, strict=True)
    ]


def decision_dict(action: ActionText, expected: float, why: str) -> dict[str, Any]:
    """The plain form of one decision (what the API returns)."""
    return {
        "name": action.name,
        "label": action.label,
        "description": action.description,
        "expected_net_value": expected,
        "cost": action.cost,
        "success_rate": action.success_rate,
        "why": why,
    }


# ----------------------------------------------------------------------------------------------- inputs
def input_rows(features: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """Each row's model inputs as a JSON array of values in the order of ``names`` (numbers to 6 decimals,
    unknown values null).

    One encoder call for all rows, split at the row boundaries; should a text value contain the boundary
    itself, the rows are written as JSON objects instead (:func:`expand_inputs` reads both)."""
    inputs = features.reindex(columns=list(names))
    if not len(inputs):
        return []
    rows = inputs.to_json(orient="values", double_precision=6)[2:-2].split("],[")
    if len(rows) != len(inputs):
        return inputs.to_json(orient="records", lines=True, double_precision=6).splitlines()
    return [f"[{row}]" for row in rows]


def expand_inputs(stored: Any, names: Sequence[str] | None) -> Any:
    """A customer's inputs as {feature: value}, from an array in the order of ``names`` (objects, as
    rows written as objects hold, pass through)."""
    if isinstance(stored, list) and names:
        return dict(zip(names, stored, strict=True))
    return stored


# ---------------------------------------------------------------------------------------------- history
_TEXT = pa.large_string()  # events of a million customers can exceed 2 GiB of text


def _concat(*parts: str | pa.Array) -> pa.Array:
    """Element-wise concatenation of text arrays and constants."""
    return pc.binary_join_element_wise(
        *(pa.scalar(p, _TEXT) if isinstance(p, str) else p for p in parts), pa.scalar("", _TEXT)
    )


def columnwise_objects(fields: Mapping[str, pa.Array], counts: np.ndarray) -> pa.Array:
    """Per customer, the JSON object ``{field: [value, ...]}`` of its events, '{}' when it has none.

    ``fields`` maps each field to its events' values, already JSON text, customer after customer;
    ``counts[c]`` is how many events customer ``c`` has."""
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int64), type=pa.int64())
    pieces: list[str | pa.Array] = []
    for i, (name, values) in enumerate(fields.items()):
        lists = pa.LargeListArray.from_arrays(offsets, values.cast(_TEXT))
        pieces += [
            f"{'{' if i == 0 else '],'}{json.dumps(name)}:[",
            pc.binary_join(lists, pa.scalar(",", _TEXT)),
        ]
    return pc.if_else(pa.array(counts > 0), _concat(*pieces, "]}"), pa.scalar("{}", _TEXT))


def history_objects(kinds: Mapping[str, pa.Array]) -> list[str]:
    """Per customer, ``{kind: its column-wise events}`` from each kind's :func:`columnwise_objects`."""
    parts: list[str | pa.Array] = []
    for kind, objects in kinds.items():
        parts += [f"{', ' if parts else '{'}{json.dumps(kind)}: ", objects]
    if not parts or not len(parts[1]):
        return []
    return list(_concat(*parts, "}").to_pylist())


def expand_history(stored: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """{"purchases": [event, ...], "interactions": [...]}, newest first, from the stored form (lists of
    events, as stores written before the column-wise form hold, pass through)."""
    return {
        kind: [dict(zip(events, row, strict=True)) for row in zip(*events.values(), strict=True)]
        if isinstance(events, dict)
        else events
        for kind, events in stored.items()
    }


# ------------------------------------------------------------------------------------------------ model
def model_json(model: Mapping[str, Any]) -> str:
    """The model's description as stored with each score and in the store's meta."""
    return json.dumps(model, default=str)


# ---------------------------------------------------------------------------------------- spreadsheets
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> str:
    """Text for a spreadsheet cell: a leading formula character is neutralised with ``'`` (CSV injection:
    a cell such as ``=HYPERLINK(...)`` would otherwise run as a formula when the file is opened)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that starts like a formula written by :func:`spreadsheet_cell`
    (numbers, unknown values and other text unchanged). Cheap on a million rows: the test is vectorised
    and only the cells that need it are rewritten."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if not (pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)):
            continue
        risky = values.str.startswith(FORMULA_START).astype("boolean").fillna(False).to_numpy(dtype=bool)
        if risky.any():
            cells = values.astype(object)
            cells[risky] = [spreadsheet_cell(v) for v in cells[risky]]
            out[column] = cells
    return out
