"""The churnguard command line as a new user tries it from the README."""

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
    "demo",
    "keys",
    "keys create",
    "keys list",
    "keys revoke",
]


def churnguard(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from training.cli import main; main()", *args],
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


@pytest.mark.slow
def test_demo_on_its_defaults_promotes_a_champion_and_prints_what_to_try(tmp_path: Path) -> None:
    """`make demo`'s own path (everything but serving): the first model trained on the default data must
    pass the calibration guard and become champion, or there is nothing to serve."""
    env = {**os.environ, "CHURNGUARD_HOME": str(tmp_path / "models")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-c", "from training.cli import main; main()", "demo", "--no-serve"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "not promoted" not in result.stdout
    assert "churnguard demo is ready" in result.stdout and "model v1" in result.stdout
    assert "/v1/customers/C" in result.stdout and "Authorization: Bearer cg_" in result.stdout.replace("\n", "")
    scores = pd.read_csv(tmp_path / "models" / "demo_scores.csv")
    assert len(scores) > 1000 and scores["reasons"].str.len().min() > 2
