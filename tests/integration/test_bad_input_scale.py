"""Malformed inputs at scale: hundreds of broken CSV and Parquet files made from one valid small dataset.

Every case must end in a fully valid Dataset or a DataValidationError naming the broken file, never in any
other exception; cases that certainly break the contract must be refused. A sample goes through the real
``churnguard features`` command: exit code 2, one line per problem naming the file, no traceback, no output.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.errors import DataValidationError
from features.loading import Dataset, load_dataset
from tests.integration.servers import child_env, run_cli

pytestmark = pytest.mark.integration

TABLES = ("transactions", "customers", "interactions", "cancellations")
SEED = 20260101
CLI_SAMPLE = 10


@dataclass(frozen=True)
class Case:
    """One broken data folder: which table is broken, how, and whether the contract surely forbids it."""

    name: str
    category: str
    table: str
    suffix: str  # ".csv" or ".parquet": the broken table's file
    make: Callable[[Path], None]  # writes the broken table file into the folder
    must_reject: bool | None  # None: either outcome is sound (e.g. a cut exactly at a row end)


# ----------------------------------------------------------------------------------------------- base data


def _base_frames(small_data: Path) -> dict[str, pd.DataFrame]:
    """A valid dataset of ~130 customers cut from the session's generated data (keeps each case fast)."""
    frames = {t: pd.read_parquet(small_data / f"{t}.parquet") for t in TABLES}
    keep = set(frames["customers"]["customer_id"].head(120)) | set(
        frames["cancellations"]["customer_id"].head(10)
    )
    return {t: f[f["customer_id"].isin(keep)].reset_index(drop=True) for t, f in frames.items()}


def _csv_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the text a CSV export holds (blank for missing)."""
    return frame.astype(object).where(frame.notna(), "").astype(str)


def _write_folder(folder: Path, base: dict[str, pd.DataFrame], broken: str, suffix: str) -> None:
    """Every table but the broken one, valid, as CSV (the broken one is written by the case)."""
    folder.mkdir(parents=True)
    for table, frame in base.items():
        if table != broken:
            frame.to_csv(folder / f"{table}.csv", index=False)


# ------------------------------------------------------------------------------------------ case builders

# (table, column, value, must_reject): one bad value written into some rows of a CSV export.
CELL_VALUES: list[tuple[str, str, str, bool | None]] = [
    *[
        ("transactions", "amount", v, True)
        for v in ("abc", "12,50", "€5", "inf", "-inf", "Infinity", "1e400")
    ],
    *[("transactions", "amount", v, True) for v in ("-1e400", "NaN", "nan", "0x1F", "[/bold]", "[red]x")],
    ("transactions", "amount", "-5", None),  # a return line (credit note): netted into spend
    *[("transactions", "amount", v, None) for v in ("1e308", "9" * 400, "1_000", "  ")],
    *[
        ("transactions", "timestamp", v, True)
        for v in ("1800-01-01", "2200-01-01", "2024-02-31", "31/02/2024")
    ],
    *[("transactions", "timestamp", v, True) for v in ("2024-13-01", "0000-00-00", "yesterday", "1e308")],
    *[("transactions", "timestamp", v, True) for v in ("2024-01-01T25:00:00", "1969-12-31", "")],
    *[("transactions", "quantity", v, True) for v in ("1.5", "-1", "1e400", "two")],
    *[("transactions", "quantity", v, None) for v in ("NaN", "1e308")],
    *[("transactions", "discount", v, True) for v in ("-1", "inf", "abc", "1e400")],
    *[("transactions", "returned", v, True) for v in ("maybe", "2")],
    *[("transactions", "returned", v, None) for v in ("TRUE", "yes", "nan")],
    *[("transactions", "delivery_delay_days", v, True) for v in ("-3", "inf", "x")],
    *[("transactions", "customer_id", v, None) for v in ("", "  ")],  # guest rows: skipped, counted
    ("transactions", "customer_id", "NOT-A-CUSTOMER", True),
    *[("interactions", "satisfaction", v, True) for v in ("0", "6", "inf", "bad")],
    ("interactions", "satisfaction", "NaN", None),
    *[("interactions", "nps", v, True) for v in ("11", "-1", "1e400")],
    *[("interactions", "resolution_hours", v, True) for v in ("-1", "inf")],
    *[("interactions", "timestamp", v, True) for v in ("2200-01-01", "1800-01-01", "31/02/2024")],
    *[("interactions", "type", v, None) for v in ("", "weird")],
    *[("customers", "signup_date", v, True) for v in ("2200-01-01", "31/02/2024", "1800-06-01")],
    *[("cancellations", "timestamp", v, True) for v in ("2200-01-01", "bad")],
]


def _cell_case(
    base: dict[str, pd.DataFrame],
    table: str,
    column: str,
    value: str,
    must: bool | None,
    rows: int,
    seed: int,
) -> Case:
    def make(folder: Path) -> None:
        text = _csv_text(base[table])
        picked = random.Random(seed).sample(range(len(text)), min(rows, len(text)))
        text.loc[picked, column] = value
        text.to_csv(folder / f"{table}.csv", index=False)

    return Case(f"{table}.{column}={value[:12]!r}x{rows}", "cell:" + column, table, ".csv", make, must)


def _bytes_case(name: str, category: str, table: str, suffix: str, data: bytes, must: bool | None) -> Case:
    def make(folder: Path) -> None:
        (folder / f"{table}{suffix}").write_bytes(data)

    return Case(name, category, table, suffix, make, must)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def _parquet_bytes(frame: pd.DataFrame | pa.Table) -> bytes:
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _latin1(csv: bytes) -> bytes:
    """The export re-encoded as latin-1 with one accented character (an 'é' after the first value)."""
    head, first, rest = csv.decode("utf-8").split("\n", 2)
    return "\n".join([head, first.replace(",", "\u00e9,", 1), rest]).encode("latin-1")


def _whole_file_cases(base: dict[str, pd.DataFrame], rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    for table, frame in base.items():
        csv, parquet = _csv_bytes(frame), _parquet_bytes(frame)
        header = csv.split(b"\n", 1)[0] + b"\n"
        required = table == "transactions"
        cases += [
            _bytes_case(f"{table} empty csv", "empty", table, ".csv", b"", True),
            _bytes_case(f"{table} empty parquet", "empty", table, ".parquet", b"", True),
            _bytes_case(
                f"{table} header only", "header-only", table, ".csv", header, True if required else None
            ),
            _bytes_case(
                f"{table} parquet no rows",
                "header-only",
                table,
                ".parquet",
                _parquet_bytes(frame.head(0)),
                True if required else None,
            ),
            _bytes_case(f"{table} utf-16", "encoding", table, ".csv", csv.decode().encode("utf-16"), True),
            _bytes_case(f"{table} utf-8 bom", "encoding", table, ".csv", b"\xef\xbb\xbf" + csv, None),
            _bytes_case(f"{table} latin-1 text", "encoding", table, ".csv", _latin1(csv), True),
            _bytes_case(f"{table} semicolons", "delimiter", table, ".csv", csv.replace(b",", b";"), True),
            _bytes_case(
                f"{table} garbage csv", "garbage", table, ".csv", rng.randbytes(rng.randint(1, 4000)), True
            ),
            _bytes_case(
                f"{table} garbage parquet",
                "garbage",
                table,
                ".parquet",
                rng.randbytes(rng.randint(1, 4000)),
                True,
            ),
        ]
        for _ in range(3):
            cut = rng.randint(1, len(csv) - 1)
            cases.append(
                _bytes_case(f"{table} csv cut at {cut}", "truncated", table, ".csv", csv[:cut], None)
            )
        for _ in range(2):
            cut = rng.randint(1, len(parquet) - 1)
            cases.append(
                _bytes_case(
                    f"{table} parquet cut at {cut}", "truncated", table, ".parquet", parquet[:cut], True
                )
            )
    return cases


def _structure_cases(base: dict[str, pd.DataFrame]) -> list[Case]:
    tx, customers = base["transactions"], base["customers"]
    doubled = pd.concat([tx, tx.head(7)], ignore_index=True)
    dup_customers = pd.concat([customers, customers.head(3)], ignore_index=True)
    cases = [
        _bytes_case(
            "transactions duplicated rows csv",
            "duplicates",
            "transactions",
            ".csv",
            _csv_bytes(doubled),
            None,  # dropped with a count by default (--duplicates)
        ),
        _bytes_case(
            "transactions duplicated rows parquet",
            "duplicates",
            "transactions",
            ".parquet",
            _parquet_bytes(doubled),
            None,  # dropped with a count by default (--duplicates)
        ),
        _bytes_case(
            "interactions duplicated rows",
            "duplicates",
            "interactions",
            ".csv",
            _csv_bytes(pd.concat([base["interactions"]] * 2, ignore_index=True)),
            None,  # dropped with a count by default (--duplicates)
        ),
        _bytes_case(
            "customers repeated rows", "duplicates", "customers", ".csv", _csv_bytes(dup_customers), None
        ),  # exact repeats of whole rows are dropped; one id with two different rows is refused (below)
        _bytes_case(
            "customers one id, two rows",
            "duplicates",
            "customers",
            ".csv",
            _csv_bytes(
                pd.concat([customers, customers.head(3).assign(signup_date="2020-01-01")], ignore_index=True)
            ),
            True,
        ),
        _bytes_case(
            "transactions without amount",
            "header",
            "transactions",
            ".csv",
            _csv_bytes(tx.drop(columns=["amount"])),
            True,
        ),
        _bytes_case(
            "interactions without type",
            "header",
            "interactions",
            ".parquet",
            _parquet_bytes(base["interactions"].drop(columns=["type"])),
            True,
        ),
    ]

    def both_formats(folder: Path) -> None:
        (folder / "transactions.csv").write_bytes(_csv_bytes(tx))
        (folder / "transactions.parquet").write_bytes(_parquet_bytes(tx))

    cases.append(Case("transactions csv and parquet", "header", "transactions", ".csv", both_formats, True))
    return cases


def _typed_parquet_cases(base: dict[str, pd.DataFrame]) -> list[Case]:
    """Parquet files whose column types or values are wrong (what a careless export produces)."""
    tx = base["transactions"]
    n = len(tx)

    def with_column(name: str, values: object) -> pd.DataFrame:
        frame = tx.copy()
        frame[name] = values
        return frame

    amount_inf = tx["amount"].to_numpy().copy()
    amount_inf[::9] = np.inf
    amount_nan = tx["amount"].to_numpy().copy()
    amount_nan[::5] = np.nan
    huge = tx["amount"].to_numpy().copy()
    huge[::4] = 1e308
    stamps_2200 = tx["timestamp"].copy()
    stamps_2200.iloc[::6] = pd.Timestamp("2200-01-01")
    stamps_1800 = tx["timestamp"].astype("datetime64[us]").copy()
    stamps_1800.iloc[::6] = pd.Timestamp("1800-01-01")
    variants: list[tuple[str, pd.DataFrame | pa.Table, bool | None]] = [
        ("amount inf", with_column("amount", amount_inf), True),
        ("amount NaN", with_column("amount", amount_nan), True),
        ("amount 1e308", with_column("amount", huge), None),
        ("amount as text", with_column("amount", ["abc" if i % 3 == 0 else "5" for i in range(n)]), True),
        ("amount as bool", with_column("amount", [bool(i % 2) for i in range(n)]), True),
        (
            "amount as list",
            pa.table({**{c: tx[c] for c in tx.columns if c != "amount"}, "amount": [[1.0]] * n}),
            True,
        ),
        ("timestamp 2200", with_column("timestamp", stamps_2200), True),
        ("timestamp 1800", with_column("timestamp", stamps_1800), True),
        ("timestamp as text", with_column("timestamp", tx["timestamp"].dt.strftime("%d/%m/%Y")), True),
        ("timestamp as epoch int", with_column("timestamp", tx["timestamp"].astype("int64")), None),
        (
            "timestamp tz-aware",
            with_column("timestamp", tx["timestamp"].dt.tz_localize("Europe/Berlin")),
            None,
        ),
        ("quantity int64 max", with_column("quantity", np.full(n, np.iinfo(np.int64).max)), None),
        ("quantity negative", with_column("quantity", -tx["quantity"]), True),
        ("customer_id as int", with_column("customer_id", np.arange(n)), True),
        (
            "customer_id null",
            with_column("customer_id", [None if i % 7 == 0 else c for i, c in enumerate(tx["customer_id"])]),
            None,  # guest rows: skipped and counted
        ),
        ("returned as text", with_column("returned", ["perhaps"] * n), True),
    ]
    return [
        _bytes_case(
            f"transactions parquet {name}",
            "parquet-types",
            "transactions",
            ".parquet",
            _parquet_bytes(f),
            must,
        )
        for name, f, must in variants
    ]


def build_cases(base: dict[str, pd.DataFrame]) -> list[Case]:
    """Every case, in a fixed order (seeded: the same run every time)."""
    rng = random.Random(SEED)
    cases: list[Case] = []
    for i, (table, column, value, must) in enumerate(CELL_VALUES):
        cases.append(_cell_case(base, table, column, value, must, rows=1, seed=SEED + i))
        cases.append(_cell_case(base, table, column, value, must, rows=rng.randint(2, 40), seed=SEED - i))
    return cases + _whole_file_cases(base, rng) + _structure_cases(base) + _typed_parquet_cases(base)


# ------------------------------------------------------------------------------------------------ checks


def contract_violations(dataset: Dataset, now: pd.Timestamp) -> list[str]:
    """What would make an accepted dataset unsound for the feature code (empty: it is sound)."""
    problems = []
    tx, inter, customers = dataset.transactions, dataset.interactions, dataset.customers
    if tx.empty:
        problems.append("no transactions")
    for name, frame in (
        ("transactions", tx),
        ("interactions", inter),
        ("cancellations", dataset.cancellations),
    ):
        ids = frame["customer_id"].astype(str)
        if frame["customer_id"].isna().any() or (ids.str.strip() == "").any():
            problems.append(f"{name}: empty ids")
        stamps = frame["timestamp"]
        if stamps.isna().any() or (stamps < pd.Timestamp("1970-01-01")).any() or (stamps > now).any():
            problems.append(f"{name}: timestamps missing or out of range")
    amount = tx["amount"].to_numpy(float)
    if not np.isfinite(amount).all():
        problems.append("amount not finite")
    if (amount <= 0).all():
        problems.append("no purchase at all (only returns)")
    for column in ("quantity", "discount", "delivery_delay_days"):
        values = tx[column].to_numpy(float)
        known = values[~np.isnan(values)]
        if not np.isfinite(known).all() or (known < 0).any():
            problems.append(f"{column} not finite and >= 0")
    quantity = tx["quantity"].dropna().to_numpy(float)
    if (quantity != np.round(quantity)).any():
        problems.append("quantity not whole")
    for column, low, high in (("satisfaction", 1, 5), ("nps", 0, 10), ("resolution_hours", 0, np.inf)):
        values = inter[column].dropna().to_numpy(float)
        if ((values < low) | (values > high)).any() or np.isnan(values).any():
            problems.append(f"interactions.{column} out of range")
    if customers["customer_id"].duplicated().any():
        problems.append("customer ids repeated")
    if "customers" in dataset.provided and not tx["customer_id"].isin(customers["customer_id"]).all():
        problems.append("transactions of unknown customers")
    if dataset.rows_are_orders and tx.duplicated().any():  # lines of one order may repeat; rows may not
        problems.append("exact duplicate transactions")
    signup = customers["signup_date"].dropna()
    if ((signup < pd.Timestamp("1970-01-01")) | (signup > now)).any():
        problems.append("signup dates out of range")
    return problems


@dataclass
class Outcome:
    case: Case
    folder: Path
    result: str  # accepted / rejected / crashed
    detail: str


def run_case(case: Case, base: dict[str, pd.DataFrame], root: Path, index: int, now: pd.Timestamp) -> Outcome:
    folder = root / f"case{index:03d}"
    _write_folder(folder, base, case.table, case.suffix)
    case.make(folder)
    try:
        dataset = load_dataset(folder)
    except DataValidationError as exc:
        named = all(str(folder) in p.file for p in exc.problems) and bool(exc.problems)
        return Outcome(case, folder, "rejected", "" if named else f"problem without the file: {exc}")
    except Exception as exc:
        return Outcome(case, folder, "crashed", f"{exc.__class__.__name__}: {exc}"[:300])
    return Outcome(case, folder, "accepted", "; ".join(contract_violations(dataset, now)))


def test_malformed_inputs_at_scale_are_refused_cleanly(small_data: Path, tmp_path: Path) -> None:
    base = _base_frames(small_data)
    now = pd.Timestamp.now()
    assert not contract_violations(load_dataset(_base_folder(tmp_path, base)), now), "the base must be valid"
    cases = build_cases(base)
    outcomes = [run_case(c, base, tmp_path, i, now) for i, c in enumerate(cases)]

    counts = Counter(o.result for o in outcomes)
    by_category = Counter((o.case.category.split(":")[0], o.result) for o in outcomes)
    print(f"\nbad input: {len(outcomes)} cases: {dict(counts)}")
    for (category, result), n in sorted(by_category.items()):
        print(f"  {category:<14} {result:<9} {n}")

    crashed = [f"{o.case.name}: {o.detail}" for o in outcomes if o.result == "crashed"]
    unsound = [f"{o.case.name}: {o.detail}" for o in outcomes if o.result == "accepted" and o.detail]
    unnamed = [f"{o.case.name}: {o.detail}" for o in outcomes if o.result == "rejected" and o.detail]
    let_through = [o.case.name for o in outcomes if o.case.must_reject and o.result != "rejected"]
    assert len(outcomes) >= 150
    assert crashed == [], f"{len(crashed)} cases raised something else than DataValidationError"
    assert unsound == [], "accepted datasets that break the contract"
    assert unnamed == [], "refusals that do not name the file"
    assert let_through == [], "contract breaks that were accepted"
    assert counts["rejected"] + counts["accepted"] == len(outcomes)
    assert counts["rejected"] >= 120  # most cases surely break the contract

    _check_cli_sample([o for o in outcomes if o.result == "rejected"], tmp_path)


def _base_folder(root: Path, base: dict[str, pd.DataFrame]) -> Path:
    folder = root / "base"
    _write_folder(folder, base, broken="", suffix=".csv")
    return folder


def _check_cli_sample(rejected: list[Outcome], root: Path) -> None:
    """The CLI on a sample of refused folders, one per category (markup-like values included)."""
    sample: dict[str, Outcome] = {}
    for outcome in rejected:
        if "[" in outcome.case.name:
            sample.setdefault("markup", outcome)
        sample.setdefault(outcome.case.category, outcome)
    picked = list(sample.values())[:CLI_SAMPLE] + ([sample["markup"]] if "markup" in sample else [])
    env = child_env(root / "cli-home")

    def features(outcome: Outcome) -> tuple[Outcome, subprocess.CompletedProcess[str], Path]:
        out = root / "cli-out" / f"{outcome.folder.name}.parquet"
        return (
            outcome,
            run_cli(["features", "--data", str(outcome.folder), "--out", str(out)], env, timeout=300),
            out,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(features, picked))
    for outcome, result, out in results:
        where = f"{outcome.case.name} ({outcome.folder})"
        assert result.returncode == 2, f"{where}: exit {result.returncode}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr[-2000:]}"
        lines = result.stderr.splitlines()
        header = next(i for i, line in enumerate(lines) if "breaks the data contract" in line)
        count = int(lines[header].split("(", 1)[1].split(" ", 1)[0])
        problems = [line for line in lines if line.startswith("  - ")]
        assert len(problems) == count, f"{where}: {count} problems announced, {len(problems)} listed"
        assert all(str(outcome.folder) in line for line in problems), f"{where}: a problem names no file"
        assert not out.exists(), f"{where}: an output file was written"
        leftovers = (
            [p.name for p in out.parent.iterdir() if out.name in p.name] if out.parent.exists() else []
        )
        assert leftovers == [], f"{where}: temp output left: {leftovers}"
    print(f"  CLI sample: {len(results)} folders, all exit 2 with the file named and no traceback")


def test_a_column_repeated_exactly_in_the_header_is_refused(tmp_path: Path) -> None:
    """Two columns both named 'amount': which one is meant cannot be known, so the file is refused."""
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount,amount\nC1,2024-01-01,10,-999\nC2,2024-01-02,20,abc\n"
    )
    with pytest.raises(DataValidationError) as refused:
        load_dataset(tmp_path)
    assert "appears more than once in the header" in str(refused.value)
