"""The PostgreSQL serving store against the real server: migrations, the same answers as the SQLite store,
atomic refreshes under concurrent reads, keys and sessions shared between processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from features.errors import ConfigError
from serving.dashboard.session import SessionSigner
from serving.encoding import STORE_COLUMNS, STORE_JSON_COLUMNS
from serving.keys import KeyStore
from serving.migrations import SCHEMA, applied_versions, migrate, migrations
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import Trained
from tests.pg import fresh_database, opened_store, require_postgres

pytest.importorskip("psycopg_pool")
from serving.backends import COALESCED_IDS, PostgresReads
from serving.pg_auth import MISS_INTERVAL, PostgresKeys, PostgresSessions
from serving.pg_store import PostgresScoreStore, StoreUnavailableError

QUERIES = [
    CustomerQuery(),
    CustomerQuery(sort="customer_id", descending=False, limit=7, offset=3),
    CustomerQuery(sort="churn_probability", descending=False, limit=20),
    CustomerQuery(sort="clv", search="00", limit=15),
    CustomerQuery(risk_tier="high", sort="expected_net_value"),
    CustomerQuery(min_clv=100.0, sort="value_at_risk", descending=False),
]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresScoreStore]:
    with opened_store(pg_url) as opened:
        yield opened


@pytest.fixture(scope="module")
def real_scores(trained: Trained) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trained model's stored scores as a refresh would write them, and their meta."""
    source = SqliteScoreStore(trained.home / "scores.db")
    rows, _ = source.query(CustomerQuery(limit=100_000))
    frame = pd.DataFrame(rows)
    for column in STORE_JSON_COLUMNS:  # as stored: JSON text
        if column in frame.columns:
            frame[column] = [v if v is None or isinstance(v, str) else json.dumps(v) for v in frame[column]]
    return frame, source.meta()


def test_migrations_apply_once_and_refuse_a_newer_schema() -> None:
    with fresh_database() as url, psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn) == [m.version for m in migrations()]
        assert migrate(conn) == []
        assert applied_versions(conn) == [m.version for m in migrations()]
        conn.execute(f"INSERT INTO {SCHEMA}.schema_version (version, name) VALUES (99, 'future')")
        with pytest.raises(ConfigError, match="newer than this churnguard knows"):
            migrate(conn)


def test_replicas_migrating_at_once_apply_each_version_once() -> None:
    with fresh_database() as url:
        results: list[list[int]] = []

        def start() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                results.append(migrate(conn))

        threads = [threading.Thread(target=start) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results, key=len) == [[], [], [m.version for m in migrations()]]


def test_the_migrated_scores_table_has_the_store_columns(store: PostgresScoreStore) -> None:
    """serving.encoding.STORE_COLUMNS is the one home of the columns: a column added there needs a
    migration here (ADD COLUMN appends, so the order may differ; reads and writes name columns)."""
    with store.connection() as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'scores'",
                [SCHEMA],
            ).fetchall()
        )
    expected = {
        name: "double precision" if kind == "REAL" else "text" for name, kind in STORE_COLUMNS.items()
    }
    assert columns == {"set_id": "bigint", **expected}


def test_an_empty_store_answers_like_the_sqlite_one(pg_url: str, tmp_path: Path) -> None:
    with fresh_database() as url, opened_store(url) as empty:
        sqlite = SqliteScoreStore(tmp_path / "empty.db")
        assert empty.meta() == sqlite.meta() == {}
        assert empty.get("C1") is None
        assert empty.query(CustomerQuery()) == sqlite.query(CustomerQuery())
        assert empty.summary() == sqlite.summary()
        assert list(empty.columns(["customer_id", "clv"]).columns) == ["customer_id", "clv"]
        assert empty.columns(["customer_id"]).empty and sqlite.columns(["customer_id"]).empty
        empty.close()


def test_every_read_matches_the_sqlite_store(
    store: PostgresScoreStore, real_scores: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, meta = real_scores
    sqlite = SqliteScoreStore(tmp_path / "scores.db")
    sqlite.replace_all(frame, meta)
    store.replace_all(frame, meta)
    ids = [*frame["customer_id"].head(40), "nobody"]
    assert store.get_many(ids) == sqlite.get_many(ids)
    assert store.get_many(ids, with_inputs=False) == sqlite.get_many(ids, with_inputs=False)
    assert store.meta() == sqlite.meta()
    for q in QUERIES:
        assert store.query(q) == sqlite.query(q), q
        assert list(store.iter_query(q)) == list(sqlite.iter_query(q)), q
    # the bulk column read (campaign planning): the same raw values, one row per customer, names checked
    names = ["customer_id", "churn_probability", "clv", "segment", "action"]
    bulk, local = (s.columns(names).sort_values("customer_id", ignore_index=True) for s in (store, sqlite))
    pd.testing.assert_frame_equal(bulk, local, check_dtype=False)
    assert len(bulk) == len(frame) and bulk["action"].map(json.loads).map(type).eq(dict).all()
    with pytest.raises(ValueError, match="not columns of the serving store"):
        store.columns(["customer_id; DROP TABLE x"])
    mine, theirs = store.summary(), sqlite.summary()
    assert mine["customers"] == theirs["customers"] == len(frame)
    assert mine["value_at_risk"] == pytest.approx(theirs["value_at_risk"])
    for part in ("segments", "histogram", "actions"):
        assert len(mine[part]) == len(theirs[part])
        first = next(iter(theirs[part][0])) if theirs[part] else None  # ties may come in either order
        for a, b in zip(
            sorted(mine[part], key=lambda r: str(r[first])),
            sorted(theirs[part], key=lambda r: str(r[first])),
            strict=True,
        ):
            assert a == pytest.approx(b), part


def test_async_reads_match_the_sync_ones(
    store: PostgresScoreStore, real_scores: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    frame, meta = real_scores
    store.replace_all(frame, meta)
    ids = list(frame["customer_id"].head(10))

    async def read() -> tuple[dict[str, Any], dict[str, Any]]:
        await store.aopen()
        try:
            return await store.aget_many(ids), await store.ameta()
        finally:
            await store.aclose()

    found, meta_read = asyncio.run(read())
    assert found == store.get_many(ids, with_inputs=False)
    assert meta_read == store.meta()


def test_concurrent_api_reads_share_a_statement_and_each_gets_its_own_rows(
    store: PostgresScoreStore,
    real_scores: tuple[pd.DataFrame, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame, meta = real_scores
    store.replace_all(frame, meta)
    ids = list(frame["customer_id"].head(COALESCED_IDS + 10))
    small = [[i] for i in ids[:10]] + [[ids[0], "nobody", ids[5]], ["nobody"], [ids[3], ids[3]]]
    asks = [*small, ids]  # the last one asks for more ids than a shared statement takes
    statements: list[list[str]] = []
    read_alone = store.aget_many

    async def counted(customer_ids: list[str], with_inputs: bool = False) -> dict[str, Any]:
        statements.append(list(customer_ids))
        return await read_alone(customer_ids, with_inputs)

    monkeypatch.setattr(store, "aget_many", counted)
    reads = PostgresReads(store)

    async def read() -> list[dict[str, Any]]:
        await store.aopen()
        try:
            return await asyncio.gather(*(reads.get_many(ask) for ask in asks))
        finally:
            await store.aclose()

    answers = asyncio.run(read())
    stored = store.get_many(ids, with_inputs=False)
    for ask, answer in zip(asks, answers, strict=True):
        assert answer == {c: stored[c] for c in ask if c in stored}
    assert len(statements) == 2  # every small request in one statement, the big one on its own


def test_a_failed_shared_read_fails_every_request_that_waited_for_it() -> None:
    require_postgres()
    down = PostgresScoreStore("postgresql://postgres@127.0.0.1:9/none", timeout=1)
    reads = PostgresReads(down)

    async def read() -> list[object]:
        try:
            return await asyncio.gather(
                *(reads.get_many([f"C{i}"]) for i in range(5)), return_exceptions=True
            )
        finally:
            await down.aclose()

    failures = asyncio.run(read())
    assert all(isinstance(f, StoreUnavailableError) and "unreachable" in str(f) for f in failures), failures


def test_a_refresh_during_reads_never_shows_a_mixed_set(
    store: PostgresScoreStore, real_scores: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    frame, meta = real_scores
    ids = list(frame["customer_id"])
    seen: list[set[str]] = []
    stop = threading.Event()
    reader = PostgresScoreStore(store.url).open()  # another process's pool, as a replica has

    def read() -> None:
        while not stop.is_set():
            found = reader.get_many(ids, with_inputs=False)
            seen.append({r["as_of"] for r in found.values()})

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for day in range(1, 6):
            as_of = f"2030-01-0{day}"
            store.replace_all(frame.assign(as_of=as_of), {**meta, "as_of": as_of})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        reader.close()
    assert len(seen) > 5
    assert all(len(sets) == 1 for sets in seen), [s for s in seen if len(s) != 1][:3]
    assert len({next(iter(s)) for s in seen}) > 1  # the readers did see refreshes happen
    with store.connection() as conn:  # the old sets are gone
        assert conn.execute(f"SELECT COUNT(*) FROM {SCHEMA}.scores").fetchone() == (len(frame),)


def test_a_key_created_by_one_process_is_accepted_by_another(store: PostgresScoreStore, pg_url: str) -> None:
    with opened_store(pg_url) as other:
        mine, theirs = KeyStore(backend=PostgresKeys(store)), KeyStore(backend=PostgresKeys(other, ttl=60))
        assert theirs.records() is not None  # the other process has read the keys before this one exists
        record, token = mine.create("crm")
        time.sleep(MISS_INTERVAL)
        assert theirs.verify(token) == record  # a miss reads the keys again at once
        assert theirs.verify(token + "x") is None
        assert mine.revoke(record.key_id)
        assert mine.verify(token) is None
        assert KeyStore(backend=PostgresKeys(other)).verify(token) is None


def test_a_session_opened_on_one_replica_is_valid_and_signed_out_on_another(
    store: PostgresScoreStore, pg_url: str, tmp_path: Path
) -> None:
    with opened_store(pg_url) as other:
        keys = KeyStore(backend=PostgresKeys(store))
        record, _ = keys.create("dashboard")
        a = SessionSigner(tmp_path / "a", shared=PostgresSessions(store))
        b = SessionSigner(tmp_path / "b", shared=PostgresSessions(other))
        token = a.issue(record, 3600)
        session = b.verify(token, keys)
        assert session is not None and session.key == record
        a.end(session)
        assert b.verify(token, keys) is None
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing in the homes


def test_an_unreachable_server_is_a_clear_error() -> None:
    require_postgres()
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        PostgresScoreStore("postgresql://postgres@127.0.0.1:9/none", timeout=1).open()


def test_the_app_serves_from_the_postgres_store(
    trained: Trained, pg_url: str, real_scores: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.settings import ServingSettings

    frame, meta = real_scores
    store = PostgresScoreStore(pg_url).open()
    store.replace_all(frame, meta)
    _, key = KeyStore(backend=PostgresKeys(store)).create("app")
    store.close()
    settings = ServingSettings(store_url=pg_url, keys_path=tmp_path / "no-keys.json")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        customer = str(frame["customer_id"].iloc[0])
        one = client.get(f"/v1/customers/{customer}")
        assert one.status_code == 200, one.text
        assert one.json()["churn_probability"] == pytest.approx(float(frame["churn_probability"].iloc[0]))
        many = client.post("/v1/customers/score", json={"customer_ids": [customer, "nobody"]})
        assert many.json()["not_found"] == ["nobody"]
        ready = client.get("/ready").json()
        assert ready["status"] == "ready" and ready["scores_as_of"] == meta["as_of"]
        # the file-based key of the SQLite default is not accepted: keys live in the store now
        assert (
            client.get(
                f"/v1/customers/{customer}", headers={"Authorization": f"Bearer {trained.api_key}"}
            ).status_code
            == 403
        )
    assert not (tmp_path / "no-keys.json").exists()


def test_score_history_matches_the_sqlite_store(
    store: PostgresScoreStore, real_scores: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, _ = real_scores
    snapshot = frame[["customer_id", "churn_probability", "clv", "value_at_risk", "segment", "action_name"]]
    snapshot = snapshot.assign(expected_revenue=frame["clv"] * 0.25)
    sqlite = SqliteScoreStore(tmp_path / "history.db")
    for day in (1, 2, 3):
        run = {"as_of": f"2030-02-0{day}", "scored_at": "now", "model": {"version": str(day)}, "summary": {}}
        for target in (sqlite, store):
            run_id = target.record_run(snapshot.head(50 * day), run, keep_runs=2)
            target.save_report(run_id, "drift", {"day": day})
            target.save_report(run_id, "reference", {"kept": day})
    mine, theirs = store.runs(), sqlite.runs()
    assert [r["as_of"] for r in mine] == [r["as_of"] for r in theirs] == ["2030-02-02", "2030-02-03"]
    assert [{k: v for k, v in r.items() if k != "run_id"} for r in mine] == [
        {k: v for k, v in r.items() if k != "run_id"} for r in theirs
    ]
    pd.testing.assert_frame_equal(store.snapshot(mine[-1]["run_id"]), sqlite.snapshot(theirs[-1]["run_id"]))
    customer = str(snapshot["customer_id"].iloc[0])
    drop_id = [{k: v for k, v in r.items() if k != "run_id"} for r in store.history(customer)]
    assert drop_id == [{k: v for k, v in r.items() if k != "run_id"} for r in sqlite.history(customer)]
    assert len(drop_id) == 2
    assert list(store.reports("drift").values()) == list(sqlite.reports("drift").values())
    assert len(store.reports("reference")) == 3  # references outlive their runs, as in SQLite
