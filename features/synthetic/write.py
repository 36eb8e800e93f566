"""Arrow schemas and writers for the contract tables, built from the simulation's arrays without row loops.

Ids, vocabularies and timestamps are formatted with numpy and Arrow buffers (a million customers produce
about twenty million orders); row groups are encoded in a background thread while the next month simulates.
The bytes written depend only on the data, never on timing, so the same seed gives identical files.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features.synthetic.params import (
    ACQUISITION,
    CONTACT_CHANNELS,
    COUNTRIES,
    INTERACTION_TYPES,
    NONE,
    ORDER_CHANNELS,
    PLANS,
    SECONDS_PER_DAY,
    SEGMENTS,
    Calendar,
    Contacts,
    Customers,
    FileFormat,
    Orders,
    Outcome,
)

ORDER_DIGITS = 10
ROW_GROUP_ROWS = 1_000_000
TS = pa.timestamp("us")


# ------------------------------------------------------------------------------------------ arrow helpers


@functools.cache
def _digit_groups() -> np.ndarray:
    """ASCII bytes of 0000..9999, shape (10000, 4); used to format ids without Python loops."""
    numbers = np.arange(10_000)
    return np.stack([48 + (numbers // 10**p) % 10 for p in (3, 2, 1, 0)], axis=1).astype(np.uint8)


def id_bytes(prefix: str, numbers: np.ndarray, digits: int) -> np.ndarray:
    """Fixed-width ids ``<prefix><zero-padded number>`` as a (len, width) uint8 matrix."""
    width = len(prefix) + digits
    out = np.empty((len(numbers), width), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    rest = numbers.astype(np.int64)
    position = width
    while position > len(prefix):
        take = min(4, position - len(prefix))
        out[:, position - take : position] = _digit_groups()[rest % 10_000][:, 4 - take :]
        rest = rest // 10_000
        position -= take
    return out


def fixed_width_strings(matrix: np.ndarray) -> pa.Array:
    """A (len, width) uint8 matrix of ASCII as an Arrow string array, without per-row Python work."""
    count, width = matrix.shape
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int64)
    data = pa.py_buffer(np.ascontiguousarray(matrix))
    return pa.Array.from_buffers(pa.large_string(), count, [None, pa.py_buffer(offsets), data])


def vocab_strings(codes: np.ndarray, vocabulary: tuple[str, ...]) -> pa.Array:
    """Small integer codes as the strings they stand for."""
    indices = pa.array(codes.astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(vocabulary)).cast(pa.large_string())


def timestamps(calendar: Calendar, second: np.ndarray) -> pa.Array:
    """Seconds since the period start as Arrow microsecond timestamps."""
    return pa.array(calendar.start_us + second * 1_000_000, type=TS)


@functools.cache
def _clock_bytes() -> np.ndarray:
    """ASCII ``HH:MM`` for every minute of a day, shape (1440, 5)."""
    minutes = np.arange(1440)
    out = np.empty((1440, 5), dtype=np.uint8)
    out[:, :2] = _digit_groups()[minutes // 60][:, 2:]
    out[:, 2] = ord(":")
    out[:, 3:] = _digit_groups()[minutes % 60][:, 2:]
    return out


def minute_strings(calendar: Calendar, second: np.ndarray, day_format: str) -> pa.Array:
    """Seconds since the period start as ``<day_format> HH:MM`` text (e.g. ``12/01/2010 08:26``).

    Only the few distinct days go through ``strftime``; minutes come from a table, so millions of rows
    cost a few numpy gathers. ``day_format`` must give fixed-width text (zero-padded fields).
    """
    start_minute = calendar.start_us // 60_000_000
    minute = start_minute + second // 60
    day, minute_of_day = np.divmod(minute, 1440)
    days, day_index = np.unique(day, return_inverse=True)
    texts = [(pd.Timestamp(0) + pd.Timedelta(days=int(d))).strftime(day_format) for d in days]
    width = len(texts[0]) if texts else 0
    day_bytes = np.frombuffer("".join(texts).encode(), dtype=np.uint8).reshape(len(texts), width)
    out = np.empty((len(second), width + 6), dtype=np.uint8)
    out[:, :width] = day_bytes[day_index]
    out[:, width] = ord(" ")
    out[:, width + 1 :] = _clock_bytes()[minute_of_day]
    return fixed_width_strings(out)


def _schema(fields: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    """Arrow schema plus pandas metadata, so ``pd.read_parquet`` restores the contract dtypes."""
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, _, dtype in fields})
    metadata = pa.Schema.from_pandas(empty, preserve_index=False).metadata
    return pa.schema([(name, arrow_type) for name, arrow_type, _ in fields], metadata=metadata)


_ID = ("customer_id", pa.large_string(), "str")
TRANSACTIONS_SCHEMA = _schema(
    [
        _ID,
        ("timestamp", TS, "datetime64[us]"),
        ("amount", pa.float64(), "float64"),
        ("order_id", pa.large_string(), "str"),
        ("quantity", pa.int64(), "int64"),
        ("discount", pa.float64(), "float64"),
        ("channel", pa.large_string(), "str"),
        ("returned", pa.bool_(), "bool"),
        ("delivery_delay_days", pa.float64(), "float64"),
    ]
)
PURCHASE_LOG_SCHEMA = _schema([_ID, ("timestamp", TS, "datetime64[us]"), ("amount", pa.float64(), "float64")])
_CUSTOMERS_SCHEMA = _schema(
    [
        _ID,
        ("signup_date", TS, "datetime64[us]"),
        ("country", pa.large_string(), "str"),
        ("segment", pa.large_string(), "str"),
        ("acquisition_channel", pa.large_string(), "str"),
        ("plan", pa.large_string(), "str"),
    ]
)
_INTERACTIONS_SCHEMA = _schema(
    [
        _ID,
        ("timestamp", TS, "datetime64[us]"),
        ("type", pa.large_string(), "str"),
        ("channel", pa.large_string(), "str"),
        ("resolved", pa.bool_(), "boolean"),
        ("resolution_hours", pa.float64(), "float64"),
        ("satisfaction", pa.int64(), "Int64"),
        ("nps", pa.int64(), "Int64"),
    ]
)
_CANCELLATIONS_SCHEMA = _schema([_ID, ("timestamp", TS, "datetime64[us]")])
_REFERRALS_SCHEMA = _schema(
    [
        ("referrer_id", pa.large_string(), "str"),
        ("referred_id", pa.large_string(), "str"),
        ("timestamp", TS, "datetime64[us]"),
    ]
)
REFERRAL_TRIES: Final = 8  # draws of an earlier customer still there, before a referral goes unrecorded


# ---------------------------------------------------------------------------------------------- writers


class TableWriter:
    """Appends Arrow batches to one parquet or CSV file, in row groups of about ``ROW_GROUP_ROWS`` rows.

    Encoding happens in one background thread (Arrow releases the GIL), overlapping the simulation of the
    next month; at most one row group is in flight, so memory stays bounded. The bytes written depend only on
    the batches, not on timing. CSV timestamps are written to the second.
    """

    def __init__(
        self, path: Path, schema: pa.Schema, file_format: FileFormat, *, plain_header: bool = False
    ) -> None:
        """``plain_header``: write the CSV header unquoted, as spreadsheet exports do (Arrow quotes it)."""
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._in_flight: Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthetic-writer")
        self._csv_schema: pa.Schema | None = None
        self._file: BinaryIO | None = None
        if file_format == "csv":
            self._csv_schema = pa.schema(
                [pa.field(f.name, pa.timestamp("s") if f.type == TS else f.type) for f in schema]
            )
            options = pa_csv.WriteOptions(quoting_style="none", include_header=not plain_header)
            target: str | BinaryIO = str(path)
            if plain_header:
                target = self._file = path.open("wb")
                self._file.write((",".join(schema.names) + "\n").encode())
            self._writer: pa_csv.CSVWriter | pq.ParquetWriter = pa_csv.CSVWriter(
                target, self._csv_schema, write_options=options
            )
        else:
            self._writer = pq.ParquetWriter(str(path), schema, **_parquet_options(schema))

    def write(self, columns: dict[str, pa.Array]) -> None:
        table = pa.Table.from_arrays(list(columns.values()), schema=self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def close(self) -> None:
        """Write what is left and close the file; re-raises any error from the background thread."""
        try:
            self._flush(final=True)
            self._wait()
        finally:
            self._executor.shutdown(wait=True)
            self._writer.close()
            if self._file is not None:
                self._file.close()

    def _flush(self, final: bool = False) -> None:
        """Hand the buffered batches to the writer thread as one row group (waits for the previous one)."""
        if not self._pending and not final:
            return
        table = pa.concat_tables(self._pending) if self._pending else self._schema.empty_table()
        self._pending, self._pending_rows = [], 0
        if table.num_rows == 0 and not final:
            return
        if self._csv_schema is not None:
            table = table.cast(self._csv_schema)
        self._wait()
        if table.num_rows:
            self._in_flight = self._executor.submit(self._writer.write_table, table)

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()


def _parquet_options(schema: pa.Schema) -> dict[str, object]:
    """zstd(1); dictionary pages for repetitive columns, delta encoding for the time-sorted timestamps."""
    unique_like = {"timestamp", "order_id", "amount", "resolution_hours", "signup_date"}
    return {
        "compression": "zstd",
        "compression_level": 1,
        "use_dictionary": [name for name in schema.names if name not in unique_like],
        "column_encoding": {name: "DELTA_BINARY_PACKED" for name in ("timestamp",) if name in schema.names},
    }


def _write_table(
    path: Path, schema: pa.Schema, file_format: FileFormat, columns: dict[str, pa.Array]
) -> None:
    """Write one whole table."""
    writer = TableWriter(path, schema, file_format)
    try:
        writer.write(columns)
    finally:
        writer.close()


class TransactionSink:
    """Streams each month's orders into ``transactions`` (all contract columns, or only the purchase log's
    ``customer_id``, ``timestamp``, ``amount``); order ids number the orders in time order."""

    def __init__(
        self, folder: Path, file_format: FileFormat, ids: np.ndarray, calendar: Calendar, *, bare: bool
    ) -> None:
        schema = PURCHASE_LOG_SCHEMA if bare else TRANSACTIONS_SCHEMA
        self._writer = TableWriter(folder / f"transactions.{file_format}", schema, file_format)
        self._ids, self._calendar, self._bare = ids, calendar, bare
        self.rows = 0

    def write(self, orders: Orders, month: int, departure_day: np.ndarray) -> None:
        if self._bare:
            columns = {
                "customer_id": fixed_width_strings(self._ids[orders.customer]),
                "timestamp": timestamps(self._calendar, orders.second),
                "amount": pa.array(orders.amount),
            }
        else:
            columns = _transaction_columns(orders, self._ids, self.rows, self._calendar)
        self._writer.write(columns)
        self.rows += len(orders)

    def close(self) -> int:
        """Finish the file; returns the number of rows written."""
        self._writer.close()
        return self.rows


def _transaction_columns(
    orders: Orders, ids: np.ndarray, offset: int, calendar: Calendar
) -> dict[str, pa.Array]:
    """One month of orders as the contract's transaction columns; order ids continue from ``offset``."""
    order_numbers = np.arange(offset + 1, offset + len(orders) + 1)
    return {
        "customer_id": fixed_width_strings(ids[orders.customer]),
        "timestamp": timestamps(calendar, orders.second),
        "amount": pa.array(orders.amount),
        "order_id": fixed_width_strings(id_bytes("O", order_numbers, ORDER_DIGITS)),
        "quantity": pa.array(orders.quantity),
        "discount": pa.array(orders.discount),
        "channel": vocab_strings(orders.channel, ORDER_CHANNELS),
        "returned": pa.array(orders.returned),
        "delivery_delay_days": pa.array(orders.delay_days),
    }


# ----------------------------------------------------------------------------------- the other tables


def departure_seconds(outcome: Outcome, calendar: Calendar) -> np.ndarray:
    """Departure second per customer, rounded up so every event lies strictly before it; -1 = none."""
    finite = np.isfinite(outcome.departure_day)
    seconds = np.full(len(finite), -1, dtype=np.int64)
    seconds[finite] = np.floor(outcome.departure_day[finite] * SECONDS_PER_DAY).astype(np.int64) + 1
    seconds[seconds >= calendar.end_second] = -1
    return seconds


def customer_columns(customers: Customers, ids: np.ndarray, calendar: Calendar) -> dict[str, pa.Array]:
    """The ``customers`` table's columns (also the head of the truth's ``customers.parquet``)."""
    return {
        "customer_id": fixed_width_strings(ids),
        "signup_date": timestamps(calendar, customers.signup_day.astype(np.int64) * SECONDS_PER_DAY),
        "country": vocab_strings(customers.country, COUNTRIES),
        "segment": vocab_strings(customers.segment, SEGMENTS),
        "acquisition_channel": vocab_strings(customers.acquisition, ACQUISITION),
        "plan": vocab_strings(customers.plan, PLANS),
    }


def write_other_tables(
    folder: Path,
    file_format: FileFormat,
    customers: Customers,
    outcome: Outcome,
    calendar: Calendar,
    ids: np.ndarray,
) -> tuple[int, int]:
    """Write customers, interactions and cancellations; returns (n_interactions, n_cancellations)."""
    _write_table(
        folder / f"customers.{file_format}",
        _CUSTOMERS_SCHEMA,
        file_format,
        customer_columns(customers, ids, calendar),
    )
    departure = departure_seconds(outcome, calendar)
    contacts = _observable_contacts(outcome.contacts, departure, calendar)
    _write_table(
        folder / f"interactions.{file_format}",
        _INTERACTIONS_SCHEMA,
        file_format,
        _interaction_columns(contacts, ids, calendar),
    )
    cancelled = np.flatnonzero((customers.plan != NONE) & (departure >= 0))
    cancelled = cancelled[np.argsort(departure[cancelled], kind="stable")]
    _write_table(
        folder / f"cancellations.{file_format}",
        _CANCELLATIONS_SCHEMA,
        file_format,
        {
            "customer_id": fixed_width_strings(ids[cancelled]),
            "timestamp": timestamps(calendar, departure[cancelled]),
        },
    )
    return len(contacts), len(cancelled)


def referrers(
    rng: np.random.Generator, customers: Customers, departure_day: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Who brought whom: each customer acquired through the ``referral`` channel is referred by a customer
    who signed up on an earlier day and was still there on the referred customer's signup day, drawn
    uniformly (up to :data:`REFERRAL_TRIES` draws; a customer with no such referrer found, like the very
    first ones, has their referral unrecorded, as real referral programmes lose some).

    ``departure_day``: day each customer left (inf: still there). Returns (referrer, referred) row indices,
    referred ascending. Customers are in signup order, so "earlier" is a prefix of the rows."""
    referred = np.flatnonzero(customers.acquisition == ACQUISITION.index("referral"))
    day = customers.signup_day
    earlier = np.searchsorted(day, day[referred], side="left")  # customers who signed up on an earlier day
    referred, earlier = referred[earlier > 0], earlier[earlier > 0]
    chosen = np.full(len(referred), -1, dtype=np.int64)
    for _ in range(REFERRAL_TRIES):
        open_ = chosen < 0
        if not open_.any():
            break
        draw = np.floor(rng.random(int(open_.sum())) * earlier[open_]).astype(np.int64)
        there = departure_day[draw] > day[referred[open_]]
        rows = np.flatnonzero(open_)[there]
        chosen[rows] = draw[there]
    found = chosen >= 0
    return chosen[found], referred[found]


def write_referrals(
    folder: Path,
    file_format: FileFormat,
    rng: np.random.Generator,
    customers: Customers,
    outcome: Outcome,
    calendar: Calendar,
    ids: np.ndarray,
) -> int:
    """Write ``referrals``: :func:`referrers`, each dated at the referred customer's signup; the count."""
    referrer, referred = referrers(rng, customers, outcome.departure_day)
    _write_table(
        folder / f"referrals.{file_format}",
        _REFERRALS_SCHEMA,
        file_format,
        {
            "referrer_id": fixed_width_strings(ids[referrer]),
            "referred_id": fixed_width_strings(ids[referred]),
            "timestamp": timestamps(
                calendar, customers.signup_day[referred].astype(np.int64) * SECONDS_PER_DAY
            ),
        },
    )
    return len(referred)


def _observable_contacts(contacts: Contacts, departure: np.ndarray, calendar: Calendar) -> Contacts:
    """Contacts before the period end and the customer's departure, exact duplicates dropped, time-sorted."""
    leaves = departure[contacts.customer]
    keep = (contacts.second < calendar.end_second) & ((leaves < 0) | (contacts.second < leaves))
    contacts = contacts.take(np.flatnonzero(keep))
    n_customers = len(departure)
    key = (contacts.second * n_customers + contacts.customer) * len(INTERACTION_TYPES) + contacts.type
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return contacts.take(order[first])


def _interaction_columns(contacts: Contacts, ids: np.ndarray, calendar: Calendar) -> dict[str, pa.Array]:
    """Contacts as the contract's interaction columns, with nulls where the contract wants them."""
    return {
        "customer_id": fixed_width_strings(ids[contacts.customer]),
        "timestamp": timestamps(calendar, contacts.second),
        "type": vocab_strings(contacts.type, INTERACTION_TYPES),
        "channel": vocab_strings(contacts.channel, CONTACT_CHANNELS),
        "resolved": pa.array(contacts.resolved == 1, mask=contacts.resolved < 0),
        "resolution_hours": pa.array(contacts.hours, from_pandas=True),
        "satisfaction": pa.array(contacts.satisfaction.astype(np.int64), mask=contacts.satisfaction < 0),
        "nps": pa.array(contacts.nps.astype(np.int64), mask=contacts.nps < 0),
    }
