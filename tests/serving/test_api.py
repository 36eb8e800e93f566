"""The HTTP API as a CRM system meets it (in-process TestClient; the real server is in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import clear_settings_caches


@pytest.fixture(scope="module")
def client(trained) -> Iterator[TestClient]:
    clear_settings_caches()
    with TestClient(create_app()) as test_client:
        test_client.headers["Authorization"] = f"Bearer {trained.api_key}"
        yield test_client


@pytest.fixture(scope="module")
def known_id(trained) -> str:
    rows, _ = SqliteScoreStore(trained.home / "scores.db").query(CustomerQuery(limit=1))
    return str(rows[0]["customer_id"])


def test_every_v1_route_refuses_requests_without_a_valid_key(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]  # every documented route, however routers nest
    v1 = {p: methods for p, methods in paths.items() if p.startswith("/v1")}
    assert len(v1) >= 4
    for route, methods in v1.items():
        path = route.replace("{customer_id}", "C0000001")
        for method in methods:
            no_key = client.request(method, path, headers={"Authorization": ""}, json={})
            assert no_key.status_code == 401, (method, path)
            assert "API key" in no_key.json()["error"]["message"]
            wrong = client.request(method, path, headers={"Authorization": "Bearer cg_nope"}, json={})
            assert wrong.status_code == 403, (method, path)


def test_known_customer_has_score_reasons_and_action(client: TestClient, known_id: str) -> None:
    body = client.get(f"/v1/customers/{known_id}").json()
    assert body["customer_id"] == known_id
    assert 0 <= body["churn_probability"] <= 1 and body["risk_tier"] in {"low", "medium", "high"}
    assert body["reasons"][0]["sentence"] and body["action"]["why"]
    assert body["model"]["name"] == "churnguard" and body["model"]["alias"] == "champion"


def test_unknown_customer_is_a_clear_404(client: TestClient) -> None:
    response = client.get("/v1/customers/nobody")
    assert response.status_code == 404
    assert "nobody" in response.json()["error"]["message"]


def test_batch_lists_missing_ids_and_refuses_oversized_batches(client: TestClient, known_id: str) -> None:
    body = client.post("/v1/customers/score", json={"customer_ids": [known_id, "nobody", known_id]}).json()
    assert [s["customer_id"] for s in body["scores"]] == [known_id] and body["not_found"] == ["nobody"]
    too_many = client.post("/v1/customers/score", json={"customer_ids": [f"c{i}" for i in range(1001)]})
    assert too_many.status_code == 413 and "1000" in too_many.json()["error"]["message"]


def test_score_what_if_reports_missing_features_and_reacts_to_complaints(client: TestClient) -> None:
    calm = {"recency_days": 20, "orders_365d": 10, "unresolved_complaints_90d": 0}
    angry = {**calm, "unresolved_complaints_90d": 4, "unresolved_complaints_365d": 4}
    body = client.post(
        "/v1/score",
        json={
            "records": [
                {"customer_id": "calm", "features": calm},
                {"customer_id": "angry", "features": angry},
            ]
        },
    ).json()
    calm_score, angry_score = body["scores"]
    assert angry_score["churn_probability"] >= calm_score["churn_probability"]
    assert "tenure_days" in calm_score["missing_features"]
    assert "recency_days" not in calm_score["missing_features"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"records": [{"features": {"no_such_feature": 1}}]}, "body.records.0.features.no_such_feature"),
        ({"records": [{"features": {"recency_days": "soon"}}]}, "body.records.0.features.recency_days"),
        ({"records": []}, "body.records"),
        ({"rows": []}, "body.records"),
    ],
)
def test_invalid_score_input_is_a_422_naming_the_field(client: TestClient, payload: dict, field: str) -> None:
    response = client.post("/v1/score", json=payload)
    assert response.status_code == 422
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any(f.startswith(field) for f in fields), fields


def test_nan_infinity_and_broken_json_never_reach_the_model(client: TestClient) -> None:
    for raw in (
        b'{"records": [{"features": {"recency_days": NaN}}]}',
        b'{"records": [{"features": {"recency_days": Infinity}}]}',
        b'{"records": [',
        b"\xff\xfe",
    ):
        response = client.post("/v1/score", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, raw


def test_oversized_body_is_refused_before_parsing(client: TestClient) -> None:
    response = client.post(
        "/v1/score", content=b"x" * 1_100_000, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_model_card_health_ready_metrics(client: TestClient, trained) -> None:
    card = client.get("/v1/model").json()
    assert card["model"]["version"] == trained.version and card["metrics"]["churn_pr_auc"] > 0
    described = {f["name"]: f["description"] for f in card["features"]}
    assert described["recency_days"] == "days since the last purchase"
    open_client = TestClient(client.app)
    assert open_client.get("/health").json() == {"status": "ok"}
    ready = open_client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model_version"] == trained.version
    assert ready["warnings"] == []
    assert open_client.get("/metrics").status_code == 401  # the probability histogram is not public
    metrics = client.get("/metrics").text  # any API key may scrape
    assert "churnguard_requests_total" in metrics and "churnguard_model_version" in metrics


def test_docs_have_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/v1/score" in schema["paths"]
    assert "examples" in str(schema["components"]["schemas"]["ScoreRequest"])
