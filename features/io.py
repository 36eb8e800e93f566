"""Atomic writes: a file or a whole folder is built in a hidden temporary sibling and renamed into place.

A crash or Ctrl-C never leaves a partial file or a half-written folder, and an earlier output stays
intact until replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from features.errors import ConfigError

SUFFIXES = (".parquet", ".csv")


def write_frame_atomic(frame: pd.DataFrame, path: Path, *, csv_encoding: str = "utf-8") -> None:
    """Write ``frame`` to a .parquet or .csv file atomically (``csv_encoding="utf-8-sig"`` starts a CSV
    with the byte-order mark spreadsheet programs look for)."""
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
            # CRLF rows (RFC 4180): Python's writer then quotes cells holding a bare CR, which \n rows leave
            # unquoted, splitting the row when read back.
            frame.to_csv(tmp, index=False, encoding=csv_encoding, lineterminator="\r\n")
        with tmp.open("rb") as done:
            os.fsync(done.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -------------------------------------------------------------------------------- staged folders


def ensure_empty_dir(target: Path) -> None:
    """Refuse to overwrite: an existing non-empty folder (or a file) is the caller's to delete.

    Raises ``FileExistsError`` naming the folder and the fix.
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(
            f"{target} already exists and is not empty; delete it or choose another folder "
            "(generated data is never written over existing files)."
        )


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A hidden temporary sibling of ``target`` to build a folder in.

    It lives on the same file system as ``target``, so :func:`publish_dirs` can rename it into place
    atomically; it is removed on exit unless it has been renamed into place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish_dirs(*moves: tuple[Path, Path]) -> None:
    """Rename each staged folder onto its target, in order, all or nothing.

    An existing empty target is replaced, a non-empty one refused with ``FileExistsError``. If a later
    rename fails, the folders already published are moved back to their staging paths (and so removed
    with them): readers never see one folder of a set without the others.
    """
    done: list[tuple[Path, Path]] = []
    try:
        for source, target in moves:
            rename_into_place(source, target)
            done.append((source, target))
    except BaseException:
        for source, target in reversed(done):
            os.replace(target, source)
        raise


def rename_into_place(source: Path, target: Path) -> None:
    """Atomic rename of a folder; if the target was filled meanwhile, say so as ``FileExistsError``."""
    try:
        os.replace(source, target)  # atomic; replaces only an empty directory
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            ensure_empty_dir(target)
        raise
