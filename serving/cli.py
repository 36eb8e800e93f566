"""Serving's commands (score, monitor, serve, keys), merged into the root ``churnguard`` command through the
``churnguard.commands`` entry point. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.cli import (
    AsOfOpt,
    DataDir,
    EngineOpt,
    MappingOpt,
    checked_cutoff,
    chosen_engine,
    command_app,
    console,
    out,
    parse_date,
)
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
    engine: EngineOpt = None,
) -> None:
    """Score every active customer: churn probability, lifetime value, value at risk, reasons and action.

    With --engine spark, Spark reads, featurises and scores the folder and --out is a Parquet folder."""
    if chosen_engine(engine) == "spark":
        _score_on_spark(data, out_file, as_of, model, store, mapping)
        return
    from features.model_store import connect
    from features.progress import stage_progress
    from serving.backends import open_store
    from serving.batch import PublishRequest, ScoresFile, publish_scores
    from serving.monitor import HistoryPolicy
    from serving.settings import get_serving_settings

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
        store=open_store(settings) if store else None,
        history=HistoryPolicy.from_settings(settings) if store else None,
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
    if result.run_id is not None:
        _monitor_after_score(data, mapping)


def _monitor_after_score(data: Path, mapping: Path | None) -> None:
    """The monitor's findings after a scoring run, as a note: the scores are published whatever they say
    (``churnguard monitor`` is the command whose exit status a scheduler acts on)."""
    from features.loading import load_dataset
    from serving.backends import open_store
    from serving.monitor import HistoryPolicy, measure_matured_runs, model_health
    from serving.settings import get_serving_settings

    settings = get_serving_settings()
    store = open_store(settings)
    limits = HistoryPolicy.from_settings(settings).limits
    measure_matured_runs(store, load_dataset(data, mapping), limits=limits, threads=settings.threads)
    runs = store.runs()
    health = model_health(store, runs[-1]["model"].get("metrics") or {}, limits)
    if health["status"] == "ok":
        out.print(f"monitor: ok ({len(health['performance'])} matured run(s) measured)")
    else:
        out.print(f"monitor: {health['status']}: " + "; ".join(health["reasons"]), highlight=False)
        out.print("  details: `churnguard monitor --data DIR` or GET /v1/model/health", highlight=False)


RETRAIN_EXIT = 3


@app.command()
def monitor(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The data folder scored: past runs whose horizon has passed in it get their realised "
            "performance. Without it only the stored drift and performance are read.",
        ),
    ] = None,
    mapping: MappingOpt = None,
    report_only: Annotated[
        bool,
        typer.Option("--report-only", help="Always exit 0: report drift and degradation without signalling."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the health report as JSON.")] = False,
) -> None:
    """Drift of the latest run, realised performance of matured runs, and the retrain signal.

    Exit status: 0 healthy (or --report-only); 3 retrain advised (drift at alert, or the newest matured run
    degraded against the model's validation figures), for cron or Airflow to run `churnguard train`;
    2 a problem in the data or settings."""
    import json

    from features.loading import load_dataset
    from serving.backends import open_store
    from serving.monitor import HistoryPolicy, measure_matured_runs, model_health
    from serving.settings import get_serving_settings

    settings = get_serving_settings()
    store = open_store(settings)
    if not store.runs():
        raise ConfigError(
            f"no scoring runs in {'the PostgreSQL store' if settings.store_url else settings.store_file}: run `churnguard score --data DIR` first "
            "(each run keeps a snapshot the monitor reads)"
        )
    limits = HistoryPolicy.from_settings(settings).limits
    measured = (
        measure_matured_runs(store, load_dataset(data, mapping), limits=limits, threads=settings.threads)
        if data is not None
        else []
    )
    latest = store.runs()[-1]
    health = model_health(store, latest["model"].get("metrics") or {}, limits, latest["model_version"])
    if as_json:
        out.print_json(json.dumps(health))
    else:
        _print_health(health, measured)
    if health["retrain"] and not report_only:
        raise typer.Exit(RETRAIN_EXIT)


def _print_health(health: dict[str, object], measured: list[int]) -> None:
    drift = health["drift"] if isinstance(health["drift"], dict) else None
    latest = health["latest_run"] if isinstance(health["latest_run"], dict) else {}
    out.print(
        f"model health: [bold]{health['status']}[/] (latest run {latest.get('as_of')}, "
        f"model v{latest.get('model_version')}, {health['runs']} run(s) kept)"
    )
    if drift is not None:
        reference = drift.get("reference") or {}
        source = (
            "the training data"
            if reference.get("source") == "training"
            else f"the first scoring run of this model version ({reference.get('as_of')}): the bundle "
            "carries no training reference"
        )
        out.print(f"drift: {drift['status']} against {source}", highlight=False)
        for column in drift["flagged"][:10]:
            out.print(f"  {column['name']}: PSI {column['psi']:.3f} ({column['status']})", highlight=False)
    performance = health["performance"] if isinstance(health["performance"], list) else []
    if measured:
        out.print(f"measured {len(measured)} matured run(s) now")
    for run in performance[-6:]:
        auc = "n/a" if run["roc_auc"] is None else f"{run['roc_auc']:.3f}"
        ratio = "n/a" if run["revenue_total_ratio"] is None else f"{run['revenue_total_ratio']:.2f}"
        flag = "  DEGRADED" if run["degraded"] else ""
        out.print(f"  run {run['as_of']}: ROC AUC {auc}, ECE {run['ece']:.3f}, revenue ratio {ratio}{flag}")
    for reason in health["reasons"] if isinstance(health["reasons"], list) else []:
        out.print(f"  - {reason}", highlight=False)


def _score_on_spark(
    data: Path, out_file: Path | None, as_of: str | None, model: str | None, store: bool, mapping: Path | None
) -> None:
    from features.model_store import connect
    from features.progress import stage_progress
    from serving.backends import open_store
    from serving.settings import get_serving_settings
    from serving.spark_batch import SparkScoreRequest, load_store, run_spark_batch

    settings = get_serving_settings()
    if out_file is None:
        raise typer.BadParameter("--engine spark writes a Parquet folder: give --out scores.parquet")
    request = SparkScoreRequest(
        data,
        model or settings.model_uri,
        out_file,
        as_of=parse_date(as_of, "--as-of") if as_of else None,
        mapping=mapping,
        playbook=settings.playbook,
        top_k=settings.top_k,
    )
    connect(settings)
    with stage_progress("scoring (spark)") as report:
        report("reading, featurising and scoring on Spark", 0.1)
        result = run_spark_batch(settings, request)
        if store:
            report("loading the serving store", 0.9)
            load_store(out_file, open_store(settings))
    out.print(
        f"scored {result.customers:,} customers as of {result.as_of} to {out_file} on Spark in "
        f"{result.seconds:.1f}s" + ("; serving store refreshed" if store else "")
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="uvicorn worker processes (about one per core), each loading the model and watching the "
            "alias, each on a listening socket of its own (SO_REUSEPORT: the kernel spreads connections "
            "evenly). They share the store: the SQLite file on this host, or CHURNGUARD_STORE_URL across hosts.",
        ),
    ] = 1,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="First create an API key named 'demo' and print what to try (make demo)."
        ),
    ] = False,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request. Behind a proxy that logs requests already, turning it off saves "
            "about a sixth of the CPU of a stored-score read (request counts and latency stay in /metrics).",
        ),
    ] = True,
) -> None:
    """Run the scoring API and dashboard under uvicorn."""
    from serving.workers import run_workers

    if demo:
        _print_demo_hints(host, port)
    out.print(f"serving on http://{host}:{port}  (OpenAPI schema: http://{host}:{port}/openapi.json)")
    run_workers(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


def _print_demo_hints(host: str, port: int) -> None:
    """A fresh key and the first things to try, with a real customer id from the serving store."""
    from serving.backends import open_backends
    from serving.settings import get_serving_settings
    from serving.store import CustomerQuery

    settings = get_serving_settings()
    backends = open_backends(settings)
    _, key = backends.keys.create("demo")
    store = backends.store
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
    from serving.backends import open_keys
    from serving.settings import get_serving_settings

    if not name.strip():
        raise typer.BadParameter("--name must not be empty: say who or what the key is for")
    record, token = open_keys(get_serving_settings()).create(name)
    console.print(f"created key {record.key_id} ('{name}'); it is shown only now:")
    out.print(token, highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, names, dates; never the keys themselves)."""
    from serving.backends import open_keys
    from serving.settings import get_serving_settings

    for record in open_keys(get_serving_settings()).records():
        out.print(f"{record.key_id}  {record.created_at}  {record.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id from `churnguard keys list`.")]) -> None:
    """Revoke a key at once."""
    from serving.backends import open_keys
    from serving.settings import get_serving_settings

    if not open_keys(get_serving_settings()).revoke(key_id):
        raise ConfigError(f"no key with id {key_id}; see `churnguard keys list`")
    out.print(f"revoked {key_id}")
