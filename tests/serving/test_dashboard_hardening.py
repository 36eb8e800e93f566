"""The dashboard against issue #18: sign-out ends the session on the server (a replayed cookie is dead),
Secure cookies on https, hostile customer ids stay inside /customers/, the value segment is not the data's
segment, the customer's own attributes are shown, and model warnings are prominent."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from serving.app import create_app
from serving.dashboard.session import COOKIE, ENDED_FILE, EndedSessions
from serving.settings import ServingSettings
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import Trained

HOSTILE_IDS = ("a/b", "../x", "..", "=1+1", "<b>id</b>", "50% off?#top")


def sign_in(client: TestClient, key: str) -> str:
    """Sign in afresh; returns the session's CSRF token."""
    client.cookies.clear()
    form = client.get("/sign-in").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token
    response = client.post(
        "/sign-in", data={"api_key": key, "csrf_token": token.group(1)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
    assert csrf
    return csrf.group(1)


@pytest.fixture(scope="module")
def hostile_store(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A serving store whose customers have the ids CRMs really have, copied from real scores."""
    rows, _ = SqliteScoreStore(trained.home / "scores.db").query(CustomerQuery(limit=len(HOSTILE_IDS) + 1))
    real = SqliteScoreStore(trained.home / "scores.db")
    frame = pd.DataFrame(
        [{**row, "customer_id": new, "history": None} for row, new in zip(rows, HOSTILE_IDS, strict=False)]
    )
    frame.loc[len(frame)] = {**rows[-1], "customer_id": "no-inputs", "features": None, "history": None}
    path = tmp_path_factory.mktemp("hostile") / "scores.db"
    SqliteScoreStore(path).replace_all(frame, real.meta())
    return path


@pytest.fixture(scope="module")
def hostile(trained: Trained, hostile_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServingSettings(store_path=hostile_store))) as client:
        client.headers["Authorization"] = f"Bearer {trained.api_key}"
        yield client


# -- 2: sign-out ends the session on the server ------------------------------------------------------------
def test_a_replayed_cookie_is_dead_after_sign_out(trained: Trained) -> None:
    body = {"records": [{"customer_id": "x", "features": {"recency_days": 40}}]}
    with TestClient(create_app()) as browser:
        csrf = sign_in(browser, trained.api_key)
        stolen = browser.cookies[COOKIE]
        assert browser.post("/v1/score", json=body, headers={"X-Churnguard-CSRF": csrf}).status_code == 200
        out = browser.post("/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
        assert out.status_code == 303

        attacker = TestClient(browser.app, cookies={COOKIE: stolen})
        for path in ("/", "/customers", "/customers.csv"):
            replay = attacker.get(path, follow_redirects=False)
            assert replay.status_code == 303 and "reason=ended" in replay.headers["location"], path
        assert attacker.post("/v1/score", json=body, headers={"X-Churnguard-CSRF": csrf}).status_code == 401

        still_in = TestClient(browser.app)  # another session of the same key is not affected
        sign_in(still_in, trained.api_key)
        assert still_in.get("/", follow_redirects=False).status_code == 200

    ended = trained.home / ENDED_FILE
    assert stat.S_IMODE(ended.stat().st_mode) == 0o600
    with TestClient(create_app(), cookies={COOKIE: stolen}) as restarted:  # a restart forgets nothing
        assert restarted.get("/", follow_redirects=False).status_code == 303


def test_ended_sessions_are_shared_and_pruned(tmp_path: Path) -> None:
    one, other = EndedSessions(tmp_path / "ended"), EndedSessions(tmp_path / "ended")
    one.end("nonce-a", expires=2_000_000_000)
    assert other.is_ended("nonce-a") and not other.is_ended("nonce-b")  # another worker process sees it
    for i in range(300):
        other.end(f"old-{i}", expires=1_000, now=5_000)  # long expired: dropped at the next rewrite
    lines = (tmp_path / "ended").read_text().splitlines()
    assert len(lines) < 150 and one.is_ended("nonce-a")


def test_get_sign_out_is_a_page_not_raw_json(trained: Trained) -> None:
    with TestClient(create_app()) as browser:
        assert browser.get("/sign-out", follow_redirects=False).headers["location"] == "/sign-in"
        sign_in(browser, trained.api_key)
        page = browser.get("/sign-out")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'action="/sign-out"' in page.text and "Sign out?" in page.text
        assert browser.get("/", follow_redirects=False).status_code == 200  # a GET changes nothing


# -- 7: Secure cookies on https, directly or behind a trusted proxy ------------------------------------------
def test_cookie_is_secure_on_https_and_behind_a_trusted_proxy(trained: Trained) -> None:
    def form_cookie(client: TestClient, headers: dict[str, str] | None = None) -> str:
        """The sign-in form's cookie: set with the same Secure rule as the session cookie."""
        client.cookies.clear()
        return str(client.get("/sign-in", headers=headers).headers["set-cookie"])

    app = create_app()
    with TestClient(app, base_url="https://testserver") as direct:
        assert "Secure" in form_cookie(direct)
        sign_in(direct, trained.api_key)
        session = next(c for c in direct.cookies.jar if c.name == COOKIE)
        assert session.secure
    with TestClient(app) as plain:
        assert "Secure" not in form_cookie(plain)
    # What `churnguard serve` runs: uvicorn's proxy-headers middleware, trusting the proxy's address.
    proxied = ProxyHeadersMiddleware(app, trusted_hosts="testclient")
    with TestClient(proxied) as behind:  # type: ignore[arg-type]
        assert "Secure" in form_cookie(behind, {"X-Forwarded-Proto": "https"})
        assert "Secure" not in form_cookie(behind)
    untrusted = ProxyHeadersMiddleware(app, trusted_hosts="192.0.2.1")
    with TestClient(untrusted) as spoofed:  # type: ignore[arg-type]
        assert "Secure" not in form_cookie(spoofed, {"X-Forwarded-Proto": "https"})


# -- 10: ids as CRMs have them --------------------------------------------------------------------------------
def test_api_reaches_ids_with_slashes(hostile: TestClient) -> None:
    for customer_id in ("a/b", "../x"):
        path = "/v1/customers/" + customer_id.replace("../", "..%2F")
        response = hostile.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["customer_id"] == customer_id
    assert hostile.get("/v1/customers/a/b/c").status_code == 404


def test_dashboard_links_keep_hostile_ids_inside_customers(hostile: TestClient, trained: Trained) -> None:
    sign_in(hostile, trained.api_key)
    listing = hostile.get("/customers?sort=customer_id&order=asc").text
    links = re.findall(r'<th scope="row"><a href="([^"]+)">', listing)
    assert "/customers/..%2Fx" in links and "/customers/a%2Fb" in links and "/customers/%2E%2E" in links
    assert "<b>id</b>" not in listing
    for link in links:
        assert link.startswith("/customers/") and "/" not in link[len("/customers/") :], link
        page = hostile.get(link.replace("&amp;", "&"))
        assert page.status_code == 200, link
    assert "/customers/%3Cb%3Eid%3C%2Fb%3E" in links and "/customers/50%25%20off%3F%23top" in links


# -- 12: value segment and the customer's own attributes ----------------------------------------------------
def test_value_segment_and_customer_attributes(hostile: TestClient, trained: Trained) -> None:
    sign_in(hostile, trained.api_key)
    listing = hostile.get("/customers").text
    assert "Value segment" in listing and ">Segment<" not in listing
    assert "Value at risk by value segment" in hostile.get("/").text
    assert hostile.get("/customers.csv").text.startswith("customer_id,churn_probability,risk_tier,clv,")
    assert "value_segment" in hostile.get("/customers.csv").text.splitlines()[0]

    loaded = hostile.app.state.churnguard.models.current  # type: ignore[attr-defined]
    profile = [f.name for f in loaded.bundle.features if f.group == "profile"]
    page = hostile.get("/customers/a%2Fb").text
    assert "Customer attributes" in page and "Value segment" in page
    if profile:
        section = page.split('id="attributes"')[1].split("</section>")[0]
        assert all(f"<dt>{name}</dt>" in section for name in profile)
    bare = hostile.get("/customers/no-inputs").text
    assert "None stored with this score" in bare


def test_overview_shows_model_warnings_prominently(trained: Trained) -> None:
    with TestClient(create_app()) as browser:
        sign_in(browser, trained.api_key)
        assert 'id="model-warnings"' not in browser.get("/").text
        loaded = browser.app.state.churnguard.models.current  # type: ignore[attr-defined]
        loaded.bundle.metadata["warnings"] = ["calibration: ECE <0.12> above the guard"]
        page = browser.get("/").text
        assert 'id="model-warnings"' in page and 'role="alert"' in page
        assert "calibration: ECE &lt;0.12&gt; above the guard" in page
