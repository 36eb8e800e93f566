"""Where the Ibis expressions of :mod:`features.build` meet an engine: embedded DuckDB by default, Apache
Spark for data that does not fit one machine.

The only engine-specific package of ``features`` (an import contract in ``pyproject.toml`` keeps DuckDB
and pyspark out of every other module): :mod:`features.engine.duckdb` runs the expressions on a loaded
:class:`~features.loading.Dataset`, :mod:`features.engine.spark` on tables Spark reads from the data
folder itself, and :mod:`features.engine.hashing` finds repeated rows for the loader.

The DuckDB functions are re-exported here, loaded on first use so that importing the package (as the
loader does) does not import Ibis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from features.engine.duckdb import compute_features, compute_labels, duckdb_tables, to_frame

__all__ = ["ENGINES", "EngineName", "compute_features", "compute_labels", "duckdb_tables", "to_frame"]

EngineName = Literal["duckdb", "spark"]
ENGINES: tuple[EngineName, ...] = ("duckdb", "spark")
_DUCKDB_NAMES = frozenset({"compute_features", "compute_labels", "duckdb_tables", "to_frame"})


def __getattr__(name: str) -> Any:
    if name in _DUCKDB_NAMES:
        from features.engine import duckdb

        return getattr(duckdb, name)
    raise AttributeError(f"module 'features.engine' has no attribute {name!r}")
