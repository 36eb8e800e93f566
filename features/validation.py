"""Value checks of the data contract, declared as pandera schemas built from the contract's specs."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.contract import Kind, TableSpec
from features.errors import DataProblem

_EARLIEST = pd.Timestamp("1970-01-01")


def _bound(limit: float, op: str) -> pa.Check:
    if op == ">=":
        return pa.Check(lambda s: s >= limit, name=f"at least {limit:g}")
    return pa.Check(lambda s: s <= limit, name=f"at most {limit:g}")


def _column_checks(spec: TableSpec, now: pd.Timestamp) -> dict[str, pa.Column]:
    columns: dict[str, pa.Column] = {}
    for column in spec.columns:
        checks: list[pa.Check] = []
        if column.kind in (Kind.FLOAT, Kind.INT):
            checks.append(pa.Check(lambda s: ~s.isin([float("inf"), float("-inf")]), name="finite"))
            if column.minimum is not None:
                checks.append(_bound(column.minimum, ">="))
            if column.maximum is not None:
                checks.append(_bound(column.maximum, "<="))
            if column.kind is Kind.INT:
                checks.append(pa.Check(lambda s: s.isna() | (s == s.round()), name="whole number"))
        if column.kind is Kind.TIMESTAMP:
            checks.append(pa.Check(lambda s, now=now: s <= now, name="not in the future"))
            checks.append(pa.Check(lambda s: s >= _EARLIEST, name="not before 1970"))
        columns[column.name] = pa.Column(checks=checks, nullable=True, required=False)
    return columns


_HINTS = {
    "finite": "replace infinite values with real figures",
    "whole number": "use whole numbers",
    "not in the future": "events cannot lie after today: check the date format (day and month swapped?) "
    "or the clock of the export",
    "not before 1970": "check the date format or remove placeholder dates",
}


def check_values(
    frame: pd.DataFrame, spec: TableSpec, where: str, now: pd.Timestamp, problems: list[DataProblem]
) -> None:
    """Append a DataProblem for every failing check and for exact duplicate rows."""
    schema = pa.DataFrameSchema(_column_checks(spec, now), strict=False, coerce=False)
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases[cases["column"].notna() & cases["check"].notna()]
        for (column, check), group in cases.groupby(["column", "check"], sort=False):
            check_name = str(check)
            hint = _HINTS.get(check_name, f"values must be {check_name}: correct or remove those rows")
            problems.append(
                DataProblem(
                    where,
                    str(column),
                    f"has values that break '{check_name}'",
                    hint,
                    len(group),
                    group["failure_case"].head(5).tolist(),
                )
            )
    key = frame.columns.tolist()
    duplicated = frame.duplicated(subset=key, keep="first")
    if duplicated.any():
        examples = frame.loc[duplicated, key[:3]].head(3).to_dict("records")
        problems.append(
            DataProblem(
                where,
                None,
                "has exact duplicate rows",
                "remove the repeated rows (or add an order_id that tells them apart)",
                int(duplicated.sum()),
                examples,
            )
        )
