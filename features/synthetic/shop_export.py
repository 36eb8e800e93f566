"""The ``shop_export`` world's output: one ``invoices.csv`` shaped like a real shop's invoice-line export.

Real exports (e.g. the UCI "Online Retail II" file) break each order into product lines with a quantity
and a unit price and no line total, book returns as their own credit-note invoices (``C`` + number,
negative quantity), carry guest lines without a customer, repeat some lines exactly, and print dates as
``12/01/2010 08:26`` and customer numbers as ``13085.0``. Every one of those is here, so a loader that
only ever met the contract tables is tested on the shape it will meet.

Ids: customer number ``13085`` is written as ``13085.0``; the truth's ``customer_id`` is ``"13085"``, the
id a loader gets after normalising the float-looking number. Guest lines (empty ``Customer ID``) belong to
no modelled customer. The layout is declared in ``columns.yaml`` beside the data.

The export's own randomness (lines, products, guests, return dates) comes from a separate random stream,
so it never changes the simulated world; the same seed still gives identical output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.synthetic.params import SECONDS_PER_DAY, Calendar, Orders
from features.synthetic.write import TableWriter, fixed_width_strings, id_bytes, minute_strings, vocab_strings

INVOICES_FILE = "invoices.csv"
COLUMNS_FILE = "columns.yaml"
HEADER = ("Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country")
DATE_FORMAT = "%m/%d/%Y %H:%M"
DAY_FORMAT = "%m/%d/%Y"  # the date part of DATE_FORMAT; the time is written as HH:MM
COLUMNS_YAML = """\
# How to read invoices.csv, a shop's invoice-line export (see features/synthetic/shop_export.py).
transactions:
  file: invoices.csv
  columns: {order_id: Invoice, customer_id: Customer ID, timestamp: InvoiceDate, quantity: Quantity, unit_price: Price}
  date_format: "%m/%d/%Y %H:%M"
  amount: quantity * unit_price     # the export has no line total
  returns: {order_id_prefix: "C"}   # credit notes: invoice numbers starting with C
"""

FIRST_CUSTOMER_NUMBER = 12_346
FIRST_INVOICE_NUMBER = 5_360_001
GUEST_SHARE = 0.03  # of all lines
DUPLICATE_SHARE = 0.003  # of all lines, repeated exactly
IDENTICAL_LINE_SHARE = 0.15  # of invoices with 2+ lines: the first line is entered twice
LINES_PER_ORDER = np.arange(1, 7)
LINES_PER_ORDER_PROBS = np.array([0.35, 0.25, 0.15, 0.11, 0.08, 0.06])
LINE_QUANTITIES = np.array([1, 2, 3, 4, 6, 12, 24])
LINE_QUANTITY_PROBS = np.array([0.45, 0.2, 0.1, 0.08, 0.08, 0.06, 0.03])
N_PRODUCTS = 2_000
COUNTRY_NAMES = ("USA", "United Kingdom", "Germany", "France", "Netherlands", "Spain")  # as COUNTRIES
GUEST_COUNTRY_PROBS = (0.2, 0.5, 0.1, 0.1, 0.05, 0.05)
_COLOURS = ("WHITE", "RED", "PINK", "BLUE", "GREEN", "IVORY", "BLACK", "VINTAGE", "RETRO", "SET OF 3")
_THINGS = (
    "HANGING HEART T-LIGHT HOLDER",
    "METAL LANTERN",
    "CREAM CUPID HEARTS COAT HANGER",
    "KNITTED UNION FLAG HOT WATER BOTTLE",
    "WOOLLY HOTTIE",
    "LUNCH BAG",
    "JUMBO BAG",
    "ALARM CLOCK BAKELIKE",
    "CAKE CASES",
    "PAPER CHAIN KIT",
    "GLASS STAR FROSTED T-LIGHT HOLDER",
    "REGENCY CAKESTAND 3 TIER",
    "PARTY BUNTING",
    "HOT WATER BOTTLE",
    "DOORMAT",
)


def customer_numbers(n: int) -> np.ndarray:
    """Integer customer numbers, all of one digit count (so no zero padding can differ from the export)."""
    digits = max(5, len(str(n)) + 1)
    first = 10 ** (digits - 1) + FIRST_CUSTOMER_NUMBER - 10_000
    return id_bytes("", np.arange(first, first + n), digits)


def write_columns_yaml(folder: Path) -> None:
    """Declare the export's layout for the loader (mapping format shared with the column-mapping loader)."""
    (folder / COLUMNS_FILE).write_text(COLUMNS_YAML)


class ShopExportSink:
    """Turns each month's orders into invoice lines (sales, guests, credit notes) and appends them to
    ``invoices.csv`` in invoice order. Returns wait in a queue until the month they fall in, and are
    dropped if the customer has left by then or they fall after the period."""

    def __init__(
        self, folder: Path, ids: np.ndarray, calendar: Calendar, country: np.ndarray, seed: int
    ) -> None:
        self._rng = np.random.default_rng([seed, 20_101_201])
        self._calendar, self._country = calendar, country
        self._ids = fixed_width_strings(np.hstack([ids, np.full((len(ids), 2), list(b".0"), dtype=np.uint8)]))
        self._catalogue = _catalogue(self._rng)
        self._popularity = 1.0 / (np.arange(N_PRODUCTS) + 20.0)
        self._popularity /= self._popularity.sum()
        self._pending = _Lines.empty()
        self._orders = 0
        self._invoices = FIRST_INVOICE_NUMBER
        types = {"Quantity": pa.int64(), "Price": pa.float64()}
        self._schema = pa.schema([(name, types.get(name, pa.large_string())) for name in HEADER])
        self._writer = TableWriter(folder / INVOICES_FILE, self._schema, "csv", plain_header=True)
        self.rows = 0

    def write(self, orders: Orders, month: int, departure_day: np.ndarray) -> None:
        """Append the month's sales and guest invoices and the credit notes that fall in this month."""
        rng, calendar = self._rng, self._calendar
        keys = self._orders + np.arange(len(orders))
        sales = self._lines(
            keys, orders.customer, orders.second, orders.amount, self._country[orders.customer]
        )
        self._orders += len(orders)
        self._queue_returns(sales, keys[orders.returned])

        n_guests = rng.poisson(GUEST_SHARE / (1 - GUEST_SHARE) * max(len(sales), 1) / LINES_PER_ORDER.mean())
        month_start, month_end = calendar.edges[month], calendar.edges[month + 1]
        guest_day = month_start + rng.random(n_guests) * (month_end - month_start)
        guest_keys = self._orders + np.arange(n_guests)
        self._orders += n_guests
        guests = self._lines(
            guest_keys,
            np.full(n_guests, -1),
            np.sort(np.floor(guest_day * SECONDS_PER_DAY).astype(np.int64)),
            np.round(rng.lognormal(np.log(30.0), 0.9, n_guests), 2),
            rng.choice(len(COUNTRY_NAMES), size=n_guests, p=GUEST_COUNTRY_PROBS),
        )

        due = self._pending.second < round(month_end * SECONDS_PER_DAY)
        credits, self._pending = self._pending.take(due), self._pending.take(~due)
        left = departure_day[credits.customer] * SECONDS_PER_DAY
        credits = credits.take(credits.second < left)

        lines = _Lines.concat([sales, guests, credits])
        self._append(lines.take(np.lexsort((lines.credit, lines.key, lines.second))))

    def close(self) -> int:
        """Finish the file (returns still pending fall after the period); returns the number of lines."""
        self._writer.close()
        return self.rows

    def _lines(
        self,
        keys: np.ndarray,
        customer: np.ndarray,
        second: np.ndarray,
        amount: np.ndarray,
        country: np.ndarray,
    ) -> _Lines:
        """1–6 lines per order (one entry per order in each argument) whose quantity × price add up to the
        order's amount (to the cent where the last line can absorb the rounding); some invoices have a
        second line with the first one's quantity and price for another product."""
        rng = self._rng
        counts = rng.choice(LINES_PER_ORDER, size=len(keys), p=LINES_PER_ORDER_PROBS)
        order = np.repeat(np.arange(len(keys)), counts)
        first = np.cumsum(counts) - counts
        index_in_order = np.arange(len(order)) - first[order]
        product = rng.choice(N_PRODUCTS, size=len(order), p=self._popularity)
        quantity = rng.choice(LINE_QUANTITIES, size=len(order), p=LINE_QUANTITY_PROBS)
        weight = rng.gamma(2.0, 1.0, len(order))
        repeated = (counts >= 2) & (rng.random(len(keys)) < IDENTICAL_LINE_SHARE)
        copy = np.flatnonzero(repeated[order] & (index_in_order == 1))
        # the same quantity and amount as the line before, for another product: equal amounts within one
        # invoice are ordinary, and only the product code tells such lines from a repeated line
        product[copy] = (product[copy - 1] + 1) % N_PRODUCTS
        quantity[copy], weight[copy] = quantity[copy - 1], weight[copy - 1]
        share = weight / np.bincount(order, weights=weight, minlength=len(keys))[order]
        price = np.maximum(np.round(amount[order] * share / quantity, 2), 0.01)

        last = first + counts - 1
        absorbs = counts >= 3  # the last line is not part of a repeated pair
        others = np.bincount(order, weights=quantity * price, minlength=len(keys)) - (quantity * price)[last]
        rest = np.round(amount - others, 2)
        fix = last[absorbs & (rest >= 0.01)]
        quantity[fix], price[fix] = 1, rest[order[fix]]
        return _Lines(
            key=keys[order],
            credit=np.zeros(len(order), dtype=bool),
            customer=customer[order],
            second=second[order],
            product=product,
            quantity=quantity.astype(np.int64),
            price=price,
            country=country.astype(np.int8)[order],
        )

    def _queue_returns(self, sales: _Lines, returned_keys: np.ndarray) -> None:
        """Credit notes for returned orders: the order's lines with negative quantity, some days later."""
        lines = sales.take(np.isin(sales.key, returned_keys))
        unique_keys = np.unique(lines.key)
        delay_days = 1.0 + self._rng.exponential(6.0, len(unique_keys))
        delay = np.floor(delay_days * SECONDS_PER_DAY).astype(np.int64)
        lines.second = lines.second + delay[np.searchsorted(unique_keys, lines.key)]
        lines.quantity = -lines.quantity
        lines.credit = np.ones(len(lines), dtype=bool)
        self._pending = _Lines.concat([self._pending, lines])

    def _append(self, lines: _Lines) -> None:
        """Number the invoices in time order and write the lines, a few of them twice (as exports do)."""
        new_invoice = np.ones(len(lines), dtype=bool)
        new_invoice[1:] = (lines.key[1:] != lines.key[:-1]) | (lines.credit[1:] != lines.credit[:-1])
        numbers = self._invoices - 1 + np.cumsum(new_invoice)
        self._invoices += int(new_invoice.sum())
        rows = np.repeat(np.arange(len(lines)), 1 + (self._rng.random(len(lines)) < DUPLICATE_SHARE))
        lines, numbers = lines.take(rows), numbers[rows]
        number_text = pa.array(numbers).cast(pa.large_string())
        credit = pa.array(lines.credit)
        codes, descriptions = self._catalogue
        columns = [
            pc.if_else(
                credit,
                pc.binary_join_element_wise(
                    pa.scalar("C", pa.large_string()), number_text, pa.scalar("", pa.large_string())
                ),
                number_text,
            ),
            vocab_strings(lines.product, codes),
            vocab_strings(lines.product, descriptions),
            pa.array(lines.quantity),
            minute_strings(self._calendar, lines.second, DAY_FORMAT),
            pa.array(lines.price),
            self._ids.take(pa.array(lines.customer, mask=lines.customer < 0)),
            vocab_strings(lines.country, COUNTRY_NAMES),
        ]
        self._writer.write(dict(zip(HEADER, columns, strict=True)))
        self.rows += len(lines)


def _catalogue(rng: np.random.Generator) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Stock codes (five digits, some with a letter suffix) and their descriptions."""
    numbers = rng.choice(90_000, size=N_PRODUCTS, replace=False) + 10_000
    suffix = rng.choice(["", "", "", "", "A", "B", "C"], size=N_PRODUCTS)
    colour = rng.choice(len(_COLOURS), size=N_PRODUCTS)
    thing = rng.choice(len(_THINGS), size=N_PRODUCTS)
    codes = tuple(f"{number}{letter}" for number, letter in zip(numbers, suffix, strict=True))
    descriptions = tuple(f"{_COLOURS[c]} {_THINGS[t]}" for c, t in zip(colour, thing, strict=True))
    return codes, descriptions


@dataclass
class _Lines:
    """Invoice lines before numbering; ``key`` identifies the order (a sale and its credit note share it);
    ``customer`` -1 is a guest."""

    key: np.ndarray
    credit: np.ndarray
    customer: np.ndarray
    second: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    country: np.ndarray

    @staticmethod
    def empty() -> _Lines:
        dtypes = (np.int64, bool, np.int64, np.int64, np.int64, np.int64, np.float64, np.int8)
        return _Lines(*(np.empty(0, dtype) for dtype in dtypes))

    @staticmethod
    def concat(parts: list[_Lines]) -> _Lines:
        names = [f.name for f in dataclasses.fields(_Lines)]
        return _Lines(*(np.concatenate([getattr(part, name) for part in parts]) for name in names))

    def take(self, index: np.ndarray) -> _Lines:
        return _Lines(*(getattr(self, f.name)[index] for f in dataclasses.fields(_Lines)))

    def __len__(self) -> int:
        return len(self.key)
