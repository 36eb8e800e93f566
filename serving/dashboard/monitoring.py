"""The monitoring pages: "Segment moves & cohorts" (``/movements``) and "Model health" (``/model-health``),
plus the trend chart of the customer page. Everything is read from the runs batch scoring kept
(:mod:`serving.monitor`); no model work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from serving.api.monitoring import current_health
from serving.dashboard.context import SessionDep, StateDep
from serving.dashboard.render import render

router = APIRouter(include_in_schema=False)
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 480, 200, 48, 28, 10


@dataclass(frozen=True)
class Series:
    """One line of a :func:`line_chart`: values per x position (None: no point)."""

    label: str
    values: Sequence[float | None]
    css: str = "series-a"


def _f(x: float) -> str:
    return f"{x:.1f}"


def line_chart(ident: str, labels: Sequence[str], series: Sequence[Series], title: str, desc: str) -> Markup:
    """Lines over shared x labels, scaled to the largest value; each point has a tooltip. Server-side SVG
    with presentation attributes (the pages' Content-Security-Policy forbids inline styles)."""
    top = max((v for s in series for v in s.values if v is not None), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(labels) - 1, 1)
    parts = [
        f'<svg class="chart chart-lines" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{ident}-title">{escape(title)}</title><desc id="{ident}-desc">{escape(desc)}</desc>'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH}" y1="{_f(y)}" y2="{_f(y)}" stroke="#d0d5dd" stroke-width="1"/>'
            f'<text class="chart-axis" x="{LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{top * fraction:,.2f}</text>'
        )
    for i, label in enumerate(labels):
        if len(labels) <= 8 or i % max(len(labels) // 6, 1) == 0:
            parts.append(
                f'<text class="chart-axis" x="{_f(LEFT + i * step)}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    colours = ("#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490")
    for k, line in enumerate(series):
        colour = colours[k % len(colours)]
        points = [
            (LEFT + i * step, TOP + plot_h * (1 - v / top), v)
            for i, v in enumerate(line.values)
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{_f(x)},{_f(y)}" for x, y, _ in points)
            parts.append(
                f'<polyline class="{line.css}" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y, v), label in zip(
            points, [labels[i] for i, v in enumerate(line.values) if v is not None], strict=True
        ):
            parts.append(
                f'<circle cx="{_f(x)}" cy="{_f(y)}" r="3" fill="{colour}"><title>{escape(line.label)} '
                f"{escape(label)}: {v:,.3f}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def customer_trend(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The customer page's trend: risk and value charts and the segment moves between runs."""
    labels = [str(h["as_of"]) for h in history]
    moves = [
        {"as_of": b["as_of"], "from": a["segment"], "to": b["segment"]}
        for a, b in pairwise(history)
        if a["segment"] != b["segment"]
    ]
    return {
        "runs": history,
        "moves": moves,
        "risk_chart": line_chart(
            "risk-trend",
            labels,
            [Series("Churn probability", [h["churn_probability"] for h in history])],
            "Churn probability at each batch run",
            "The customer's churn probability at each kept scoring run, oldest first.",
        ),
        "value_chart": line_chart(
            "value-trend",
            labels,
            [
                Series("Lifetime value", [h["clv"] for h in history]),
                Series("Value at risk", [h["value_at_risk"] for h in history], "series-b"),
            ],
            "Lifetime value and value at risk at each batch run",
            "The customer's lifetime value (discounted, to the end of the relationship) and value at risk "
            "at each kept scoring run; runs scored before lifetime value existed have no point.",
        ),
    }


def cohort_curves(
    runs: list[dict[str, Any]], most: int = 6
) -> tuple[list[str], list[Series], list[dict[str, Any]]]:
    """Retention by signup quarter: at each run, the share of the quarter's signups still active (scored).
    The newest ``most`` cohorts with at least one run are drawn; the table holds them all."""
    rows = [{"as_of": r["as_of"], **c} for r in runs for c in (r["summary"].get("cohorts") or [])]
    if not rows:
        return [], [], []
    table = pd.DataFrame(rows)
    table["retention"] = table["active"] / table["signed_up"].where(table["signed_up"] > 0)
    labels = [r["as_of"] for r in runs]
    cohorts = sorted(table["cohort"].unique())[-most:]
    series = []
    for cohort in cohorts:
        part = table[table["cohort"] == cohort].set_index("as_of")["retention"]
        series.append(Series(str(cohort), [None if a not in part.index else float(part[a]) for a in labels]))
    latest = table[table["as_of"] == labels[-1]].sort_values("cohort").to_dict("records")
    return labels, series, latest


@router.get("/movements", response_class=HTMLResponse)
def movements(request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Segment moves since the previous run, retention by signup cohort and the loyal share of value."""
    runs = state.store.runs()
    latest = runs[-1] if runs else None
    labels = [r["as_of"] for r in runs]
    loyal = line_chart(
        "loyal-share",
        labels,
        [Series("Loyal share of value", [r["summary"].get("loyal_clv_share") for r in runs])],
        "Share of customer value held by loyal customers",
        "At each batch run, the share of total lifetime value held by customers below the medium-risk "
        "threshold; runs of a model without lifetime value have no point.",
    )
    cohort_labels, cohort_series, cohort_table = cohort_curves(runs)
    loaded = state.models.current
    return render(
        request,
        "movements.html",
        session=session,
        nav="movements",
        model=loaded.info if loaded else None,
        runs=runs,
        latest=latest,
        summary=(latest or {}).get("summary") or {},
        loyal_chart=loyal,
        cohort_chart=line_chart(
            "cohort-retention",
            cohort_labels,
            cohort_series,
            "Retention by signup quarter",
            "At each batch run, the share of each signup quarter's customers still active (scored).",
        ),
        cohort_table=cohort_table,
    )


@router.get("/model-health", response_class=HTMLResponse)
def model_health_page(request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Drift of the latest run per column, realised performance over time against validation, the verdict."""
    health = current_health(state)
    performance = health["performance"]
    labels = [p["as_of"] for p in performance]
    validation = health["validation"]
    loaded = state.models.current
    return render(
        request,
        "model_health.html",
        session=session,
        nav="model-health",
        model=loaded.info if loaded else None,
        health=health,
        drift=health["drift"],
        performance=performance,
        performance_chart=line_chart(
            "realised-performance",
            labels,
            [
                Series("Realised ROC AUC", [p["roc_auc"] for p in performance]),
                Series(
                    "Validation ROC AUC", [validation.get("churn_roc_auc") for _ in performance], "series-b"
                ),
                Series("Realised ECE", [p["ece"] for p in performance], "series-c"),
            ],
            "Realised performance of matured runs",
            "ROC AUC and calibration error each run achieved once its horizon passed, against the "
            "validation ROC AUC the model was promoted with.",
        ),
    )
