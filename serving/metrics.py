"""Prometheus metrics of one app instance (own registry, so several apps in one process never clash)."""

from __future__ import annotations

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
