"""The ``churnguard`` command line: one sub-command per job, heavy imports only where they are used."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.console import Console
from rich.markup import escape  # data values in messages print as text, never as markup

from features.errors import ChurnguardError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    name="churnguard",
    help="Predict churn, customer value, reasons and retention actions from purchase and service data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Manage API keys (stored only as hashes).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)
out = Console()

DataDir = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Folder with transactions (+ optional customers, "
        "interactions, cancellations) as CSV or Parquet.",
    ),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping", help="Column-mapping YAML (default: columns.yaml inside the data folder, if present)."
    ),
]


def main() -> None:
    """Entry point: user errors become one clear message and exit code 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except ChurnguardError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        raise SystemExit(2) from None
    except typer.Abort:
        console.print("aborted")
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        console.print("interrupted: nothing was written")
        raise SystemExit(130) from None
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        raise SystemExit(code) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if os.environ.get("CHURNGUARD_DEBUG"):
            raise
        console.print(
            f"[bold red]unexpected error:[/] {exc.__class__.__name__}: {escape(str(exc))}. This is a bug in "
            "churnguard, not in your input: please report it (CHURNGUARD_DEBUG=1 shows the traceback).",
            highlight=False,
        )
        raise SystemExit(1) from None


@app.command()
def generate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write the tables into (must not exist or be empty).")
    ] = Path("data"),
    customers: Annotated[int, typer.Option("--customers", min=10, help="How many customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    file_format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    truth_dir: Annotated[
        Path | None, typer.Option("--truth", help="Where the ground truth goes (default: <out>-truth).")
    ] = None,
) -> None:
    """Write a realistic synthetic CRM dataset (and its ground truth, in a separate folder)."""
    from features.synthetic import generate_dataset
    from training.progress import stage_progress

    if file_format not in ("parquet", "csv"):
        raise typer.BadParameter("--format must be parquet or csv")
    if out_dir.exists() and any(out_dir.iterdir()):
        from features.errors import ConfigError

        raise ConfigError(f"{out_dir} already holds files; choose an empty --out folder or delete it first")
    with stage_progress("generating") as report:
        summary = generate_dataset(
            out_dir,
            customers,
            seed,
            truth_dir=truth_dir,
            file_format=cast(Literal["parquet", "csv"], file_format),
            progress=report,
        )  # type: ignore[arg-type]
    out.print(
        f"wrote {summary.n_customers:,} customers, {summary.n_transactions:,} transactions, "
        f"{summary.n_interactions:,} interactions, {summary.n_cancellations:,} cancellations "
        f"to {summary.out_dir} in {summary.seconds:.1f}s (ground truth: {summary.truth_dir})"
    )


@app.command()
def contract() -> None:
    """Print the input data contract: tables, columns, types and meaning."""
    from features.loading import describe_contract

    for line in describe_contract():
        out.print(line, highlight=False)


@app.command()
def validate(data: DataDir, mapping: MappingOpt = None) -> None:
    """Check a data folder against the contract and summarise it; exits non-zero on any problem."""
    from features.loading import load_dataset

    dataset = load_dataset(data, mapping)
    fp = dataset.fingerprint()
    out.print(f"valid: {fp['rows']} from {fp['first_date']} to {fp['last_date']}")


@app.command()
def features(
    data: DataDir,
    out_file: Annotated[Path, typer.Option("--out", help="Output file (.parquet or .csv).")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Cutoff date YYYY-MM-DD: only events strictly "
            "before it are used (default: the day after the newest event).",
        ),
    ] = None,
    mapping: MappingOpt = None,
) -> None:
    """Compute one row of point-in-time features per customer known at the as-of date."""
    from features.io import write_frame_atomic
    from features.loading import load_dataset
    from features.snapshots import model_features, observed_until
    from training.progress import stage_progress

    with stage_progress("features") as report:
        report("validating input", 0.1)
        dataset = load_dataset(data, mapping)
        cutoff = parse_date(as_of, "--as-of") if as_of else observed_until(dataset)
        report("computing features", 0.4)
        from features.engine import compute_features

        frame = compute_features(dataset, cutoff)
        names = [f.name for f in model_features(dataset)]
        frame = frame[["customer_id", *names]]
        frame.insert(1, "as_of", cutoff)
        report("writing", 0.9)
        write_frame_atomic(frame, out_file)
    out.print(f"wrote {len(frame):,} customers x {len(names)} features as of {cutoff.date()} to {out_file}")


def parse_date(value: str, option: str) -> pd.Timestamp:
    import pandas as pd

    try:
        return pd.Timestamp(date.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"{option} must be a date like 2026-01-31, not {value!r}") from None


@app.command()
def train(
    data: DataDir,
    horizon_days: Annotated[
        int | None,
        typer.Option("--horizon-days", min=7, max=730, help="Churn and CLV horizon in days [default: 90]."),
    ] = None,
    snapshots: Annotated[
        int | None,
        typer.Option("--snapshots", min=2, max=36, help="Training cutoffs, 30 days apart [default: 6]."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Training config YAML (see docs/train.yaml).", exists=True, dir_okay=False
        ),
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote/--no-promote",
            help="Make the new version champion if it is at least as good as the current one.",
        ),
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Random seed [default: 42].")] = None,
    tune: Annotated[
        int | None,
        typer.Option(
            "--tune",
            min=1,
            max=500,
            help="Search the churn model's parameters with N Optuna trials "
            "(time-split aware) before fitting.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, max=256, help="Threads for DuckDB and LightGBM [default: $CHURNGUARD_THREADS or 2]."
        ),
    ] = None,
    mapping: MappingOpt = None,
) -> None:
    """Build snapshots, fit, evaluate out of time, log to MLflow and register a new version."""
    from features.settings import get_settings
    from training.config import load_train_config
    from training.pipeline import train as run_training
    from training.report import print_result

    settings = get_settings()
    cfg = load_train_config(
        config,
        horizon_days=horizon_days,
        snapshots=snapshots,
        seed=seed,
        threads=threads or settings.threads,
        tune_trials=tune,
    )
    with stage_progress_lazy("training") as report:
        result = run_training(data, cfg, settings, promote=promote, mapping=mapping, report=report)
    print_result(out, result, settings)


@app.command("promote")
def promote_version(
    version: Annotated[str, typer.Argument(help="Registered version number to make champion.")],
) -> None:
    """Make a registered version the champion (the API picks it up without a restart)."""
    from mlflow import MlflowClient

    from features.settings import get_settings
    from training.registry import configure_mlflow, promote

    settings = get_settings()
    configure_mlflow(settings)
    promote(MlflowClient(), settings.model_name, version)
    out.print(f"version {version} of '{settings.model_name}' is now champion")


def stage_progress_lazy(title: str):  # type: ignore[no-untyped-def]
    from training.progress import stage_progress

    return stage_progress(title)


@app.command()
def score(
    data: DataDir,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Output file (.parquet or .csv), written atomically.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Score as of this date YYYY-MM-DD (default: the day after the newest event)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model URI or folder [default: models:/churnguard@champion]."),
    ] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Refresh the serving store the API reads.")
    ] = True,
    mapping: MappingOpt = None,
) -> None:
    """Score every active customer: churn probability, CLV, value at risk, reasons and action."""
    from features.loading import load_dataset
    from features.settings import get_settings
    from features.snapshots import observed_until
    from serving.actions import load_playbook
    from serving.batch import run_batch
    from serving.model_source import load_model
    from serving.settings import get_serving_settings
    from serving.store import SqliteScoreStore
    from training.registry import configure_mlflow

    settings, serving = get_settings(), get_serving_settings()
    if out_file is None and not store:
        raise typer.BadParameter("nothing to do: give --out FILE, or keep --store")
    configure_mlflow(settings)
    with stage_progress_lazy("scoring") as report:
        report("loading model", 0.01)
        loaded = load_model(model or serving.model_uri)
        report("validating input", 0.03)
        dataset = load_dataset(data, mapping)
        cutoff = parse_date(as_of, "--as-of") if as_of else observed_until(dataset)
        result = run_batch(
            dataset,
            cutoff,
            loaded,
            load_playbook(serving.playbook),
            out_file,
            SqliteScoreStore(serving.resolved_store_path(settings)) if store else None,
            top_k=serving.top_k,
            threads=settings.threads,
            report=report,
        )
    where = f" to {out_file}" if out_file else ""
    out.print(
        f"scored {result.customers:,} customers as of {result.as_of}{where} with model "
        f"{loaded.info.name} v{loaded.info.version} in {result.seconds:.1f}s "
        f"({result.per_second:,.0f} customers/s)" + ("; serving store refreshed" if store else "")
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes.")] = 1,
) -> None:
    """Run the scoring API and dashboard under uvicorn."""
    import uvicorn

    out.print(f"serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=True,
    )


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "default") -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from features.settings import get_settings
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings

    store = KeyStore(get_serving_settings().resolved_keys_path(get_settings()))
    record, token = store.create(name)
    console.print(f"created key {record.key_id} ('{name}'); it is shown only now:")
    out.print(token, highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, names, dates; never the keys themselves)."""
    from features.settings import get_settings
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings

    for record in KeyStore(get_serving_settings().resolved_keys_path(get_settings())).records():
        out.print(f"{record.key_id}  {record.created_at}  {record.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id from `churnguard keys list`.")]) -> None:
    """Revoke a key at once."""
    from features.errors import ConfigError
    from features.settings import get_settings
    from serving.keys import KeyStore
    from serving.settings import get_serving_settings

    if not KeyStore(get_serving_settings().resolved_keys_path(get_settings())).revoke(key_id):
        raise ConfigError(f"no key with id {key_id}; see `churnguard keys list`")
    out.print(f"revoked {key_id}")


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=500, help="Customers in the synthetic dataset.")] = 10_000,
    data_dir: Annotated[Path, typer.Option("--data", help="Where the demo data lives.")] = Path("data/demo"),
    retrain: Annotated[bool, typer.Option(help="Train again even if a champion exists.")] = False,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the API when ready.")] = True,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """The whole job on embedded defaults: synthetic data, train, register, score, key, serve."""
    from mlflow import MlflowClient

    from features.loading import load_dataset
    from features.settings import get_settings
    from features.snapshots import observed_until
    from features.synthetic import generate_dataset
    from serving.actions import load_playbook
    from serving.batch import run_batch
    from serving.keys import KeyStore
    from serving.model_source import load_model
    from serving.settings import get_serving_settings
    from serving.store import CustomerQuery, SqliteScoreStore
    from training.config import TrainConfig
    from training.pipeline import train as run_training
    from training.registry import CHAMPION, configure_mlflow, version_by_alias
    from training.report import print_result

    settings, serving = get_settings(), get_serving_settings()
    if not (data_dir / "transactions.parquet").exists():
        with stage_progress_lazy("generating") as report:
            generate_dataset(data_dir, customers, seed=settings.seed, progress=report)
    configure_mlflow(settings)
    if retrain or version_by_alias(MlflowClient(), settings.model_name, CHAMPION) is None:
        with stage_progress_lazy("training") as report:
            result = run_training(data_dir, TrainConfig(threads=settings.threads), settings, report=report)
        print_result(out, result, settings)
    loaded = load_model(serving.model_uri)
    dataset = load_dataset(data_dir)
    scores_file = settings.home / "demo_scores.csv"
    with stage_progress_lazy("scoring") as report:
        batch = run_batch(
            dataset,
            observed_until(dataset),
            loaded,
            load_playbook(serving.playbook),
            scores_file,
            SqliteScoreStore(serving.resolved_store_path(settings)),
            top_k=serving.top_k,
            threads=settings.threads,
            report=report,
        )
    _, key = KeyStore(serving.resolved_keys_path(settings)).create("demo")
    store = SqliteScoreStore(serving.resolved_store_path(settings))
    top, _ = store.query(CustomerQuery(limit=1))
    example = top[0]["customer_id"] if top else "C0000001"
    base = f"http://127.0.0.1:{port}"
    out.print(
        f"""
[bold]churnguard demo is ready[/]: model v{loaded.info.version}, {batch.customers:,} customers scored \
({batch.per_second:,.0f}/s), scores in {scores_file}

  API key (shown once):  {key}
  Dashboard:             {base}/  (sign in with the key)
  API docs:              {base}/docs

Try:
  curl -H "Authorization: Bearer {key}" {base}/v1/customers/{example}
  curl -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
       -d '{{"records": [{{"features": {{"recency_days": 94, "unresolved_complaints_90d": 2}}}}]}}' {base}/v1/score
  .venv/bin/churnguard score --data {data_dir} --out scores.csv
  .venv/bin/mlflow ui --backend-store-uri {settings.resolved_tracking_uri()}
""",
        highlight=False,
        soft_wrap=True,
    )
    if serve_api:
        serve(host="127.0.0.1", port=port, workers=1)
