"""The churnguard command line as a new user tries it from the README: the root command, its data
commands, and the usage mistakes a first hour brings (typer's usage message and exit 2, never "a bug")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

COMMANDS = [
    "generate",
    "contract",
    "validate",
    "features",
    "train",
    "promote",
    "score",
    "serve",
    "models",
    "keys",
    "keys create",
    "keys list",
    "keys revoke",
]


def churnguard(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from features.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = churnguard(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert "<bool>" not in result.stdout, "flags take no value: the help must not show one"
    assert " ,\n" not in result.stdout and "days ." not in result.stdout, "text lost from the help (markup?)"


def test_generate_then_features_as_in_the_readme(tmp_path: Path) -> None:
    data = tmp_path / "shop"
    generated = churnguard("generate", "--customers", "300", "--seed", "3", "--out", str(data))
    assert generated.returncode == 0, generated.stderr
    assert (data / "transactions.parquet").exists() and (tmp_path / "shop-truth").is_dir()
    out = tmp_path / "features.csv"
    result = churnguard("features", "--data", str(data), "--as-of", "2026-01-01", "--out", str(out))
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert {"customer_id", "as_of", "recency_days", "unresolved_complaints_90d"} <= set(frame.columns)
    assert frame["customer_id"].is_unique and len(frame) > 50
    again = churnguard("generate", "--customers", "300", "--out", str(data))
    assert again.returncode == 2 and "already holds files" in again.stderr
    kept = churnguard("generate", "--customers", "300", "--out", str(data), "--if-missing")
    assert kept.returncode == 0 and "kept as it is" in kept.stdout


def test_a_shop_export_scenario_validates_through_its_own_columns_yaml(tmp_path: Path) -> None:
    listed = churnguard("generate", "--list-scenarios")
    assert listed.returncode == 0 and "shop_export" in listed.stdout and "seasonal" in listed.stdout
    data = tmp_path / "shop"
    made = churnguard("generate", "--scenario", "shop_export", "--customers", "300", "--out", str(data))
    assert made.returncode == 0, made.stderr
    assert (data / "invoices.csv").exists() and (data / "columns.yaml").exists()
    result = churnguard("validate", "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_generate_with_referrals_writes_a_table_the_loader_reports(tmp_path: Path) -> None:
    """``--referrals`` adds the referrals table (counted in the summary line) and ``validate`` loads it;
    a world without the contract tables refuses it in one line."""
    data = tmp_path / "shop"
    made = churnguard("generate", "--customers", "400", "--out", str(data), "--referrals")
    assert made.returncode == 0, made.stderr
    written = len(pd.read_parquet(data / "referrals.parquet"))
    assert written > 20 and f"{written:,} referrals" in " ".join(made.stdout.split())
    result = churnguard("validate", "--data", str(data))
    assert result.returncode == 0 and "referrals" in result.stdout, result.stdout + result.stderr
    log = churnguard("generate", "--scenario", "purchase_log", "--out", str(tmp_path / "log"), "--referrals")
    assert log.returncode == 2 and "referrals need a world with the contract tables" in log.stderr


@pytest.mark.parametrize("as_of", ["2030-01-01", "1990-06-30"])
def test_an_as_of_date_outside_the_data_is_refused_naming_the_data_range(tmp_path: Path, as_of: str) -> None:
    data = tmp_path / "shop"
    assert churnguard("generate", "--customers", "200", "--seed", "1", "--out", str(data)).returncode == 0
    out = tmp_path / "features.csv"
    result = churnguard("features", "--data", str(data), "--as-of", as_of, "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "outside the data, which covers" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_data_is_one_clear_message_and_nothing_written(tmp_path: Path) -> None:
    data = tmp_path / "bad"
    data.mkdir()
    (data / "transactions.csv").write_text("customer_id,timestamp,amount\nA,2024-01-05,ten\nB,05/01/2024,3\n")
    out = tmp_path / "features.parquet"
    result = churnguard("features", "--data", str(data), "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "transactions.csv" in result.stderr and "'amount'" in result.stderr and "'ten'" in result.stderr
    assert "'timestamp'" in result.stderr and "date_format" in result.stderr
    assert not out.exists()


def test_plain_purchase_log_with_column_mapping(tmp_path: Path) -> None:
    data = tmp_path / "shop"
    data.mkdir()
    rows = ["CustID;OrderDate;Total"] + [
        f"c{i % 7};{1 + i % 28:02d}/{1 + i % 12:02d}/2025;{10 + i}" for i in range(80)
    ]
    (data / "orders.csv").write_text("\n".join(rows), encoding="latin-1")
    (data / "columns.yaml").write_text(
        "transactions:\n  file: orders.csv\n  columns: {customer_id: CustID, timestamp: OrderDate, amount: Total}\n"
        "  date_format: '%d/%m/%Y'\n  encoding: latin-1\n"
    )
    # ';' separated files are not CSV to pandas' default reader: the error must say what is wrong
    result = churnguard("validate", "--data", str(data))
    assert result.returncode == 2 and "CustID" in result.stderr
    (data / "orders.csv").write_text("\n".join(r.replace(";", ",") for r in rows), encoding="latin-1")
    result = churnguard("validate", "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


USAGE_MISTAKES = [
    ("features", "--data", "x", "--out", "y.csv", "--as-of", "notadate"),
    ("generate", "--customers", "0"),
    ("validate", "--data", "x", "--no-such-option"),
    ("no-such-command",),
    ("score", "--data", "x", "--as-of", "2026-13-45"),
    ("keys", "create", "--name", " "),
    ("keys", "create", "--name", ""),
    ("train",),
    ("generate", "--scenario", "mars"),
]


@pytest.mark.parametrize("args", USAGE_MISTAKES, ids=lambda a: " ".join(a))
def test_usage_mistakes_get_usage_help_and_exit_2_not_a_bug_report(args: tuple[str, ...]) -> None:
    result = churnguard(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bug" not in result.stderr.lower() and "Traceback" not in result.stderr
    assert "Usage" in result.stderr or "--help" in result.stderr


def test_a_setting_the_environment_gets_wrong_is_one_clear_line_not_a_bug(tmp_path: Path) -> None:
    env = {**os.environ, "CHURNGUARD_HOME": str(tmp_path), "CHURNGUARD_THREADS": "0"}
    result = churnguard("keys", "list", env=env)
    assert result.returncode == 2, result.stderr
    assert "CHURNGUARD_THREADS" in result.stderr and "bug" not in result.stderr.lower()


def test_a_missing_version_points_to_a_command_that_exists(tmp_path: Path) -> None:
    env = {**os.environ, "CHURNGUARD_HOME": str(tmp_path / "models")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = churnguard("promote", "99", env=env)
    assert result.returncode == 2 and "churnguard models" in result.stderr
    listed = churnguard("models", env=env)
    assert listed.returncode == 0 and "no versions" in listed.stdout
