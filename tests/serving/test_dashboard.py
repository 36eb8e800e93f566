"""Dashboard through the ASGI app (TestClient): sign-in and sessions, CSRF on /v1, every page's content,
filters, CSV export, and that no query string or form produces a 500."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from features.bundle import ModelInfo
from serving.actions import decide_actions, load_playbook
from serving.app import create_app
from serving.dashboard.customers import CSV_COLUMNS, csv_row
from serving.dashboard.plots import PlotCache
from serving.dashboard.session import COOKIE, SessionSigner
from serving.keys import KeyStore
from serving.scoring import GRACEFUL_EXIT
from serving.settings import ServingSettings
from serving.store import CustomerQuery, SqliteScoreStore

PAGES = [
    "/",
    "/customers",
    "/customers?risk_tier=high",
    "/customers.csv",
    "/customers/C0000001",
    "/plots/1/roc.png",
]


@pytest.fixture(scope="module")
def client(trained: Any) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def anon(client: TestClient) -> TestClient:
    client.cookies.clear()
    return client


@pytest.fixture
def store(trained: Any) -> SqliteScoreStore:
    return SqliteScoreStore(trained.home / "scores.db")


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the form carries no hidden token"
    return match.group(1)


def sign_in(client: TestClient, key: str, next_url: str = "/") -> Any:
    token = form_token(client.get("/sign-in").text)
    return client.post(
        "/sign-in", data={"api_key": key, "csrf_token": token, "next": next_url}, follow_redirects=False
    )


@pytest.fixture
def signed_in(anon: TestClient, trained: Any) -> tuple[TestClient, str]:
    """A client with a session, and the session's CSRF token (read from the page, as the JS does)."""
    assert sign_in(anon, trained.api_key).status_code == 303
    page = anon.get("/")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match
    return anon, match.group(1)


def set_session(client: TestClient, token: str) -> None:
    client.cookies.delete(COOKIE)
    client.cookies.set(COOKIE, token, domain="testserver.local", path="/")


def ids_on_page(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/customers/([^"]+)">', html)


# -- sign-in, sessions, sign-out ----------------------------------------------------------------------
def test_every_page_redirects_to_sign_in_without_a_session(anon: TestClient) -> None:
    for path in PAGES:
        response = anon.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/sign-in?next=/"), path
    assert anon.get("/customers?segment=x", follow_redirects=False).headers["location"] == (
        "/sign-in?next=/customers%3Fsegment%3Dx"
    )


def test_sign_in_page_and_static_assets_are_public(anon: TestClient) -> None:
    page = anon.get("/sign-in")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text and '<main id="main"' in page.text
    assert '<label for="api_key">API key</label>' in page.text and 'id="api_key"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    for asset in ("/static/dashboard.css", "/static/whatif.js", "/static/favicon.svg"):
        assert anon.get(asset).status_code == 200, asset


def test_a_wrong_key_shows_a_message_and_no_session(anon: TestClient) -> None:
    response = sign_in(anon, "cg_deadbeef_not-a-real-key")
    assert response.status_code == 401
    assert "That API key is not valid" in response.text and 'role="alert"' in response.text
    assert COOKIE not in response.headers.get("set-cookie", "")
    assert "Enter your API key" in sign_in(anon, "  ").text
    stale = anon.post("/sign-in", data={"api_key": "x", "csrf_token": "forged"}, follow_redirects=False)
    assert stale.status_code == 400 and "expired" in stale.text
    anon.cookies.clear()
    no_cookie = anon.post("/sign-in", data={"api_key": "x", "csrf_token": "x"}, follow_redirects=False)
    assert no_cookie.status_code == 400
    broken = anon.post(
        "/sign-in", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert broken.status_code == 400 and "Sign in" in broken.text


def test_sign_in_sets_a_hardened_cookie_that_holds_no_key(anon: TestClient, trained: Any) -> None:
    response = sign_in(anon, trained.api_key, next_url="/customers?risk_tier=high")
    assert response.status_code == 303
    assert response.headers["location"] == "/customers?risk_tier=high"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age=28800" in cookie and "Secure" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    key_id, secret_part = trained.api_key[3:11], trained.api_key[12:]
    assert trained.api_key not in value and secret_part[:12] not in value
    assert value.split(":")[0] == key_id  # the key id, nothing more
    secret = trained.home / "session_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert anon.get("/customers", follow_redirects=False).status_code == 200
    assert anon.get("/sign-in?next=/customers", follow_redirects=False).headers["location"] == "/customers"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x", "/sign-out"]
)
def test_sign_in_only_returns_to_local_pages(anon: TestClient, trained: Any, target: str) -> None:
    assert sign_in(anon, trained.api_key, next_url=target).headers["location"] == "/"


def test_cookie_is_secure_and_short_when_configured(trained: Any) -> None:
    settings = ServingSettings(cookie_secure=True, session_hours=1.5)
    with TestClient(create_app(settings=settings), base_url="https://testserver") as secure:
        page = secure.get("/sign-in")
        assert "Secure" in page.headers["set-cookie"]
        response = sign_in(secure, trained.api_key)
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
        assert "Secure" in cookie and "Max-Age=5400" in cookie


def test_forged_expired_and_revoked_sessions_end(anon: TestClient, trained: Any) -> None:
    keys = KeyStore(trained.home / "api_keys.json")
    record, key = keys.create("revoke-me")
    assert sign_in(anon, key).status_code == 303
    token = anon.cookies[COOKIE]
    assert anon.get("/", follow_redirects=False).status_code == 200
    set_session(anon, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert "reason=ended" in anon.get("/", follow_redirects=False).headers["location"]
    set_session(anon, SessionSigner(trained.home).issue(record, -5))
    assert anon.get("/", follow_redirects=False).status_code == 303
    set_session(anon, token)
    assert anon.get("/", follow_redirects=False).status_code == 200
    keys.revoke(record.key_id)
    response = anon.get("/", follow_redirects=False)
    assert response.status_code == 303 and "reason=ended" in response.headers["location"]
    assert "session has ended" in anon.get(response.headers["location"]).text


def test_session_authorises_v1_only_with_the_csrf_header(
    signed_in: tuple[TestClient, str], store: Any
) -> None:
    client, csrf = signed_in
    body = {"records": [{"customer_id": "x", "features": {"recency_days": 40}}]}
    customer = store.query(CustomerQuery(limit=1))[0][0]["customer_id"]
    assert client.post("/v1/score", json=body).status_code == 401
    assert client.post("/v1/score", json=body, headers={"X-Churnguard-CSRF": csrf + "x"}).status_code == 401
    assert client.get(f"/v1/customers/{customer}").status_code == 401
    scored = client.post("/v1/score", json=body, headers={"X-Churnguard-CSRF": csrf})
    assert scored.status_code == 200 and 0 <= scored.json()["scores"][0]["churn_probability"] <= 1
    assert client.get(f"/v1/customers/{customer}", headers={"X-Churnguard-CSRF": csrf}).status_code == 200
    client.cookies.clear()
    assert client.post("/v1/score", json=body, headers={"X-Churnguard-CSRF": csrf}).status_code == 401


def test_sign_out_needs_the_token_and_clears_the_session(signed_in: tuple[TestClient, str]) -> None:
    client, csrf = signed_in
    refused = client.post("/sign-out", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403 and "Sign-out not confirmed" in refused.text
    assert client.get("/", follow_redirects=False).status_code == 200
    response = client.post("/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/sign-in?signed_out=1"
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert COOKIE not in client.cookies
    assert client.get("/", follow_redirects=False).status_code == 303
    assert "You are signed out" in client.get("/sign-in?signed_out=1").text


def test_signer_secret_and_malformed_tokens(tmp_path: Path) -> None:
    signer = SessionSigner(tmp_path)
    keys = KeyStore(tmp_path / "keys.json")
    record, _ = keys.create("t")
    token = signer.issue(record, 60)
    assert stat.S_IMODE((tmp_path / "session_secret").stat().st_mode) == 0o600
    assert SessionSigner(tmp_path).verify(token, keys) is not None  # same secret on the next start
    for bad in ("", "a:b", "x" * 400, token + "é", token.replace(record.key_id, "ffffffff"), "é:1:2:3"):
        assert signer.verify(bad, keys) is None
    assert signer.verify(token, keys, now=10**12) is None


# -- pages --------------------------------------------------------------------------------------------
def test_overview_shows_model_scores_segments_distribution_actions_and_plots(
    signed_in: tuple[TestClient, str], trained: Any, store: Any
) -> None:
    client, _ = signed_in
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert f"v{trained.version}" in text and "champion" in text and "trained " in text
    meta = store.meta()
    assert meta["as_of"] and "Scores as of" in text
    for segment in store.summary()["segments"]:
        assert f">{segment['segment']}</a>" in text
    assert text.count("<svg") >= 3 and 'aria-labelledby="histogram-chart-title' in text
    labels = {a.name: a.label for a in client.app.state.churnguard.playbook.actions}  # type: ignore[attr-defined]
    for action in store.summary()["actions"]:
        assert str(escape(labels.get(action["action_name"], "No action"))) in text
    plot = re.search(rf'src="(/plots/{trained.version}/reliability\.png)"', text)
    assert plot and f"/plots/{trained.version}/cumulative_gains.png" in text
    image = client.get(plot.group(1))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert (trained.home / "dashboard_cache" / trained.version / "cumulative_gains.png").is_file()
    assert client.get(f"/plots/{trained.version}/secrets.png").status_code == 404
    assert client.get("/plots/..%2F..%2Fapi_keys/roc.png").status_code == 404


def test_overview_notes_an_unreachable_registry(signed_in: tuple[TestClient, str], tmp_path: Path) -> None:
    client, _ = signed_in

    def unreachable(name: str, version: str, destination: Path) -> None:
        raise ConnectionError("connection refused")

    app_state = client.app.state  # type: ignore[attr-defined]
    saved = app_state.dashboard_plots
    app_state.dashboard_plots = PlotCache(tmp_path, fetch=unreachable, wait_seconds=5)
    try:
        page = client.get("/")
    finally:
        app_state.dashboard_plots = saved
    assert page.status_code == 200
    assert "the model registry could not be reached" in page.text and "/plots/" not in page.text


def test_a_plot_logged_under_its_old_name_still_shows(
    signed_in: tuple[TestClient, str], trained: Any, tmp_path: Path
) -> None:
    """Runs trained before clv meant lifetime value logged the revenue forecast's plot as clv_deciles.png,
    and the dashboard cached it under that name: it still shows, as the revenue forecast's plot."""
    client, _ = signed_in
    png = b"\x89PNG\r\n\x1a\n an old run's plot"

    def old_run(name: str, version: str, destination: Path) -> None:
        (destination / "plots").mkdir()
        for plot in ("reliability", "clv_deciles"):
            (destination / "plots" / f"{plot}.png").write_bytes(png)

    app_state = client.app.state  # type: ignore[attr-defined]
    saved = getattr(app_state, "dashboard_plots", None)
    app_state.dashboard_plots = PlotCache(tmp_path / "fetched", fetch=old_run, wait_seconds=5)
    try:
        page = client.get("/")
        image = client.get(f"/plots/{trained.version}/revenue_deciles.png")
    finally:
        app_state.dashboard_plots = saved
    assert f'src="/plots/{trained.version}/revenue_deciles.png"' in page.text
    assert image.status_code == 200 and image.content == png

    def never(name: str, version: str, destination: Path) -> None:
        raise AssertionError("a cached version is not fetched again")

    cached = tmp_path / "cached"
    (cached / "7").mkdir(parents=True)
    (cached / "7" / "clv_deciles.png").write_bytes(png)
    info = ModelInfo("churnguard", "7", "champion", "2025-01-01", 90, "models:/churnguard@champion")
    plots = PlotCache(cached, fetch=never)
    assert plots.status(info).available == ("revenue_deciles",)
    assert plots.path("7", "revenue_deciles") == cached / "7" / "clv_deciles.png"


def test_customer_list_filters_sorts_and_pages(signed_in: tuple[TestClient, str], store: Any) -> None:
    client, _ = signed_in
    first = client.get("/customers")
    expected, total = store.query(CustomerQuery(limit=50))
    assert ids_on_page(first.text) == [r["customer_id"] for r in expected]
    assert f'data-total="{total}"' in first.text and 'aria-sort="descending"' in first.text
    second = client.get("/customers?page=2")
    assert ids_on_page(second.text) == [
        r["customer_id"] for r in store.query(CustomerQuery(limit=50, offset=50))[0]
    ]
    row = expected[0]
    query = {
        "segment": row["segment"],
        "risk_tier": row["risk_tier"],
        "action": row["action_name"],
        "min_clv": "10",
    }
    filtered = client.get("/customers?" + urlencode({**query, "sort": "clv", "order": "asc"}))
    rows, count = store.query(
        CustomerQuery(
            segment=row["segment"],
            risk_tier=row["risk_tier"],
            action=row["action_name"],
            min_clv=10,
            sort="clv",
            descending=False,
        )
    )
    assert count > 0 and ids_on_page(filtered.text) == [r["customer_id"] for r in rows]
    assert f'data-total="{count}"' in filtered.text and 'aria-sort="ascending"' in filtered.text
    assert "/customers.csv?" in filtered.text and "min_clv=10" in filtered.text
    search = client.get("/customers?search=" + row["customer_id"][-4:])
    assert row["customer_id"] in ids_on_page(search.text)
    last = client.get("/customers?page=999")
    assert "Page" in last.text and ids_on_page(last.text)  # clamped to the last page


@pytest.mark.parametrize(
    "query",
    [
        "page=abc",
        "page=0",
        "page=-3",
        "page=99999999999999999999",
        "min_clv=abc",
        "min_clv=nan",
        "min_clv=1e999",
        "min_clv=-inf",
        "sort=churn_probability;DROP TABLE scores",
        "order=sideways",
        "risk_tier=HIGH",
        "segment=%3Cscript%3Ealert(1)%3C/script%3E",
        "action=%00%ff",
        "search=" + "%25_" * 300,
        "search=%E2%9C%93%F0%9F%98%80&risk_tier=low&risk_tier=high",
    ],
)
def test_bad_query_strings_never_fail(signed_in: tuple[TestClient, str], query: str) -> None:
    client, _ = signed_in
    page = client.get("/customers?" + query)
    assert page.status_code == 200, page.text[:500]
    assert "<script>alert" not in page.text
    export = client.get("/customers.csv?" + query)
    assert export.status_code == 200 and export.text.startswith("customer_id,")


def test_invalid_values_are_ignored_with_a_note(signed_in: tuple[TestClient, str], store: Any) -> None:
    client, _ = signed_in
    page = client.get("/customers?min_clv=lots&risk_tier=extreme&page=x")
    assert "Ignored the minimum lifetime value" in page.text and "Ignored an unknown risk tier" in page.text
    assert f'data-total="{store.query(CustomerQuery())[1]}"' in page.text


def test_csv_export_streams_exactly_the_filtered_rows(signed_in: tuple[TestClient, str], store: Any) -> None:
    client, _ = signed_in
    response = client.get("/customers.csv?risk_tier=high&min_clv=50&sort=clv&order=asc")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="churnguard-customers-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    expected = list(
        store.iter_query(CustomerQuery(risk_tier="high", min_clv=50, sort="clv", descending=False))
    )
    assert len(rows) == len(expected) > 0
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["customer_id"] for r in rows] == [r["customer_id"] for r in expected]
    for got, want in zip(rows[:20], expected[:20], strict=True):
        assert got["risk_tier"] == "high" and float(got["clv"]) >= 50
        assert float(got["churn_probability"]) == pytest.approx(want["churn_probability"])
        assert got["action"] == want["action_name"]
        raising = [r["sentence"] for r in want["reasons"] if r["contribution"] > 0]
        assert got["top_reason"] == (raising[0] if raising else "")
    everyone = list(csv.DictReader(io.StringIO(client.get("/customers.csv").text)))
    assert len(everyone) == store.query(CustomerQuery())[1]


def test_csv_cells_cannot_start_a_formula() -> None:
    row = {
        "customer_id": "=HYPERLINK(1)",
        "churn_probability": 0.5,
        "risk_tier": "high",
        "clv": -1.0,
        "value_at_risk": 1.0,
        "segment": "+x",
        "action_name": "@a",
        "expected_net_value": -3.5,
        "reasons": [{"contribution": 1.0, "sentence": "-bad"}],
    }
    assert csv_row(row) == ["'=HYPERLINK(1)", 0.5, "high", -1.0, 1.0, "'+x", "'@a", -3.5, "'-bad", "", None]


def test_customer_page_shows_figures_action_reasons_history_and_what_if(
    signed_in: tuple[TestClient, str], store: Any
) -> None:
    client, _ = signed_in
    row = store.query(CustomerQuery(limit=1))[0][0]
    page = client.get(f"/customers/{row['customer_id']}")
    assert page.status_code == 200
    text = page.text
    assert row["customer_id"] in text and row["action"]["label"] in text
    assert str(escape(row["action"]["why"])) in text
    assert "right raise the risk" in text and "log-odds" in text and 'id="reasons-chart-title"' in text
    for reason in row["reasons"]:
        assert str(escape(reason["sentence"])) in text
    assert "Recent purchases" in text and "Recent interactions" in text
    fields = re.findall(r'data-feature="([^"]+)"', text)
    assert set(fields) == set(
        row["features"]
    )  # every model input is sent, so unchanged values score the same
    for name in fields:
        assert f'<label for="wf-{name}">' in text
    assert '<script src="/static/whatif.js" defer></script>' in text


def test_unknown_customer_is_a_friendly_404(signed_in: tuple[TestClient, str]) -> None:
    client, _ = signed_in
    for path in (
        "/customers/NOPE",
        "/customers/" + "x" * 500,
        "/customers/%3Cb%3Ehi%3C%2Fb%3E",
        "/customers/a/b",
    ):
        page = client.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert "Customer not found" in page.text and "<b>hi" not in page.text


class _SpyStore:
    """Records how the pages use the store (they must page; only the export may stream)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.limits: list[int] = []
        self.streamed = 0

    def query(self, q: CustomerQuery) -> Any:
        self.limits.append(q.limit)
        return self.real.query(q)

    def iter_query(self, q: CustomerQuery) -> Any:
        self.streamed += 1
        return self.real.iter_query(q)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_pages_read_one_page_and_export_streams(signed_in: tuple[TestClient, str]) -> None:
    client, _ = signed_in
    state = client.app.state.churnguard  # type: ignore[attr-defined]
    spy = _SpyStore(state.store)
    state.store = spy
    try:
        client.get("/customers?page=3")
        client.get("/")
        assert spy.limits and all(0 < limit <= 50 for limit in spy.limits) and spy.streamed == 0
        client.get("/customers.csv")
        assert spy.streamed == 1
    finally:
        state.store = spy.real


def test_pages_work_without_scores_or_model(trained: Any, tmp_path: Path) -> None:
    settings = ServingSettings(store_path=tmp_path / "empty.db", model_uri=str(tmp_path / "no-model"))
    with TestClient(create_app(settings=settings)) as empty:
        assert sign_in(empty, trained.api_key).status_code == 303
        overview = empty.get("/")
        assert (
            overview.status_code == 200
            and "No model is loaded" in overview.text
            and "No scores yet" in overview.text
        )
        listing = empty.get("/customers?risk_tier=high")
        assert listing.status_code == 200 and "No customers match" in listing.text
        assert empty.get("/customers.csv").text.strip() == ",".join(CSV_COLUMNS)
        assert empty.get("/customers/C0000001").status_code == 404


# -- lifetime value: what every value shown is -------------------------------------------------------------
def section(html: str, ident: str) -> str:
    """The markup of the element with id ``ident`` up to the end of its section."""
    return html.split(f'id="{ident}"', 1)[1].split("</section>", 1)[0]


@contextmanager
def serving_store(client: TestClient, store: SqliteScoreStore) -> Iterator[None]:
    """The app serves ``store`` for a while (the model stays)."""
    state = client.app.state.churnguard  # type: ignore[attr-defined]
    saved = state.store
    state.store = store
    try:
        yield
    finally:
        state.store = saved


@pytest.fixture(scope="module")
def contribution_store(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> SqliteScoreStore:
    """Real scores restated on a contribution basis at 12% a year (what an economics config gives); the
    last customer costs more than they bring: a graceful exit, decided by the real action rules."""
    real = SqliteScoreStore(trained.home / "scores.db")
    rows, _ = real.query(CustomerQuery(limit=12))
    for row in rows:
        row["clv_detail"] = {**row["clv_detail"], "basis": "contribution", "annual_discount_rate": 0.12}
        row["value_basis"] = "contribution"
    leaving = rows[-1]
    leaving["clv_detail"] = {**leaving["clv_detail"], "residual_value": -37.5, "value_1y": -9.25}
    decision = decide_actions(
        load_playbook(),
        np.array([leaving["churn_probability"]]),
        np.array([0.0]),
        [{"engagement"}],
        basis="contribution",
        lifetime=np.array([-37.5]),
    )
    action = decision.as_dicts()[0]
    leaving.update(
        clv=-37.5,
        value_1y=-9.25,
        value_at_risk=0.0,
        segment=GRACEFUL_EXIT,
        action=action,
        action_name=action["name"],
        expected_net_value=action["expected_net_value"],
    )
    path = tmp_path_factory.mktemp("contribution") / "scores.db"
    SqliteScoreStore(path).replace_all(pd.DataFrame(rows), real.meta())
    return SqliteScoreStore(path)


VALUE_COLUMNS = ("expected_revenue_90d", "value_1y", "p_alive", "value_basis", "clv_detail", "referral_value")


def write_old_store(source: Path, path: Path, customers: int = 12) -> Path:
    """A copy of ``customers`` scores as a store written before lifetime value existed: no value columns,
    and its ``clv`` the spend forecast over the horizon (what ``clv`` meant then)."""
    real = SqliteScoreStore(source)
    frame = pd.DataFrame(real.query(CustomerQuery(limit=customers))[0])
    frame["clv"] = frame["expected_revenue_90d"]
    frame["value_at_risk"] = (frame["churn_probability"] * frame["clv"]).round(2)
    SqliteScoreStore(path).replace_all(frame, real.meta())
    with sqlite3.connect(path) as con:
        present = {r[1] for r in con.execute("PRAGMA table_info(scores)")}
        for column in VALUE_COLUMNS:
            if column in present:
                con.execute(f"ALTER TABLE scores DROP COLUMN {column}")
    return path


@pytest.fixture(scope="module")
def old_store(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> SqliteScoreStore:
    path = tmp_path_factory.mktemp("old") / "scores.db"
    return SqliteScoreStore(write_old_store(trained.home / "scores.db", path))


def test_customer_page_says_what_the_lifetime_value_is(signed_in: tuple[TestClient, str], store: Any) -> None:
    client, _ = signed_in
    row = store.query(CustomerQuery(limit=1))[0][0]
    detail = row["clv_detail"]
    assert detail["basis"] == "revenue"  # the session's model has no economics config
    text = client.get(f"/customers/{row['customer_id']}").text
    block = section(text, "lifetime-value")
    assert "<h2" in block and "Lifetime value" in block
    rate = detail["annual_discount_rate"] * 100
    terms = (
        "discounted, to the end of the relationship · revenue basis: no economics config · "
        f"annual discount rate {rate:g}%"
    )
    assert terms in block
    residual, year = detail["residual_value"], detail["value_1y"]
    for label, shown in (
        ("Residual value (to the end of the relationship)", f"{residual:,.2f}"),
        ("Value next year (next 365 days, discounted)", f"{year:,.2f}"),
        (
            "Value beyond one year",
            f"{residual - year:,.2f} ({(residual - year) / residual * 100:.0f}% of the lifetime value)",
        ),
        ("Historic value (net spend so far, undiscounted)", f"{detail['historic_value']:,.2f}"),
        ("P(alive) (still a customer, BG/NBD)", f"{detail['p_alive'] * 100:.0f}%"),
        ("Expected order value (revenue)", f"{detail['expected_order_value']:,.2f}"),
        ("Expected revenue, next 90 days (forecast, undiscounted)", f"{row['expected_revenue_90d']:,.2f}"),
    ):
        assert f"<dt>{escape(label)}</dt><dd" in block, label
        assert shown in block.split(str(escape(label)), 1)[1].split("</div>", 1)[0], label
    interval = detail["interval"]
    if interval:
        assert f"{interval['p05']:,.2f} – {interval['p95']:,.2f}" in block
    assert "in 90 days" in block and "in a year" in block
    assert residual >= year  # on a revenue basis the value beyond one year is never negative
    assert 'id="graceful-exit"' not in text
    assert "CLV" not in text


def test_overview_and_list_name_the_value_and_its_basis(signed_in: tuple[TestClient, str]) -> None:
    client, _ = signed_in
    for path in ("/", "/customers"):
        text = client.get(path).text
        terms = section(text, "value-terms").split("</p>", 1)[0]
        assert "Lifetime value</strong>: discounted, to the end of the relationship" in terms, path
        assert "revenue basis: no economics config" in terms and "annual discount rate" in terms, path
        assert "CLV" not in text, path
    listing = client.get("/customers").text
    assert '<label for="f-clv">Minimum lifetime value</label>' in listing
    assert re.search(r'class="sort"[^>]*>Lifetime value<span', listing)
    assert "Total lifetime value" in client.get("/").text


def test_contribution_basis_and_a_graceful_exit(
    signed_in: tuple[TestClient, str], contribution_store: SqliteScoreStore
) -> None:
    client, _ = signed_in
    rows, _ = contribution_store.query(CustomerQuery(sort="customer_id", descending=False, limit=50))
    leaving = next(r for r in rows if r["segment"] == GRACEFUL_EXIT)
    staying = next(r for r in rows if r["segment"] != GRACEFUL_EXIT)
    with serving_store(client, contribution_store):
        overview = client.get("/").text
        terms = section(overview, "value-terms").split("</p>", 1)[0]
        assert (
            "contribution basis: margin less the cost to serve" in terms
            and "annual discount rate 12%" in terms
        )
        assert "no economics config" not in overview
        page = client.get(f"/customers/{staying['customer_id']}").text
        assert "contribution basis" in section(page, "lifetime-value") and 'id="graceful-exit"' not in page
        page = client.get(f"/customers/{leaving['customer_id']}").text
        why = section(page, "graceful-exit").split("</p>", 1)[0]
        assert "Graceful exit" in why and "-37.50 in contribution" in why
        assert "does not cover what serving them costs" in why and "No paid action" in why
        action = section(page, "action-title")
        assert (
            "No action" in action
            and "Graceful exit: customers in this segment never get a paid action" in action
        )
        assert str(escape(leaving["action"]["why"])) in action and leaving["action"]["why"].startswith(
            "Graceful exit"
        )
        assert "Value beyond one year" in page and "of the lifetime value)" not in section(
            page, "value-beyond-1y"
        )
        listing = client.get("/customers?" + urlencode({"segment": GRACEFUL_EXIT})).text
        assert ids_on_page(listing) == [leaving["customer_id"]]
        exported = list(csv.DictReader(io.StringIO(client.get("/customers.csv").text)))
        assert {r["value_basis"] for r in exported} == {"contribution"}


def test_a_store_written_before_lifetime_value_still_renders(
    signed_in: tuple[TestClient, str], old_store: SqliteScoreStore
) -> None:
    client, _ = signed_in
    row = old_store.query(CustomerQuery(limit=1))[0][0]
    assert row["clv"] is None and row["clv_detail"] is None  # the old 90-day forecast is not a lifetime value
    with serving_store(client, old_store):
        for path in ("/", "/customers", "/customers?sort=clv&min_clv=5", "/customers.csv", "/movements"):
            assert client.get(path).status_code == 200, path
        overview = client.get("/").text
        assert "Lifetime value</strong>: not available in these scores" in overview
        listing = client.get("/customers").text
        assert "not available in these scores" in listing and ">n/a</span>" in listing
        page = client.get(f"/customers/{row['customer_id']}")
        assert page.status_code == 200
        block = section(page.text, "lifetime-value")
        assert "Lifetime value: not available for this score" in block
        assert f"{row['expected_revenue_90d']:,.2f}" in section(page.text, "expected-revenue")
        assert 'id="lifetime-value-figure">not available<' in page.text
        assert (
            "churn probability × expected revenue over the horizon (scored before lifetime value existed)"
            in page.text
        )
        assert 'data-clv=""' in page.text  # the what-if script reads it as unknown, not as 0
        exported = list(csv.DictReader(io.StringIO(client.get("/customers.csv").text)))
        assert exported and all(r["clv"] == "" for r in exported)
