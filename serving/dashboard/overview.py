"""The overview page (``/``) and the evaluation plot images it shows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from serving.dashboard.charts import Bar, bar_chart, histogram
from serving.dashboard.context import SessionDep, StateDep
from serving.dashboard.overview_data import action_labels, cached_summary
from serving.dashboard.plots import PLOTS, PRIMARY, PlotCache
from serving.dashboard.render import money, render
from serving.state import AppState

router = APIRouter(include_in_schema=False)

METRICS = (
    ("churn_roc_auc", "Churn ROC AUC", "{:.3f}"),
    ("churn_ece", "Calibration error (ECE)", "{:.3f}"),
    ("churn_top_decile_lift", "Top-decile lift", "{:.2f}×"),
    ("revenue_spearman", "Revenue forecast rank correlation", "{:.2f}"),
)


def plot_cache(request: Request, state: AppState) -> PlotCache:
    """The app's plot cache under ``<home>/dashboard_cache`` (tests may put their own on app.state)."""
    cache: PlotCache | None = getattr(request.app.state, "dashboard_plots", None)
    if cache is None:
        cache = PlotCache(state.settings.home / "dashboard_cache")
        request.app.state.dashboard_plots = cache
    return cache


def _metrics(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    values = metadata.get("metrics") or {}
    shown = []
    for key, label, fmt in METRICS:
        value = values.get(key)
        if isinstance(value, int | float):
            shown.append((label, fmt.format(value)))
    return shown


def model_warnings(metadata: dict[str, Any]) -> list[str]:
    """Warnings training recorded with the model (e.g. a calibration guard failed, promoted anyway)."""
    warnings = metadata.get("warnings")
    return [str(w) for w in warnings] if isinstance(warnings, list) else []


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Model, date of the scores, value at risk by segment, the probability distribution, the action mix
    and the model's evaluation plots."""
    meta = state.store.meta()
    summary = cached_summary(request.app.state, state, meta)
    loaded = state.models.current
    info = loaded.info if loaded else None
    counts = [0] * 10
    for bucket in summary.get("histogram", []):
        index = int(bucket["bucket"] or 0)
        if 0 <= index < 10:
            counts[index] += int(bucket["customers"])
    segments = summary.get("segments", [])
    labels = action_labels(state)
    actions = [
        {**a, "label": labels.get(str(a["action_name"]), str(a["action_name"]))}
        for a in summary.get("actions", [])
    ]
    thresholds = loaded.bundle.thresholds if loaded else {}
    plots = plot_cache(request, state).status(info)
    scores_model = (meta.get("model") or {}).get("version")
    return render(
        request,
        "overview.html",
        session=session,
        nav="overview",
        model=info,
        model_error=state.models.last_error,
        model_warnings=model_warnings(loaded.bundle.metadata) if loaded else [],
        meta=meta,
        summary=summary,
        value_terms=summary["value_terms"],
        segments=segments,
        actions=actions,
        counts=counts,
        thresholds=thresholds,
        metrics=_metrics(loaded.bundle.metadata) if loaded else [],
        stale_scores=bool(info and scores_model and str(scores_model) != info.version),
        plots=plots,
        plot_titles=PLOTS,
        primary_plots=[p for p in PRIMARY if p in plots.available],
        other_plots=[p for p in plots.available if p not in PRIMARY],
        segment_chart=bar_chart(
            "segments-chart",
            [
                Bar(str(s["segment"]), float(s["value_at_risk"] or 0), money(s["value_at_risk"]))
                for s in segments
            ],
            "Value at risk by value segment",
            "Total value at risk (churn probability times the lifetime value if retained) of each value "
            "segment's customers.",
        ),
        histogram_chart=histogram(
            "histogram-chart",
            counts,
            thresholds,
            "Customers by churn probability",
            "Number of customers in each tenth of churn probability, coloured by risk tier.",
        ),
        action_chart=bar_chart(
            "actions-chart",
            [
                Bar(
                    a["label"],
                    float(a["customers"]),
                    f"{a['customers']:,} customer{'' if a['customers'] == 1 else 's'}",
                )
                for a in actions
            ],
            "Recommended actions",
            "Number of customers for whom each retention action is recommended.",
            css="bar bar-alt",
        ),
    )


@router.get("/plots/{version}/{name}.png")
def plot_image(version: str, name: str, request: Request, session: SessionDep, state: StateDep) -> Response:
    """A cached evaluation plot (404 when it is not cached: the overview fetches them)."""
    path = plot_cache(request, state).path(version, name)
    if path is None:
        return Response("no such plot", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
