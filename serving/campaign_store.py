"""Where planned campaigns and their reports are kept: in the serving store in force, next to the scores.

Three tables of their own: ``campaigns`` (one row per planned campaign, its name the primary key),
``campaign_contacts`` (its assignments, treatment and control) and ``campaign_reports`` (the latest report
of each campaign). :func:`serving.backends.open_backends` picks the backend with the score store: the
SQLite file by default (:class:`SqliteCampaigns`, tables created on first use), PostgreSQL when
``CHURNGUARD_STORE_URL`` is set (:class:`serving.pg_campaigns.PostgresCampaigns`, tables created by
:mod:`serving.migrations`). So ``churnguard campaign plan`` on one host and the API and dashboard of every
replica see the same campaigns, and the API and the dashboard show them without the data folder. Both
backends give the same answers for the same campaigns; what they store (rows, JSON text) is built here,
once, and each keeps its SQL in its own class.

Recording a campaign is one transaction: the plan row and every contact row, or nothing. A name is used
once, and the primary key decides it, so of two planners racing for one name one records its campaign and
the other gets :func:`duplicate_campaign`'s refusal.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from features.errors import ConfigError

if TYPE_CHECKING:
    from serving.campaigns import CampaignReport
    from serving.store import SqliteScoreStore

# The contact list's columns as stored, in the tables' order (``group`` is stored as ``grp``).
CONTACT_COLUMNS = (
    "campaign",
    "customer_id",
    "action",
    "group",
    "assignment_probability",
    "assigned_at",
    "expected_net_value",
    "why",
)


class CampaignStore(Protocol):
    """Planned campaigns and their latest reports (see the module docstring)."""

    def record_campaign(self, plan: Mapping[str, Any], contacts: pd.DataFrame) -> None:
        """Keep a planned campaign and its assignments, all or nothing; a name already recorded is a
        :class:`ConfigError`."""
        ...

    def save_reports(self, reports: Sequence[CampaignReport]) -> None:
        """Keep the latest report of each campaign (replacing an earlier one)."""
        ...

    def list_campaigns(self) -> list[dict[str, Any]]:
        """Every campaign planned or reported, by name: when planned, the plan (if any), when reported."""
        ...

    def stored_report(self, campaign: str) -> dict[str, Any] | None:
        """The latest report of ``campaign`` (with ``computed_at``), or None."""
        ...

    def stored_contacts(self, campaign: str, *, limit: int = 1000, offset: int = 0) -> dict[str, Any] | None:
        """A page of a planned campaign's assignments by customer id, and their total; None when unknown."""
        ...


# ------------------------------------------------------------------- what both backends store and return


def duplicate_campaign(name: str) -> ConfigError:
    return ConfigError(f"a campaign named {name!r} is already recorded: choose another name")


def plan_row(plan: Mapping[str, Any]) -> tuple[str, str, str]:
    """(campaign, created_at, plan as JSON) for the ``campaigns`` table."""
    return str(plan["campaign"]), _now(), json.dumps(plan, default=str)


def contact_rows(contacts: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    """The ``campaign_contacts`` rows of a plan's contact list: Python values, NaN as NULL (as SQLite
    stores it), the assignment date as text."""
    columns = [
        contacts[c].astype(str).tolist() if c == "assigned_at" else contacts[c].tolist()
        for c in CONTACT_COLUMNS
    ]
    for row in zip(*columns, strict=True):
        yield tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)


def report_rows(reports: Sequence[CampaignReport]) -> list[tuple[str, str, str]]:
    """(campaign, computed_at, report as JSON) for the ``campaign_reports`` table."""
    now = _now()
    return [(r.campaign, now, json.dumps(r.as_dict(), default=_finite)) for r in reports]


def listing(planned: Mapping[str, tuple[str, str]], reported: Mapping[str, str]) -> list[dict[str, Any]]:
    """:meth:`CampaignStore.list_campaigns`'s answer from the stored rows: ``planned`` maps a name to
    (created_at, plan JSON), ``reported`` to its report's computed_at."""
    return [
        {
            "campaign": n,
            "created_at": planned[n][0] if n in planned else None,
            "plan": json.loads(planned[n][1]) if n in planned else None,
            "reported_at": reported.get(n),
        }
        for n in sorted(set(planned) | set(reported))
    ]


def report_answer(report: str, computed_at: str) -> dict[str, Any]:
    return {**json.loads(report), "computed_at": computed_at}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _finite(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


# -------------------------------------------------------------------------------------------- SQLite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS campaigns (campaign TEXT PRIMARY KEY, created_at TEXT, plan TEXT)",
    "CREATE TABLE IF NOT EXISTS campaign_contacts (campaign TEXT, customer_id TEXT, action TEXT, "
    "grp TEXT, assignment_probability REAL, assigned_at TEXT, expected_net_value REAL, why TEXT, "
    "PRIMARY KEY (campaign, customer_id))",
    "CREATE TABLE IF NOT EXISTS campaign_reports (campaign TEXT PRIMARY KEY, computed_at TEXT, report TEXT)",
)


class SqliteCampaigns:
    """The campaign tables in the SQLite store file, through the score store's own connection (its mode,
    journal and write transaction: :class:`serving.store.SqliteScoreStore` never touches these tables).
    Reads of a store file that does not exist yet find nothing and create nothing."""

    def __init__(self, store: SqliteScoreStore) -> None:
        self.store = store
        self._ready = False

    @property
    def path(self) -> Path:
        return self.store.path

    def _connect(self) -> sqlite3.Connection:
        """The store's connection, the campaign tables created on first use."""
        con = self.store.connection()
        if not self._ready:
            for statement in _SCHEMA:
                con.execute(statement)
            self._ready = True
        return con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._connect()
        with self.store.transaction() as con:  # BEGIN IMMEDIATE: a racing planner waits for this one
            yield con

    def record_campaign(self, plan: Mapping[str, Any], contacts: pd.DataFrame) -> None:
        name, created_at, plan_json = plan_row(plan)
        with self._transaction() as con:
            try:
                con.execute("INSERT INTO campaigns VALUES (?, ?, ?)", (name, created_at, plan_json))
            except sqlite3.IntegrityError:
                raise duplicate_campaign(name) from None
            con.executemany(
                "INSERT INTO campaign_contacts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", contact_rows(contacts)
            )

    def save_reports(self, reports: Sequence[CampaignReport]) -> None:
        with self._transaction() as con:
            con.executemany("INSERT OR REPLACE INTO campaign_reports VALUES (?, ?, ?)", report_rows(reports))

    def list_campaigns(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        con = self._connect()
        planned = {
            r["campaign"]: (r["created_at"], r["plan"]) for r in con.execute("SELECT * FROM campaigns")
        }
        reported = {r["campaign"]: r["computed_at"] for r in con.execute("SELECT * FROM campaign_reports")}
        return listing(planned, reported)

    def stored_report(self, campaign: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        con = self._connect()
        row = con.execute("SELECT * FROM campaign_reports WHERE campaign = ?", (campaign,)).fetchone()
        return None if row is None else report_answer(row["report"], row["computed_at"])

    def stored_contacts(self, campaign: str, *, limit: int = 1000, offset: int = 0) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        con = self._connect()
        if not con.execute("SELECT 1 FROM campaigns WHERE campaign = ?", (campaign,)).fetchone():
            return None
        total = con.execute(
            "SELECT COUNT(*) FROM campaign_contacts WHERE campaign = ?", (campaign,)
        ).fetchone()[0]
        rows = con.execute(
            "SELECT customer_id, action, grp AS 'group', assignment_probability, assigned_at, "
            "expected_net_value, why FROM campaign_contacts WHERE campaign = ? ORDER BY customer_id "
            "LIMIT ? OFFSET ?",
            (campaign, limit, offset),
        )
        contacts = [dict(r) for r in rows]
        return {"campaign": campaign, "total": int(total), "contacts": contacts}
