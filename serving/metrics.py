"""Prometheus metrics of one app instance (own registry, so several apps in one process never clash)."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every label takes values from a fixed set (see serving.middleware), so the output stays bounded."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "churnguard_requests_total",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "churnguard_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.errors = Counter(
            "churnguard_errors_total",
            "Responses with status >= 400",
            ["route", "status"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "churnguard_model_version", "Version of the model being served", registry=self.registry
        )
        self.scores = Histogram(
            "churnguard_churn_probability",
            "Churn probabilities returned",
            buckets=tuple(i / 10 for i in range(1, 11)),
            registry=self.registry,
        )

        self.auth_failures = Counter(
            "churnguard_auth_failures_total",
            "Failed authentications (401/403) by where they happened: api, metrics, sign_in",
            ["kind"],
            registry=self.registry,
        )
        self.auth_throttled = Counter(
            "churnguard_auth_throttled_total",
            "Requests refused with 429 after repeated failed authentication from the same client",
            registry=self.registry,
        )

        self.drift_psi = Gauge(
            "churnguard_drift_psi",
            "PSI of each column of the latest batch run against the model's reference "
            "(0.1 warn, 0.2 alert); columns: the model's features and outputs, the contract's event columns",
            ["column"],
            registry=self.registry,
        )
        self.drift_status = Gauge(
            "churnguard_drift_status",
            "Drift of the latest batch run: 0 ok, 1 warn, 2 alert",
            registry=self.registry,
        )
        self.retrain = Gauge(
            "churnguard_retrain_advised",
            "1 when drift is at alert or the newest matured run degraded (churnguard monitor exits 3)",
            registry=self.registry,
        )
        self.realised_auc = Gauge(
            "churnguard_realised_roc_auc",
            "ROC AUC the newest matured batch run achieved (NaN before any run matured)",
            registry=self.registry,
        )

    def set_monitoring(self, health: dict[str, Any], allowed: AbstractSet[str]) -> None:
        """Gauges from a :func:`serving.monitor.model_health` report; only ``allowed`` columns get a series,
        and series of columns no longer reported are removed."""
        drift = health.get("drift") or {}
        self.drift_psi.clear()
        for column in drift.get("columns", []):
            if column["name"] in allowed:
                self.drift_psi.labels(column=column["name"]).set(column["psi"])
        self.drift_status.set({"ok": 0, "warn": 1, "alert": 2}.get(drift.get("status", "ok"), 0))
        self.retrain.set(1 if health.get("retrain") else 0)
        performance = health.get("performance") or []
        auc = performance[-1].get("roc_auc") if performance else None
        self.realised_auc.set(float("nan") if auc is None else auc)

    def render(self) -> bytes:
        return generate_latest(self.registry)
