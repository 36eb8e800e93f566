"""Reasons: exact TreeSHAP contributions turned into sentences a retention agent understands.

Contributions are in the churn model's log-odds: base value + contributions = raw score exactly.
Each reason compares the customer's value with what is typical among customers who stayed.

Batch scoring explains tens of thousands of customers a second, so everything that depends only on the
feature (its sentence pattern) is prepared once per call, each distinct value is said once, and the
reasons are written as JSON text by :func:`serving.encoding.encode_reasons`: the text a file or the store
keeps, and the API decodes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from features.bundle import FeatureInfo, ModelBundle
from serving.encoding import ReasonFeature, ReasonTable, encode_reasons

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


@dataclass(frozen=True)
class Reasons:
    """Every row's reasons, encoded once (see :mod:`serving.encoding`).

    ``text``: per row the JSON array of reason objects (what files hold and the API returns); ``stored``:
    the store's compact twin; ``first_sentence``: the strongest reason's sentence ('' when there is none);
    ``risk_groups``: the reason families that raise the row's risk, i.e. what an action should address.
    """

    text: list[str]
    stored: list[str]
    first_sentence: list[str]
    risk_groups: list[frozenset[str]]

    def as_dicts(self) -> list[list[dict[str, object]]]:
        return [json.loads(text) for text in self.text]


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


@dataclass(frozen=True)
class _Described:
    """Each reason's value and sentence as indices into lists of distinct ones (see ReasonTable), and
    whether its value is a number under NEW_CUSTOMER_DAYS."""

    heads: list[tuple[int, float | str | None]]
    head_of: np.ndarray
    sentences: list[str]
    sentence_of: np.ndarray
    new: np.ndarray


def _describe(bundle: ModelBundle, matrix: np.ndarray, top: np.ndarray, value: np.ndarray) -> _Described:
    """Decode the values of the chosen features and say each reason, once per distinct feature and value
    (for recency once per reason: its sentence also says the customer's usual gap)."""
    names = bundle.feature_names
    n = len(matrix)
    gap = matrix[:, names.index("mean_gap_days")] if "mean_gap_days" in names else np.full(n, np.nan)
    heads: list[tuple[int, float | str | None]] = []
    head_of = np.zeros(top.shape, dtype=np.intp)
    sentences: list[str] = []
    sentence_of = np.zeros(top.shape, dtype=np.intp)
    new = np.zeros(top.shape, dtype=bool)
    prepared = _prepared(bundle)
    for j in np.unique(top).tolist():  # the features among the reasons, in feature order
        at = top == j
        info, speak = bundle.features[j], prepared.speakers[j]
        categories = info.categories
        here = value[at]
        distinct, where = np.unique(here, return_inverse=True)
        decoded: list[float | str | None] = [
            None if v != v else v if categories is None else categories[int(v)] for v in distinct.tolist()
        ]
        head_of[at] = len(heads) + where
        heads += [(j, v) for v in decoded]
        if info.name == "recency_days":
            sentence_of[at] = len(sentences) + np.arange(len(here))
            gaps = gap[np.nonzero(at)[0]].tolist()
            sentences += [speak(decoded[w], g) for w, g in zip(where.tolist(), gaps, strict=True)]
        else:
            sentence_of[at] = len(sentences) + where
            sentences += [speak(v, None) for v in decoded]
        if categories is None:
            new[at] = here < NEW_CUSTOMER_DAYS
    return _Described(heads, head_of, sentences, sentence_of, new)


def _risk_groups(
    infos: list[FeatureInfo], top: np.ndarray, rounded: np.ndarray, new: np.ndarray
) -> list[frozenset[str]]:
    """Per row, the groups of the reasons that raise its risk and an action can answer: an 'onboarding'
    reason only while the customer is new."""
    n, k = top.shape
    groups = sorted({f.group for f in infos})
    onboarding = np.array([f.group == "onboarding" for f in infos])[top]
    addressable = (rounded > 0) & (new | ~onboarding)
    bits = np.array([1 << groups.index(f.group) for f in infos], dtype=np.int64)[top]
    masks = np.bitwise_or.reduce(np.where(addressable, bits, 0), axis=1).tolist() if k else [0] * n
    sets = {m: frozenset(g for b, g in enumerate(groups) if m >> b & 1) for m in set(masks)}
    return [sets[m] for m in masks]


def top_reasons(bundle: ModelBundle, matrix: np.ndarray, contrib: np.ndarray, top_k: int = 5) -> Reasons:
    """The top_k features by absolute contribution for every row (zero contributions left out).

    A reason's value is the customer's (categories by name, numbers to 4 decimals, null when unknown); a
    reason raises risk when its contribution is positive, and counts for the action when it does so to 4
    decimals (an 'onboarding' one only while the customer is new: a value under NEW_CUSTOMER_DAYS)."""
    infos = bundle.features
    values = contrib[:, :-1]
    top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, : min(top_k, len(infos))]
    contribution = np.take_along_axis(values, top, axis=1)  # zero contributions sorted last
    rounded = _round(contribution, 4)
    described = _describe(bundle, matrix, top, _round(np.take_along_axis(matrix, top, axis=1), 4))
    table = ReasonTable(
        features=_prepared(bundle).reason_features,
        heads=described.heads,
        head_of=described.head_of,
        contribution=rounded,
        raises=contribution > 0,
        sentences=described.sentences,
        sentence_of=described.sentence_of,
        kept=(contribution != 0.0).sum(axis=1),
    )
    text, stored = encode_reasons(table)
    said = np.array([*described.sentences, ""], dtype=object)
    first = said[described.sentence_of[:, 0]] if top.shape[1] else np.full(len(top), "", dtype=object)
    firsts = np.where(table.kept > 0, first, "").tolist()
    return Reasons(text, stored, firsts, _risk_groups(infos, top, rounded, described.new))


@dataclass(frozen=True)
class _Prepared:
    """What explaining needs of each feature of a model, the same at every call: its sentence pattern and
    what its reasons share."""

    speakers: list[Speaker]
    reason_features: list[ReasonFeature]


# Prepared once per model (by the identity of its feature list, which a reference here pins); the API
# explains one record at a time, where preparing every feature's pattern cost more than the record.
_PREPARED: dict[int, tuple[list[FeatureInfo], _Prepared]] = {}


def _prepared(bundle: ModelBundle) -> _Prepared:
    features = bundle.features
    cached = _PREPARED.get(id(features))
    if cached is not None and cached[0] is features:
        return cached[1]
    prepared = _Prepared(
        [_speaker(f) for f in features], [ReasonFeature(f.name, f.typical, f.group) for f in features]
    )
    if len(_PREPARED) >= 8:
        _PREPARED.clear()
    _PREPARED[id(features)] = (features, prepared)
    return prepared
