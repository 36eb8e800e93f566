"""Security properties a reviewer checks: every API route needs a key, every dashboard page a session,
oversized bodies are refused before parsing, logs hold neither keys nor customer data, and bandit finds
nothing of high severity."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import mlflow
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import Trained
from tests.integration.servers import VENV_BIN, Servers, bearer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Open by design: liveness and readiness (no customer data, no paths), the API schema and the sign-in page.
# /metrics needs a key by default; /docs and /redoc are off by default (their assets come from a CDN).
PUBLIC = {"/health", "/ready", "/openapi.json", "/sign-in"}
PUBLIC_MOUNTS = {"/static"}
MAX_BODY = 4096


def routes(app: FastAPI) -> list[tuple[str, list[str]]]:
    """Every (path, methods) the app serves, included routers flattened; mounts have no methods."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI versions that nest routers
    found = []
    for route in walk(app.routes) if walk else app.routes:
        methods = sorted(m for m in (getattr(route, "methods", None) or []) if m != "HEAD")
        found.append((str(getattr(route, "path", "")), methods))
    return found


def concrete(path: str, version: str) -> str:
    """A request path for a route template ({customer_id} -> a real id, {version} -> the model's...)."""
    samples = {"customer_id": "C0000001", "version": version, "name": "roc"}
    return re.sub(r"\{([^}:]+)(?::[^}]+)?\}", lambda m: samples.get(m.group(1), "x"), path)


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [(m, p) for p, methods in routes(app) if p == "/v1" or p.startswith("/v1/") for m in methods]


def page_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Dashboard routes behind the sign-in: everything outside /v1 that is not public."""
    return [
        (m, p)
        for p, methods in routes(app)
        if not (p == "/v1" or p.startswith("/v1/")) and p not in PUBLIC and p not in PUBLIC_MOUNTS
        for m in methods
    ]


def assert_locked(client: httpx.Client | TestClient, app: FastAPI, version: str) -> int:
    """Every API route answers 401 without a key; no dashboard page answers 2xx without a session."""
    api, pages = api_routes(app), page_routes(app)
    assert len(api) >= 4 and len(pages) >= 1
    for method, path in api:
        response = client.request(method, concrete(path, version))
        assert response.status_code == 401, f"{method} {path} answered {response.status_code} without a key"
        assert response.headers.get("www-authenticate") == "Bearer"
    for method, path in pages:
        response = client.request(method, concrete(path, version), follow_redirects=False)
        assert not 200 <= response.status_code < 300, f"{method} {path} answered {response.status_code}"
        if response.is_redirect:
            assert response.headers["location"].startswith("/sign-in"), (method, path)
    return len(api) + len(pages)


@pytest.fixture
def mlflow_uris() -> Iterator[None]:
    """Put back the process-wide MLflow URIs an app's start-up sets."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_every_route_is_locked_in_process(trained: Trained, tmp_path: Path, mlflow_uris: None) -> None:
    app = create_app()
    with TestClient(app) as client:
        checked = assert_locked(client, app, trained.version)
        assert client.get("/sign-in").status_code == 200
        assert client.get("/static/dashboard.css").status_code == 200
    # Also with no model loaded: the missing key is what an anonymous caller hears about, not the model.
    # (an explicit store: mlflow itself exports MLFLOW_TRACKING_URI, which would lead back to the trained one)
    empty = ServingSettings(
        home=tmp_path / "empty", tracking_uri=f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}", poll_seconds=0
    )
    bare = create_app(empty)
    with TestClient(bare) as client:
        assert client.get("/ready").status_code == 503
        assert_locked(client, bare, "1")
    print(f"\nsecurity: {checked} route/method pairs locked (in process)")


def _raw_post_headers_only(port: int, path: str, length: int, key: str) -> bytes:
    """Send only the headers of a POST announcing ``length`` body bytes, and read what comes back."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode())
        return sock.recv(65536)


def _chunks(total: int, size: int = 1500) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        yield b"x" * part  # not JSON at all: a 413 rather than a 422 shows nothing was parsed
        sent += part


def _score_body(features: dict[str, Any], size: int) -> bytes:
    """A valid /v1/score body padded with spaces to exactly ``size`` bytes."""
    body = httpx.Request("POST", "http://x", json={"records": [{"features": features}]}).content
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_real_server_locks_routes_limits_bodies_and_keeps_secrets_out_of_logs(
    trained: Trained, api_home: Path, servers: Servers, mlflow_uris: None
) -> None:
    server = servers.api(api_home, CHURNGUARD_MAX_BODY_BYTES=str(MAX_BODY))
    record = SqliteScoreStore(api_home / "scores.db").query(CustomerQuery(limit=1))[0][0]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert_locked(client, create_app(), trained.version)

        key = bearer(trained.api_key)
        card = client.get("/v1/model", headers=key).json()
        numeric = next(f["name"] for f in card["features"] if f["categories"] is None)
        text = next((f["name"] for f in card["features"] if f["categories"] is not None), None)
        secret_number, secret_text = 7319.4637281, "zqxj-private-label-5521"
        features = {**record["features"], numeric: secret_number}
        if text:
            features[text] = secret_text

        # Oversized: announced by Content-Length, refused from the headers alone (no body sent at all).
        assert _raw_post_headers_only(server.port, "/v1/score", MAX_BODY + 1, trained.api_key).startswith(
            b"HTTP/1.1 413"
        )
        announced = client.post("/v1/score", content=b"x" * (MAX_BODY + 1), headers=key)
        assert announced.status_code == 413 and "request body over" in announced.json()["error"]["message"]
        # At the limit exactly: served.
        at_limit = client.post(
            "/v1/score",
            content=_score_body(features, MAX_BODY),
            headers={**key, "Content-Type": "application/json"},
        )
        assert at_limit.status_code == 200, at_limit.text

        # Requests carrying the key, a wrong key and distinctive feature values.
        assert client.get(f"/v1/customers/{record['customer_id']}", headers=key).status_code == 200
        assert (
            client.post("/v1/score", json={"records": [{"features": features}]}, headers=key).status_code
            == 200
        )
        bad = {"records": [{"features": {numeric: secret_text}}]}
        assert client.post("/v1/score", json=bad, headers=key).status_code == 422
        wrong_key = "cg_0badc0de_" + "Q" * 43
        assert client.get("/v1/model", headers=bearer(wrong_key)).status_code == 403
        signed = client.post("/sign-in", data={"api_key": trained.api_key, "csrf_token": "x"})
        assert signed.status_code in (400, 401, 403)  # the form token is wrong: no session
        assert client.get("/health").status_code == 200

    server.stop()  # flush and close everything the server had to say
    log = server.log()
    assert "POST /v1/score" in log and "GET /v1/customers/" in log, "the server's log was not captured"
    for secret in (
        trained.api_key,
        trained.api_key.split("_", 2)[-1],  # the secret part (cg_<id>_<secret>)
        wrong_key,
        secret_text,
        str(secret_number),
    ):
        assert secret not in log, f"{secret[:12]}... appears in the server log"


def test_real_server_refuses_oversized_chunked_bodies_with_413(
    trained: Trained, api_home: Path, servers: Servers
) -> None:
    """No Content-Length to judge by: the body is counted while it is read, and refused past the limit."""
    server = servers.api(api_home, CHURNGUARD_MAX_BODY_BYTES=str(MAX_BODY))
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(trained.api_key)) as client:
        small = client.post(
            "/v1/customers/score", content=_chunks(200), headers={"Content-Type": "application/json"}
        )
        assert small.status_code == 422  # a small chunked body is read (and found not to be JSON)
        for path in ("/v1/score", "/v1/customers/score"):
            chunked = client.post(
                path, content=_chunks(MAX_BODY + 2000), headers={"Content-Type": "application/json"}
            )
            assert chunked.status_code == 413, f"{path}: {chunked.status_code} {chunked.text}"
            assert "request body over" in chunked.json()["error"]["message"]
        assert client.get("/health").status_code == 200


def test_bandit_finds_no_high_severity_issue() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "bandit"), "-r", "features", "training", "serving", "-lll", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
