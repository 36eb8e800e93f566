"""Small server-side SVG charts (no JavaScript, no external library).

Each function returns markup-safe SVG with ``role="img"``, a ``<title>`` and a ``<desc>``; all text is
escaped. Colours come from CSS classes (``bar``, ``bar-up``, ``tier-high``...) so the page's stylesheet owns
the palette and no inline style is needed (the pages' Content-Security-Policy forbids them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 480
SIGNED_WIDTH = 400  # the reasons chart shares its card with the sentences


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # the value as shown next to the bar


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _open(ident: str, height: float, title: str, desc: str, css: str, width: int = WIDTH) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {width} {_f(height)}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{ident}-title">{escape(title)}</title><desc id="{ident}-desc">{escape(desc)}</desc>'
    )


def _clip(text: str, limit: int = 58) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def bar_chart(ident: str, bars: Sequence[Bar], title: str, desc: str, css: str = "bar") -> Markup:
    """Horizontal bars, each with its label above it and its value at the right; longest bar = full width."""
    row = 44
    top = max((b.value for b in bars), default=0.0)
    parts = [_open(ident, max(row * len(bars), row), title, desc, "chart-bars")]
    for i, b in enumerate(bars):
        y = i * row
        share = b.value / top if top > 0 and math.isfinite(b.value) and b.value > 0 else 0.0
        parts.append(
            f"<g><title>{escape(b.label)}: {escape(b.text)}</title>"
            f'<text class="chart-label" x="0" y="{y + 15}">{escape(_clip(b.label))}</text>'
            f'<text class="chart-value" x="{WIDTH}" y="{y + 15}" text-anchor="end">{escape(b.text)}</text>'
            f'<rect class="track" x="0" y="{y + 22}" width="{WIDTH}" height="14" rx="3"/>'
            f'<rect class="{css}" x="0" y="{y + 22}" width="{_f(share * WIDTH)}" height="14" rx="3"/></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_ticks(top: float, count: int = 4) -> list[float]:
    if top <= 0:
        return [0.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(int(top // step) + 2)]


def histogram(
    ident: str, counts: Sequence[int], thresholds: dict[str, float], title: str, desc: str
) -> Markup:
    """Customers per tenth of churn probability; bars coloured by the risk tier their middle falls in."""
    height, left, bottom, top_pad = 230, 44, 40, 12
    plot_w, plot_h = WIDTH - left - 4, height - bottom - top_pad
    ticks = _nice_ticks(max(counts, default=0))
    scale = plot_h / ticks[-1] if ticks[-1] > 0 else 0.0
    parts = [_open(ident, height, title, desc, "chart-histogram")]
    for t in ticks:
        y = top_pad + plot_h - t * scale
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH}" y1="{_f(y)}" y2="{_f(y)}"/>'
            f'<text class="chart-axis" x="{left - 6}" y="{_f(y + 4)}" text-anchor="end">{t:,.0f}</text>'
        )
    slot = plot_w / max(len(counts), 1)
    high, medium = thresholds.get("high", 0.6), thresholds.get("medium", 0.3)
    for i, n in enumerate(counts):
        middle = (i + 0.5) / len(counts)
        tier = "high" if middle >= high else "medium" if middle >= medium else "low"
        x, h = left + i * slot + 3, n * scale
        label = f"{i * 10}–{(i + 1) * 10}%"
        parts.append(
            f"<g><title>{label} churn probability: {n:,} customers ({tier} risk)</title>"
            f'<rect class="tier-{tier}" x="{_f(x)}" y="{_f(top_pad + plot_h - h)}" width="{_f(slot - 6)}" '
            f'height="{_f(h)}" rx="2"/></g>'
        )
        if i % 2 == 0:
            parts.append(
                f'<text class="chart-axis" x="{_f(left + i * slot)}" y="{top_pad + plot_h + 16}" '
                f'text-anchor="middle">{i * 10}%</text>'
            )
    parts.append(
        f'<text class="chart-axis" x="{WIDTH - 2}" y="{top_pad + plot_h + 16}" text-anchor="end">100%</text>'
        f'<text class="chart-axis" x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
        "churn probability</text></svg>"
    )
    return Markup("".join(parts))


def signed_bars(ident: str, bars: Sequence[Bar], title: str, desc: str) -> Markup:
    """Bars from a zero line: positive values to the right (``bar-up``), negative to the left (``bar-down``)."""
    row, axis = 46, 28
    middle, reach = SIGNED_WIDTH / 2, SIGNED_WIDTH / 2 - 56
    top = max((abs(b.value) for b in bars if math.isfinite(b.value)), default=0.0) or 1.0
    height = row * len(bars) + axis
    parts = [_open(ident, height, title, desc, "chart-signed", SIGNED_WIDTH)]
    for i, b in enumerate(bars):
        y = i * row
        length = abs(b.value) / top * reach if math.isfinite(b.value) else 0.0
        up = b.value > 0
        x = middle if up else middle - length
        text_x = middle + length + 5 if up else middle - length - 5
        parts.append(
            f"<g><title>{escape(b.label)}: {escape(b.text)}</title>"
            f'<text class="chart-label" x="0" y="{y + 15}">{escape(_clip(b.label, 44))}</text>'
            f'<rect class="{"bar-up" if up else "bar-down"}" x="{_f(x)}" y="{y + 22}" width="{_f(length)}" '
            f'height="16" rx="2"/>'
            f'<text class="chart-value" x="{_f(text_x)}" y="{y + 35}" text-anchor="{"start" if up else "end"}">'
            f"{escape(b.text)}</text></g>"
        )
    bottom = row * len(bars)
    parts.extend(
        f'<line class="zero" x1="{middle}" x2="{middle}" y1="{i * row + 19}" y2="{i * row + 41}"/>'
        for i in range(len(bars))
    )
    parts.append(
        f'<text class="chart-axis" x="{middle - 8}" y="{bottom + 20}" text-anchor="end">← lowers risk</text>'
        f'<text class="chart-axis" x="{middle + 8}" y="{bottom + 20}">raises risk →</text></svg>'
    )
    return Markup("".join(parts))
