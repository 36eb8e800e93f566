"""Atomic writes: a temp file in the target folder, renamed into place only when complete.

A crash or Ctrl-C never leaves a partial file, and an earlier output stays intact until replaced.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from features.errors import ConfigError

SUFFIXES = (".parquet", ".csv")


def write_frame_atomic(frame: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{path}: output must end in .parquet or .csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        with tmp.open("rb") as done:
            os.fsync(done.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
