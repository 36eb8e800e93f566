"""Serving's commands (score, serve, keys), merged into the root ``churnguard`` command through the
``churnguard.commands`` entry point. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.cli import AsOfOpt, DataDir, MappingOpt, checked_cutoff, command_app, console, out, parse_date
from features.errors import ConfigError

app = command_app("Score customers, serve the API and dashboard, manage API keys.")
keys_app = command_app("Manage API keys (stored only as hashes).")
app.add_typer(keys_app, name="keys")


@app.command()
def score(
    data: DataDir,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output file (.parquet or .csv), written atomically. In a CSV, text cells that start "
            "with =, +, -, @, a tab or a carriage return get a leading ' so a spreadsheet does not run "
            "them as formulas (as the dashboard's export does); see --raw-csv.",
        ),
    ] = None,
    as_of: AsOfOpt = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model URI or folder [default: models:/churnguard@champion]."),
    ] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Refresh the serving store the API reads.")
    ] = True,
    mapping: MappingOpt = None,
    raw_csv: Annotated[
        bool,
        typer.Option(
            "--raw-csv",
            help="Write CSV cells exactly as computed, without the leading ' (for programs, not spreadsheets).",
        ),
    ] = False,
    excel: Annotated[
        bool,
        typer.Option("--excel", help="Start the CSV with a UTF-8 byte-order mark, for spreadsheet programs."),
    ] = False,
) -> None:
    """Score every active customer: churn probability, CLV, value at risk, reasons and action."""
    from features.model_store import connect
    from features.progress import stage_progress
    from serving.batch import PublishRequest, ScoresFile, publish_scores
    from serving.settings import get_serving_settings
    from serving.store import SqliteScoreStore

    settings = get_serving_settings()
    if out_file is None and not store:
        raise typer.BadParameter("nothing to do: give --out FILE, or keep --store")
    if (raw_csv or excel) and (out_file is None or out_file.suffix != ".csv"):
        raise typer.BadParameter("--raw-csv and --excel apply to a CSV file: give --out FILE.csv")
    request = PublishRequest(
        data,
        model or settings.model_uri,
        as_of=parse_date(as_of, "--as-of") if as_of else None,
        choose_as_of=checked_cutoff,
        mapping=mapping,
        playbook=settings.playbook,
        out_file=ScoresFile(out_file, raw=raw_csv, excel=excel) if out_file else None,
        store=SqliteScoreStore(settings.store_file) if store else None,
        top_k=settings.top_k,
        threads=settings.threads,
    )
    connect(settings)
    with stage_progress("scoring") as report:
        published = publish_scores(request, report)
    result, info = published.batch, published.model
    where = f" to {out_file}" if out_file else ""
    out.print(
        f"scored {result.customers:,} customers as of {result.as_of}{where} with model "
        f"{info.name} v{info.version} in {result.seconds:.1f}s "
        f"({result.per_second:,.0f} customers/s)" + ("; serving store refreshed" if store else "")
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes.")] = 1,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="First create an API key named 'demo' and print what to try (make demo)."
        ),
    ] = False,
) -> None:
    """Run the scoring API and dashboard under uvicorn."""
    import uvicorn

    if demo:
        _print_demo_hints(host, port)
    out.print(f"serving on http://{host}:{port}  (OpenAPI schema: http://{host}:{port}/openapi.json)")
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=True,
    )


def _print_demo_hints(host: str, port: int) -> None:
    """A fresh key and the first things to try, with a real customer id from the serving store."""
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings
    from serving.store import CustomerQuery, SqliteScoreStore

    settings = get_serving_settings()
    _, key = KeyStore(settings.keys_file).create("demo")
    store = SqliteScoreStore(settings.store_file)
    top, total = store.query(CustomerQuery(limit=1))
    if not top:
        raise ConfigError("the serving store is empty: run `churnguard score --data DIR` first")
    example = top[0]["customer_id"]
    base = f"http://{host}:{port}"
    out.print(
        f"""
[bold]churnguard demo is ready[/]: {total:,} customers scored as of {store.meta().get("as_of", "?")}

  API key (shown once):  {key}
  Dashboard:             {base}/  (sign in with the key)
  OpenAPI schema:        {base}/openapi.json  (interactive /docs with CHURNGUARD_API_DOCS=true)

Try:
  curl -H "Authorization: Bearer {key}" {base}/v1/customers/{example}
  curl -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
       -d '{{"records": [{{"features": {{"recency_days": 94, "unresolved_complaints_90d": 2}}}}]}}' {base}/v1/score
  .venv/bin/churnguard score --data data/demo --out scores.csv
  .venv/bin/mlflow ui --backend-store-uri {settings.resolved_tracking_uri()}
""",
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "default") -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings

    if not name.strip():
        raise typer.BadParameter("--name must not be empty: say who or what the key is for")
    record, token = KeyStore(get_serving_settings().keys_file).create(name)
    console.print(f"created key {record.key_id} ('{name}'); it is shown only now:")
    out.print(token, highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, names, dates; never the keys themselves)."""
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings

    for record in KeyStore(get_serving_settings().keys_file).records():
        out.print(f"{record.key_id}  {record.created_at}  {record.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id from `churnguard keys list`.")]) -> None:
    """Revoke a key at once."""
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings

    if not KeyStore(get_serving_settings().keys_file).revoke(key_id):
        raise ConfigError(f"no key with id {key_id}; see `churnguard keys list`")
    out.print(f"revoked {key_id}")
