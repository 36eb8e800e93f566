"""``churnguard campaign plan`` and ``churnguard campaign report``, merged into the root command through the
``churnguard.commands`` entry point. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.cli import DataDir, MappingOpt, command_app, console, out, parse_date

if TYPE_CHECKING:
    from features.bundle import ModelBundle
    from serving.settings import ServingSettings
    from serving.store import ScoreStore

app = command_app("Plan retention campaigns with control groups and measure what they changed.")
campaign_app = command_app("Plan retention campaigns with control groups and measure what they changed.")
app.add_typer(campaign_app, name="campaign")


def _scoring_bundle(settings: ServingSettings, store: ScoreStore) -> ModelBundle | None:
    """The model that scored the store, for its learned effects (None: nothing scored yet, or the registry
    no longer has that version; the playbook's priors then rank, and the plan says so)."""
    from features.model_store import ModelNotFoundError, connect, load_model

    model = store.meta().get("model") or {}
    uri = model.get("uri") if model.get("version") == "local" else None
    if uri is None and model.get("name") and model.get("version"):
        uri = f"models:/{model['name']}/{model['version']}"
    if uri is None:
        return None
    connect(settings)
    try:
        return load_model(str(uri)).bundle
    except ModelNotFoundError:
        console.print(
            f"warning: the model that scored the store ({uri}) is gone from the registry: the playbook's "
            "prior success rates rank the customers",
            highlight=False,
        )
        return None


@campaign_app.command()
def plan(
    campaign: Annotated[str, typer.Option("--campaign", help="A new campaign name (used once).")],
    action: Annotated[str, typer.Option("--action", help="The playbook action to give the treatment group.")],
    count: Annotated[int | None, typer.Option("--count", help="Customers to contact (treatment).")] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="Money to spend instead of a count: contacts = budget / cost."),
    ] = None,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Share held out as this campaign's control.")
    ] = 0.1,
    global_holdout: Annotated[
        float,
        typer.Option("--global-holdout", help="Share of all customers never contacted by any campaign."),
    ] = 0.0,
    exploration: Annotated[
        float,
        typer.Option(
            "--exploration", help="Share of the campaign drawn from eligible customers below the cut."
        ),
    ] = 0.05,
    min_probability: Annotated[
        float, typer.Option("--min-probability", help="Eligible from this churn risk.")
    ] = 0.0,
    min_clv: Annotated[float, typer.Option("--min-clv", help="Eligible from this customer value.")] = 0.0,
    segment: Annotated[str | None, typer.Option("--segment", help="Only this value segment.")] = None,
    risk_tier: Annotated[str | None, typer.Option("--risk-tier", help="Only this risk tier.")] = None,
    recommended_only: Annotated[
        bool, typer.Option("--recommended-only", help="Only customers whose recommended action is this one.")
    ] = False,
    assigned_at: Annotated[
        str | None,
        typer.Option("--assigned-at", help="Date the campaign starts [default: the scores' date]."),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Contact list for the CRM (CSV, treatment group only).")
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log", help="campaigns.csv to add the assignments to (treatment and control), to measure."
        ),
    ] = None,
) -> None:
    """Pick customers by expected incremental net value, hold out a control group by a deterministic hash,
    and record the campaign in the store.

    The store decides whether the name is new, before any file is written: a refused plan leaves the
    contact list and the log as they were."""
    from serving.actions import load_playbook
    from serving.backends import open_backends
    from serving.campaign_plan import (
        Eligibility,
        PlanRequest,
        append_log,
        check_log,
        plan_campaign,
        write_contacts,
    )
    from serving.settings import get_serving_settings

    settings = get_serving_settings()
    request = PlanRequest(
        campaign=campaign,
        action=action,
        count=count,
        budget=budget,
        holdout=holdout,
        global_holdout=global_holdout,
        exploration=exploration,
        eligibility=Eligibility(min_probability, min_clv, segment, risk_tier, recommended_only),
        assigned_at=_date(assigned_at),
    )
    backends = open_backends(settings)  # the scores and the campaigns live in the same store
    try:
        store = backends.store
        result = plan_campaign(
            store, load_playbook(settings.playbook), request, _scoring_bundle(settings, store)
        )
        if log_file is not None:
            check_log(result, log_file)
        backends.campaigns.record_campaign(result.summary, result.rows)
    finally:
        backends.close()
    if out_file is not None:
        write_contacts(result, out_file)
    if log_file is not None:
        append_log(result, log_file)
    summary = result.summary
    out.print(
        f"campaign {campaign}: {summary['treatment']:,} to contact with {action}, {summary['control']:,} held out "
        f"({summary['ranked']:,} ranked, {summary['explored']:,} exploring) from {summary['eligible']:,} eligible; "
        f"expected cost {summary['expected_cost']:,.2f}; estimates: {summary['estimates']}",
        highlight=False,
    )
    if "shortfall" in summary:
        console.print(f"warning: {summary['shortfall']}", highlight=False)


def _date(text: str | None) -> date | None:
    return parse_date(text, "--assigned-at").date() if text else None


@campaign_app.command()
def report(
    data: DataDir,
    campaign: Annotated[str | None, typer.Option("--campaign", help="Only this campaign.")] = None,
    horizon: Annotated[
        int, typer.Option("--horizon", help="Days after assignment that outcomes count.")
    ] = 90,
    margin: Annotated[float, typer.Option("--margin", help="Share of spend that is profit.")] = 1.0,
    mapping: MappingOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Keep the reports for the API and the dashboard.")
    ] = True,
) -> None:
    """Retention and spend of treatment vs control per campaign and action, with confidence intervals."""
    from serving.backends import open_backends
    from serving.campaigns import report_campaigns, report_lines
    from serving.settings import get_serving_settings

    reports = report_campaigns(data, mapping, horizon_days=horizon, margin=margin, campaign=campaign)
    if store:
        backends = open_backends(get_serving_settings())
        try:
            backends.campaigns.save_reports(reports)
        finally:
            backends.close()
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in reports], default=str))
        return
    for r in reports:
        for line in report_lines(r):
            out.print(line, highlight=False, soft_wrap=True)
