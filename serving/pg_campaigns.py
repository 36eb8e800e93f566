"""Planned campaigns and their reports in the PostgreSQL serving store (:class:`serving.campaign_store.CampaignStore`).

Tables ``churnguard.campaigns``, ``campaign_contacts`` and ``campaign_reports`` (migration 0006), reached
through the score store's pool, so a database that does not answer is the store's own
:class:`~serving.pg_store.StoreUnavailableError` (the CLI's one line, the API's 503). A campaign is recorded
in one transaction (its row, then its contacts by ``COPY``); the second of two planners racing for one name
waits on the primary key until the first commits and is refused, and has written nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from serving.campaign_store import (
    contact_rows,
    duplicate_campaign,
    listing,
    plan_row,
    report_answer,
    report_rows,
)
from serving.migrations import SCHEMA
from serving.pg_store import PostgresScoreStore

if TYPE_CHECKING:
    from serving.campaigns import CampaignReport

_CONTACTS = "campaign, customer_id, action, grp, assignment_probability, assigned_at, expected_net_value, why"
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


class PostgresCampaigns:
    """The campaign tables of a :class:`~serving.pg_store.PostgresScoreStore` (its pool, its schema)."""

    def __init__(self, store: PostgresScoreStore) -> None:
        self.store = store

    def record_campaign(self, plan: Mapping[str, Any], contacts: pd.DataFrame) -> None:
        name, created_at, plan_json = plan_row(plan)
        with self.store.connection() as conn, conn.transaction():
            try:
                conn.execute(
                    f"INSERT INTO {SCHEMA}.campaigns (campaign, created_at, plan) VALUES (%s, %s, %s)",
                    [name, created_at, plan_json],
                )
            except psycopg.errors.UniqueViolation:
                raise duplicate_campaign(name) from None
            with conn.cursor().copy(f"COPY {SCHEMA}.campaign_contacts ({_CONTACTS}) FROM STDIN") as copy:
                for row in contact_rows(contacts):
                    copy.write_row(row)

    def save_reports(self, reports: Sequence[CampaignReport]) -> None:
        with self.store.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {SCHEMA}.campaign_reports (campaign, computed_at, report) VALUES (%s, %s, %s) "
                "ON CONFLICT (campaign) DO UPDATE SET computed_at = EXCLUDED.computed_at, report = EXCLUDED.report",
                report_rows(reports),
            )

    def list_campaigns(self) -> list[dict[str, Any]]:
        with self.store.connection() as conn, conn.transaction():
            conn.execute(_SNAPSHOT)
            planned = {
                name: (created_at, plan)
                for name, created_at, plan in conn.execute(
                    f"SELECT campaign, created_at, plan FROM {SCHEMA}.campaigns"
                )
            }
            reported = dict(
                conn.execute(f"SELECT campaign, computed_at FROM {SCHEMA}.campaign_reports").fetchall()
            )
        return listing(planned, reported)

    def stored_report(self, campaign: str) -> dict[str, Any] | None:
        with self.store.connection() as conn:
            row = conn.execute(
                f"SELECT report, computed_at FROM {SCHEMA}.campaign_reports WHERE campaign = %s", [campaign]
            ).fetchone()
        return None if row is None else report_answer(row[0], row[1])

    def stored_contacts(self, campaign: str, *, limit: int = 1000, offset: int = 0) -> dict[str, Any] | None:
        with self.store.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_SNAPSHOT)
            if (
                cur.execute(f"SELECT 1 FROM {SCHEMA}.campaigns WHERE campaign = %s", [campaign]).fetchone()
                is None
            ):
                return None
            counted = cur.execute(
                f"SELECT COUNT(*) AS n FROM {SCHEMA}.campaign_contacts WHERE campaign = %s", [campaign]
            ).fetchone()
            contacts = cur.execute(
                'SELECT customer_id, action, grp AS "group", assignment_probability, assigned_at, '
                f"expected_net_value, why FROM {SCHEMA}.campaign_contacts WHERE campaign = %s "
                "ORDER BY customer_id LIMIT %s OFFSET %s",
                [campaign, limit, offset],
            ).fetchall()
        total = int(counted["n"]) if counted else 0
        return {"campaign": campaign, "total": total, "contacts": contacts}
