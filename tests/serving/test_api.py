"""The HTTP API as a CRM system meets it (in-process TestClient; the real server is in tests/integration)."""

from __future__ import annotations

import re
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


def _dashboard_session(app: object, key: str) -> tuple[TestClient, str]:
    """A client signed in to the dashboard with ``key``, and its CSRF token (as the page's script reads it)."""
    browser = TestClient(app)  # type: ignore[arg-type]
    form = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/sign-in").text)
    assert form is not None
    signed = browser.post(
        "/sign-in", data={"api_key": key, "csrf_token": form.group(1), "next": "/"}, follow_redirects=False
    )
    assert signed.status_code == 303
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', browser.get("/").text)
    assert csrf is not None
    return browser, csrf.group(1)


def test_a_stored_score_reads_the_same_by_key_and_by_dashboard_session(client: TestClient, trained) -> None:
    """A CRM's key takes the route's short way, a dashboard session the general one: same bytes."""
    browser, csrf = _dashboard_session(client.app, trained.api_key)
    rows, _ = SqliteScoreStore(trained.home / "scores.db").query(CustomerQuery(limit=25))
    for row in rows:
        path = f"/v1/customers/{row['customer_id']}"
        by_key = client.get(path)
        by_session = browser.get(path, headers={"X-Churnguard-CSRF": csrf})
        assert by_key.status_code == by_session.status_code == 200
        assert by_key.content == by_session.content
        assert by_key.headers["content-type"] == by_session.headers["content-type"] == "application/json"
        assert by_key.json()["customer_id"] == row["customer_id"]


def test_a_stored_score_read_follows_the_documented_auth_and_id_rules(
    client: TestClient, known_id: str
) -> None:
    path = f"/v1/customers/{known_id}"
    key = client.headers["Authorization"].split(" ", 1)[1]
    assert client.get(path, headers={"Authorization": f"bearer  {key} "}).status_code == 200  # as HTTPBearer
    assert client.get(path, headers={"Authorization": f"Basic {key}"}).status_code == 401
    assert client.get(path, headers={"Authorization": f"Bearer {key}x"}).status_code == 403
    too_long = client.get(f"/v1/customers/{'C' * 201}")
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "path.customer_id"
    assert client.get(f"/v1/customers/{'C' * 200}").status_code == 404
    assert client.get("/v1/customers/C%00").status_code == 404


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
