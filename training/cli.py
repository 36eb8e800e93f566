"""Training's commands (train, promote, models), merged into the root ``churnguard`` command through the
``churnguard.commands`` entry point. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.cli import DataDir, MappingOpt, command_app, out

app = command_app("Fit, evaluate, register and promote models.")


@app.command()
def train(
    data: DataDir,
    horizon_days: Annotated[
        int | None,
        typer.Option(
            "--horizon-days",
            min=7,
            max=730,
            help="Horizon of churn and the revenue forecast, in days [default: 90].",
        ),
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
            help="Search the churn model's parameters with N Optuna trials (time-split aware) before fitting.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, max=256, help="Threads for DuckDB and LightGBM [default: $CHURNGUARD_THREADS or 2]."
        ),
    ] = None,
    if_no_champion: Annotated[
        bool,
        typer.Option(
            "--if-no-champion",
            help="Train only when no version is champion yet (for scripts such as make demo).",
        ),
    ] = False,
    mapping: MappingOpt = None,
    economics: Annotated[
        Path | None,
        typer.Option(
            "--economics",
            help="Economics YAML (gross margin, costs to serve, discount rate): value becomes contribution "
            "[default: $CHURNGUARD_ECONOMICS; without one, value is revenue].",
        ),
    ] = None,
) -> None:
    """Build snapshots, fit, evaluate out of time, log to MLflow and register a new version."""
    from features.economics import economics_from_env
    from features.progress import stage_progress
    from features.settings import get_settings
    from training.config import load_train_config
    from training.pipeline import Business
    from training.pipeline import train as run_training
    from training.report import print_result

    settings = get_settings()
    if if_no_champion:
        from mlflow import MlflowClient

        from training.registry import CHAMPION, configure_mlflow, version_by_alias

        configure_mlflow(settings)
        current = version_by_alias(MlflowClient(), settings.model_name, CHAMPION)
        if current is not None:
            out.print(f"version {current} of '{settings.model_name}' is champion already; not training")
            return
    cfg = load_train_config(
        config,
        horizon_days=horizon_days,
        snapshots=snapshots,
        seed=seed,
        threads=threads or settings.threads,
        tune_trials=tune,
    )
    with stage_progress("training") as report:
        result = run_training(
            data,
            cfg,
            settings,
            promote=promote,
            mapping=mapping,
            report=report,
            business=Business(economics=economics_from_env(economics)),
        )
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


@app.command("models")
def list_models() -> None:
    """List the registered versions with their aliases and promotion verdicts."""
    from mlflow import MlflowClient

    from features.settings import get_settings
    from training.registry import configure_mlflow, registered_versions

    settings = get_settings()
    configure_mlflow(settings)
    rows = registered_versions(MlflowClient(), settings.model_name)
    if not rows:
        out.print(f"no versions of '{settings.model_name}' yet: train one with `churnguard train`")
        return
    for row in rows:
        out.print(
            f"v{row.version}  {row.created:%Y-%m-%d %H:%M}  {','.join(row.aliases) or '-':<20} {row.verdict}",
            highlight=False,
        )
