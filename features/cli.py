"""The root ``churnguard`` command and the data commands (generate, contract, validate, features).

Each package owns its commands: training's and serving's Typer apps are found through the
``churnguard.commands`` entry points in ``pyproject.toml`` and merged in here, so this package imports
neither. Heavy imports happen inside the commands, so ``--help`` stays fast.

Exit codes: 0 done; 2 a usage mistake or a problem in the user's data, options or configuration (one clear
message, never a traceback); 1 an unexpected error (a bug: asks for a report); 130 interrupted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from datetime import date
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape  # data values in messages print as text, never as markup
from typer.core import TyperGroup

from features.errors import ChurnguardError, RenamedSettingWarning

if TYPE_CHECKING:
    import pandas as pd

    from features.loading import Dataset

ENTRY_POINT_GROUP = "churnguard.commands"

console = Console(stderr=True)
out = Console()


class ChurnguardGroup(TyperGroup):
    """Typer's own handling of usage mistakes (usage text, exit 2), plus the project's error policy for
    everything a command raises: user errors are one line and exit 2, anything else is a reported bug."""

    def invoke(self, ctx: Any) -> Any:  # typer's bundled click.Context
        with warnings.catch_warnings():  # puts the display in force back afterwards
            warnings.showwarning = _renamed_as_one_line(warnings.showwarning)
            return self._invoke(ctx)

    def _invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # usage errors, --help, explicit exits: typer/click report them as usual
        except ChurnguardError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:  # a CHURNGUARD_* setting the settings class refused
            console.print(
                f"[bold red]error:[/] {escape(_settings_message(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: nothing was written")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("CHURNGUARD_DEBUG"):
                raise
            console.print(
                f"[bold red]unexpected error:[/] {exc.__class__.__name__}: {escape(str(exc))}. This is a bug "
                "in churnguard, not in your input: please report it (CHURNGUARD_DEBUG=1 shows the traceback).",
                highlight=False,
            )
            raise typer.Exit(1) from None


def _renamed_as_one_line(show: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing a renamed setting or config key as one line that names the new
    name, as errors are printed; other warnings go to ``show``, the display in force."""

    def shown(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, RenamedSettingWarning):
            console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            show(message, category, *args, **kwargs)

    return shown


def _settings_message(exc: ValidationError) -> str:
    """A refused setting named as the user sets it (``CHURNGUARD_STORE_URL``), with what is wrong; the
    value itself is not echoed (it may be a secret)."""
    problems = [
        f"CHURNGUARD_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
        for error in exc.errors()
    ]
    return "a setting is not valid: " + "; ".join(problems) + " (fix the environment variable, or unset it)"


def _typer(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        cls=ChurnguardGroup,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        # Plain click help: typer's rich panels print "--help <bool>" for every flag and read "[default: 90]"
        # in help texts as markup (it vanished, leaving "horizon in days .").
        rich_markup_mode=None,
    )


app = _typer("Predict churn, customer value, reasons and retention actions from purchase and service data.")

# -- options shared by the packages' commands ---------------------------------------------------------
DataDir = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Folder with transactions (+ optional customers, interactions, cancellations) as CSV or Parquet.",
    ),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping", help="Column-mapping YAML (default: columns.yaml inside the data folder, if present)."
    ),
]
DuplicatesOpt = Annotated[
    str | None,
    typer.Option(
        "--duplicates",
        help="Exact duplicate rows: drop (default, counted and reported), keep, or fail. "
        "Overrides `duplicates:` in columns.yaml.",
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="duckdb (one machine, the default) or spark (the `spark` extra; master and settings from "
        "CHURNGUARD_SPARK_MASTER / CHURNGUARD_SPARK_CONF). Default: $CHURNGUARD_ENGINE, else duckdb.",
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Cutoff date YYYY-MM-DD: only events strictly before it are used "
        "(default: the day after the newest event).",
    ),
]


def command_app(help_text: str) -> typer.Typer:
    """A package's own Typer app, with the same error policy as the root (merged into it at start)."""
    return _typer(help_text)


def checked_cutoff(dataset: Dataset, requested: pd.Timestamp | None) -> pd.Timestamp:
    """The as-of date in force: the one asked for, if the data can describe it, else the default (the day
    after the newest event). A date before the first event or after the data's end is a usage mistake."""
    from datetime import timedelta

    from features.snapshots import observed_until

    end = observed_until(dataset)
    if requested is None:
        return end
    first = dataset.transactions["timestamp"].min()
    if requested > end or requested <= first:
        raise typer.BadParameter(
            f"--as-of {requested.date()} is outside the data, which covers {first.date()} to "
            f"{(end - timedelta(days=1)).date()}: choose a date from {(first + timedelta(days=1)).date()} "
            f"to {end.date()} (the default, the day after the newest event)"
        )
    return requested


def parse_date(value: str, option: str) -> pd.Timestamp:
    """A ``YYYY-MM-DD`` option value as a timestamp; a usage error (exit 2) otherwise."""
    import pandas as pd

    try:
        return pd.Timestamp(date.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"{option} must be a date like 2026-01-31, not {value!r}") from None


# -- data commands ------------------------------------------------------------------------------------
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
    if_missing: Annotated[
        bool,
        typer.Option("--if-missing", help="Do nothing when --out already holds a dataset (for scripts)."),
    ] = False,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="The world to simulate: base, seasonal, growth, decline, single_cohort, contract_only, "
            "purchase_log, shop_export or drift (`churnguard generate --list-scenarios` says what each is).",
        ),
    ] = "base",
    list_scenarios: Annotated[
        bool, typer.Option("--list-scenarios", help="Print the scenarios with what each changes, and stop.")
    ] = False,
    referrals: Annotated[
        bool,
        typer.Option(
            "--referrals",
            help="Also write referrals.<format>: who referred each customer acquired through the referral "
            "channel (gives scores a referral_value; worlds with the contract tables).",
        ),
    ] = False,
) -> None:
    """Write a realistic synthetic CRM dataset (and its ground truth, in a separate folder).

    Each scenario is a different world with its own oracle in the truth folder, so models can be judged
    on more than one kind of business."""
    from typing import Literal, cast

    from features.errors import ConfigError
    from features.progress import stage_progress
    from features.synthetic import SCENARIOS, Scenario, generate_dataset

    if list_scenarios:
        for name, description in SCENARIOS.items():
            out.print(f"{name:<14} {description}", highlight=False)
        return
    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"--scenario must be one of {', '.join(SCENARIOS)}, not {scenario!r}")
    if file_format not in ("parquet", "csv"):
        raise typer.BadParameter("--format must be parquet or csv")
    if out_dir.exists() and any(out_dir.iterdir()):
        if if_missing:
            out.print(f"{out_dir} already holds a dataset; kept as it is")
            return
        raise ConfigError(f"{out_dir} already holds files; choose an empty --out folder or delete it first")
    with stage_progress("generating") as report:
        summary = generate_dataset(
            out_dir,
            customers,
            seed,
            truth_dir=truth_dir,
            file_format=cast(Literal["parquet", "csv"], file_format),
            progress=report,
            scenario=Scenario(scenario, referrals=referrals),
        )
    referred = f", {summary.n_referrals:,} referrals" if referrals else ""
    out.print(
        f"wrote {summary.n_customers:,} customers, {summary.n_transactions:,} transactions, "
        f"{summary.n_interactions:,} interactions, {summary.n_cancellations:,} cancellations{referred} "
        f"to {summary.out_dir} in {summary.seconds:.1f}s (ground truth: {summary.truth_dir})"
    )


@app.command()
def contract() -> None:
    """Print the input data contract: tables, columns, types and meaning."""
    from features.loading import describe_contract

    for line in describe_contract():
        out.print(line, highlight=False)


def duplicates_policy(value: str | None) -> str | None:
    """The ``--duplicates`` value, checked (a usage error names the choices)."""
    if value is not None and value not in ("drop", "keep", "fail"):
        raise typer.BadParameter(f"--duplicates must be drop, keep or fail, not {value!r}")
    return value


@app.command()
def validate(data: DataDir, mapping: MappingOpt = None, duplicates: DuplicatesOpt = None) -> None:
    """Check a data folder against the contract and account for every row: read, kept, netted (returns),
    grouped into orders, and dropped by reason. Exits non-zero on any problem."""
    from features.loading import format_load_report, load_dataset

    dataset = load_dataset(data, mapping, duplicates=duplicates_policy(duplicates))
    for line in format_load_report(dataset):
        out.print(line, highlight=False, soft_wrap=True)
    fp = dataset.fingerprint()
    out.print(f"valid: {fp['rows']} from {fp['first_date']} to {fp['last_date']}")


@app.command()
def features(
    data: DataDir,
    out_file: Annotated[Path, typer.Option("--out", help="Output file (.parquet or .csv).")],
    as_of: AsOfOpt = None,
    mapping: MappingOpt = None,
    duplicates: DuplicatesOpt = None,
    engine: EngineOpt = None,
) -> None:
    """Compute one row of point-in-time features per customer known at the as-of date.

    With --engine spark, Spark reads the folder itself and writes --out as a Parquet folder."""
    if chosen_engine(engine) == "spark":
        _features_on_spark(data, out_file, as_of, mapping, duplicates)
        return
    from features.engine import compute_features
    from features.io import write_frame_atomic
    from features.loading import load_dataset
    from features.progress import stage_progress
    from features.snapshots import model_features

    requested = parse_date(as_of, "--as-of") if as_of else None
    policy = duplicates_policy(duplicates)
    with stage_progress("features") as report:
        report("validating input", 0.1)
        dataset = load_dataset(data, mapping, duplicates=policy)
        cutoff = checked_cutoff(dataset, requested)
        report("computing features", 0.4)
        frame = compute_features(dataset, cutoff)
        names = [f.name for f in model_features(dataset)]
        frame = frame[["customer_id", *names]]
        frame.insert(1, "as_of", cutoff)
        report("writing", 0.9)
        write_frame_atomic(frame, out_file)
    out.print(f"wrote {len(frame):,} customers x {len(names)} features as of {cutoff.date()} to {out_file}")


def chosen_engine(value: str | None) -> str:
    """The ``--engine`` in force: the option, else the settings' (``CHURNGUARD_ENGINE``), checked."""
    from features.settings import get_settings

    engine = value or get_settings().engine
    if engine not in ("duckdb", "spark"):
        raise typer.BadParameter(f"--engine must be duckdb or spark, not {engine!r}")
    if engine == "spark":
        import shutil
        from importlib.util import find_spec

        from features.errors import ConfigError

        if find_spec("pyspark") is None:
            raise ConfigError("--engine spark needs pyspark: pip install 'churnguard[spark]'")
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise ConfigError("--engine spark needs Java 17 or newer (java not found on PATH; set JAVA_HOME)")
    return engine


def _features_on_spark(
    data: Path, out_file: Path, as_of: str | None, mapping: Path | None, duplicates: str | None
) -> None:
    from features.engine.spark_jobs import FeatureRequest, write_features
    from features.progress import stage_progress
    from features.settings import get_settings

    request = FeatureRequest(
        data,
        out_file,
        parse_date(as_of, "--as-of") if as_of else None,
        mapping,
        duplicates_policy(duplicates),
    )
    with stage_progress("features (spark)") as report:
        report("reading and checking on Spark", 0.1)
        written = write_features(get_settings(), request)
    out.print(
        f"wrote {written.customers:,} customers x {len(written.features)} features as of "
        f"{written.as_of.date()} to {out_file} (Parquet folder, Spark)"
    )


def _merge_package_commands() -> None:
    """Add every installed package's commands (``churnguard.commands`` entry points) to the root app."""
    if getattr(app, "_churnguard_merged", False):
        return
    for entry in entry_points(group=ENTRY_POINT_GROUP):  # in pyproject.toml's order
        app.add_typer(entry.load())
    app._churnguard_merged = True  # type: ignore[attr-defined]


def build_app() -> typer.Typer:
    """The whole ``churnguard`` command: data commands plus the packages' own."""
    _merge_package_commands()
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()(prog_name="churnguard")
