"""Reasons: exact TreeSHAP contributions turned into sentences a retention agent understands.

Contributions are in the churn model's log-odds: base value + contributions = raw score exactly.
Each reason compares the customer's value with what is typical among customers who stayed.

Batch scoring explains tens of thousands of customers a second, so everything that depends only on the
feature (its sentence pattern, the JSON around its values) is prepared once per call, and each customer's
reasons are written as JSON text directly: the text a file or the store keeps, and the API decodes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from json.encoder import encode_basestring_ascii
from typing import Any, cast

import numpy as np

from features.bundle import FeatureInfo, ModelBundle

NEW_CUSTOMER_DAYS = 180  # an 'onboarding' reason is one an action can answer only for customers this new


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _whole_or_tenth(value: float) -> str:
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"


def _number_format(unit: str) -> Callable[[float], str]:
    """How a number of this unit is written: 40%, 1,234.50, 12 (days and counts), 3.5 (the rest)."""
    if unit == "share":
        return lambda value: f"{value:.0%}"
    if unit == "money":
        return lambda value: f"{value:,.2f}"
    if unit in ("count", "days"):
        return lambda value: f"{value:,.0f}"
    return _whole_or_tenth


Speaker = Callable[[object, float | None], str]  # (decoded value, mean gap in days) -> sentence


def _speaker(info: FeatureInfo) -> Speaker:
    """The sentence pattern of one feature, with everything that does not depend on the customer done."""
    described = f"{info.description[:1].upper()}{info.description[1:]}"
    typical = info.typical
    if info.categories is not None:

        def say_category(value: object, gap: float | None = None) -> str:
            shown = "unknown" if _missing(value) else str(value)
            most = (
                f" (most customers who stay: '{typical}')."
                if typical is not None and typical != shown
                else "."
            )
            return f"{described} is '{shown}'{most}"

        known: dict[object, str] = {v: say_category(v) for v in [*info.categories, None]}

        def say_known_category(value: object, gap: float | None = None) -> str:
            return known.get(value) or say_category(value)

        return say_known_category

    no_record = f"No record of {info.description}."
    if info.name == "recency_days":

        def say_recency(value: object, gap: float | None) -> str:
            if value is None or value != value:  # unknown (None or NaN)
                return no_record
            days = f"{float(cast(float, value)):,.0f}"
            usual = f"; usually buys every {gap:,.0f} days" if gap is not None and gap == gap else ""
            return f"Last purchase {days} {'day' if days == '1' else 'days'} ago{usual}."

        return say_recency
    if info.name == "overdue_ratio":

        def say_overdue(value: object, gap: float | None = None) -> str:
            if value is None or value != value:
                return no_record
            number = float(cast(float, value))
            return (
                f"Next purchase is overdue: {number:.1f}x the usual gap between purchases has passed."
                if number > 1
                else f"Still within the usual gap between purchases ({number:.1f}x of it has passed)."
            )

        return say_overdue
    number_text = _number_format(info.unit)
    typical_text = ""
    if typical is not None and not _missing(typical):
        t = float(typical)
        if info.unit == "count" and t == 0:
            typical_text = "; most customers who stay have none"
        else:
            typical_text = f"; typical for customers who stay: {number_text(t)}"
    counted = info.unit == "count"

    def say_number(value: object, gap: float | None = None) -> str:
        if value is None or value != value:
            return no_record
        number = float(cast(float, value))
        if counted and number != 1:  # "2 unresolved complaints in the last 90 days"
            return f"{number_text(number)} {info.description}{typical_text}."
        return f"{described}: {number_text(number)}{typical_text}."

    return say_number


def sentence(info: FeatureInfo, value: object, row: dict[str, object]) -> str:
    """One plain sentence for one feature of one customer (``row`` gives context: ``mean_gap_days``)."""
    gap = row.get("mean_gap_days")
    return _speaker(info)(value, None if _missing(gap) else float(cast(float, gap)))


REASON_FIELDS = (
    "feature",
    "value",
    "typical",
    "contribution",
    "direction",
    "group",
    "sentence",
)  # stored order


@dataclass(frozen=True)
class Reasons:
    """Every row's reasons, encoded once.

    ``json``: per row a JSON array of {feature, value, typical, contribution, direction, group, sentence}
    (what files hold and the API returns); ``stored``: the same as arrays of REASON_FIELDS, without the
    repeated keys (what the store keeps, see :func:`expand_reasons`); ``first_sentence``: the strongest
    reason's sentence ('' when there is none); ``risk_groups``: the reason families that raise the row's
    risk, i.e. what an action should address.
    """

    json: list[str]
    stored: list[str]
    first_sentence: list[str]
    risk_groups: list[frozenset[str]]

    def as_dicts(self) -> list[list[dict[str, object]]]:
        return [json.loads(text) for text in self.json]


def expand_reasons(stored: list[Any]) -> list[dict[str, Any]]:
    """Reasons as the API returns them, from their stored form (reasons stored as objects pass through)."""
    if not stored or isinstance(stored[0], dict):
        return stored
    return [
        {"feature": f, "value": v, "typical": t, "contribution": c, "direction": d, "group": g, "sentence": s}
        for f, v, t, c, d, g, s in stored
    ]


def _round(values: np.ndarray, digits: int) -> np.ndarray:
    """``round(x, digits)`` of every element, exactly as Python rounds (correctly rounded decimal).

    numpy's rounding scales, rounds and scales back; it agrees with Python whenever the scaled value is
    clearly away from a half (then both pick the same integer k, and k / 10**digits is the double nearest
    the decimal). The few elements near a half, or too large to judge, are rounded by Python itself."""
    scale = 10.0**digits
    scaled = values * scale
    out = np.round(scaled) / scale
    with np.errstate(invalid="ignore"):
        doubtful = np.isfinite(values) & (
            (np.abs(scaled) >= 2.0**30) | (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
        )
    for index in np.flatnonzero(doubtful):
        out.flat[index] = round(float(values.flat[index]), digits)
    return out


def _float_json(value: float) -> str:
    """A float as ``json.dumps`` writes it."""
    return repr(value) if -math.inf < value < math.inf else json.dumps(value)


def _value_json(value: float | str | None) -> str:
    if value is None:
        return "null"
    return json.dumps(value) if isinstance(value, str) else _float_json(value)


def _distinct_texts(values: np.ndarray, write: Callable[[float], str]) -> np.ndarray:
    """``write`` of every element, called once per distinct value (an object array of the same shape)."""
    distinct, where = np.unique(values, return_inverse=True)
    texts = np.array([write(v) for v in distinct.tolist()] + [""], dtype=object)
    return texts[where.reshape(values.shape)]


def _rows(
    starts: list[str],
    start_of: np.ndarray,
    contribution_json: np.ndarray,
    middles: list[str],
    middle_of: np.ndarray,
    sentences: list[str],
    close: str,
    sentence_of: np.ndarray,
    kept: np.ndarray,
) -> list[str]:
    """Each row's JSON array of reasons, from the pieces of its first ``kept`` reasons."""
    n, k = start_of.shape
    if not k:
        return ["[]"] * n
    first = np.array([f"[{s}" for s in starts] + [""], dtype=object)
    later = np.array([f", {s}" for s in starts] + [""], dtype=object)
    middle = np.array(middles, dtype=object)[middle_of]
    closed = np.array([f"{s}{close}" for s in sentences] + [""], dtype=object)
    pieces: list[list[str]] = []
    for slot in range(k):
        pieces += [
            (later if slot else first)[start_of[:, slot]].tolist(),
            contribution_json[:, slot].tolist(),
            middle[:, slot].tolist(),
            closed[sentence_of[:, slot]].tolist(),
        ]
    rows = ["".join(row) for row in zip(*pieces, repeat("]", n), strict=True)]
    for i in np.flatnonzero(kept < k).tolist():  # fewer non-zero contributions than top_k
        rows[i] = "".join(p[i] for p in pieces[: 4 * kept[i]]) + "]" if kept[i] else "[]"
    return rows


def top_reasons(bundle: ModelBundle, matrix: np.ndarray, contrib: np.ndarray, top_k: int = 5) -> Reasons:
    """The top_k features by absolute contribution for every row (zero contributions left out).

    A reason's value is the customer's (categories by name, numbers to 4 decimals, null when unknown); a
    reason raises risk when its contribution, to 4 decimals, is positive, and an 'onboarding' one counts
    for the action only while the customer is new (a value under NEW_CUSTOMER_DAYS).

    The text of a reason depends only on its feature, value (for recency also the usual gap), contribution
    and sign, so each piece is written once per distinct value and the rows are assembled from pieces."""
    infos = bundle.features
    n, k = len(matrix), min(top_k, len(infos))
    values = contrib[:, :-1]
    top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]  # zero contributions sort last
    contribution = np.take_along_axis(values, top, axis=1)
    rounded = _round(contribution, 4)
    value = _round(np.take_along_axis(matrix, top, axis=1), 4)  # categorical codes are whole already
    names = bundle.feature_names
    gap = matrix[:, names.index("mean_gap_days")] if "mean_gap_days" in names else np.full(n, np.nan)

    # A reason is written from four pieces: the start (up to its contribution: one per feature and value),
    # the contribution, the middle (direction and group: one per feature and sign) and the sentence.
    starts: list[tuple[str, str]] = []  # (as an object, as an array)
    start_of = np.zeros(top.shape, dtype=np.intp)
    sentences: list[str] = []
    sentence_of = np.zeros(top.shape, dtype=np.intp)
    new = np.zeros(top.shape, dtype=bool)  # a numeric value under NEW_CUSTOMER_DAYS
    for j, info in enumerate(infos):
        at = top == j
        if not at.any():
            continue
        speak, categories = _speaker(info), info.categories
        here = value[at]
        distinct, where = np.unique(here, return_inverse=True)
        decoded: list[float | str | None] = [
            None if v != v else v if categories is None else categories[int(v)] for v in distinct.tolist()
        ]
        name, typical = json.dumps(info.name), json.dumps(info.typical, default=str)
        start_of[at] = len(starts) + where
        starts += [
            (
                f'{{"feature": {name}, "value": {v}, "typical": {typical}, "contribution": ',
                f"[{name}, {v}, {typical}, ",
            )
            for v in map(_value_json, decoded)
        ]
        if info.name == "recency_days":  # the sentence also says the customer's usual gap
            sentence_of[at] = len(sentences) + np.arange(len(here))
            gaps = gap[np.nonzero(at)[0]].tolist()
            sentences += [speak(decoded[w], g) for w, g in zip(where.tolist(), gaps, strict=True)]
        else:
            sentence_of[at] = len(sentences) + where
            sentences += [speak(v, None) for v in decoded]
        if categories is None:
            new[at] = here < NEW_CUSTOMER_DAYS

    kept = (contribution != 0.0).sum(axis=1)
    contribution_json = _distinct_texts(rounded, _float_json)
    sign = top * 2 + (contribution > 0)
    quoted = [encode_basestring_ascii(s) for s in sentences]
    object_middles = [
        f', "direction": "{direction}", "group": {json.dumps(f.group)}, "sentence": '
        for f in infos
        for direction in ("lowers risk", "raises risk")
    ]
    array_middles = [
        f', "{direction}", {json.dumps(f.group)}, '
        for f in infos
        for direction in ("lowers risk", "raises risk")
    ]
    texts = _rows(
        [s for s, _ in starts],
        start_of,
        contribution_json,
        object_middles,
        sign,
        quoted,
        "}",
        sentence_of,
        kept,
    )
    stored = _rows(
        [s for _, s in starts],
        start_of,
        contribution_json,
        array_middles,
        sign,
        quoted,
        "]",
        sentence_of,
        kept,
    )
    said = np.array([*sentences, ""], dtype=object)
    firsts = np.where(kept > 0, said[sentence_of[:, 0]] if k else "", "").tolist()

    groups = sorted({f.group for f in infos})
    onboarding = np.array([f.group == "onboarding" for f in infos])[top]
    addressable = (rounded > 0) & (new | ~onboarding)
    bits = np.array([1 << groups.index(f.group) for f in infos], dtype=np.int64)[top]
    masks = np.bitwise_or.reduce(np.where(addressable, bits, 0), axis=1).tolist() if k else [0] * n
    sets = {m: frozenset(g for b, g in enumerate(groups) if m >> b & 1) for m in set(masks)}
    return Reasons(texts, stored, firsts, [sets[m] for m in masks])
