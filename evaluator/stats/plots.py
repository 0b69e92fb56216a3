"""Server-side SVG charts for the statistics pages: no JavaScript, no CDN, text escaped.

Each function takes plain rows and returns a complete <svg> element as a SafeString.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

ROW_HEIGHT = 26
LABEL_WIDTH = 260
PLOT_WIDTH = 420
MARGIN = 12
AXIS_HEIGHT = 28
INK = "#1d2433"
MUTED = "#5b6475"
ACCENT = "#3555d4"
GRID = "#dfe3ea"


@dataclass(frozen=True)
class Interval:
    """One row of an interval chart: a label, a point estimate and its confidence interval."""

    label: str
    value: float
    low: float
    high: float
    emphasis: bool = False


def interval_chart(
    rows: Sequence[Interval], *, lo: float, hi: float, reference: float | None, title: str, fmt: str = "{:.2f}"
) -> SafeString:
    """A forest plot: one horizontal CI bar and point per row on a shared axis from lo to hi."""
    if not rows:
        return mark_safe("")
    height = MARGIN * 2 + AXIS_HEIGHT + ROW_HEIGHT * len(rows)
    width = LABEL_WIDTH + PLOT_WIDTH + MARGIN * 3

    def x(value: float) -> float:
        clamped = min(max(value, lo), hi)
        return LABEL_WIDTH + MARGIN * 2 + (clamped - lo) / (hi - lo) * PLOT_WIDTH

    parts = [_open(width, height, title)]
    top = MARGIN
    for tick in _ticks(lo, hi):
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{height - AXIS_HEIGHT}" stroke="{GRID}"/>'
        )
        parts.append(
            f'<text x="{x(tick):.1f}" y="{height - AXIS_HEIGHT + 16}" text-anchor="middle" '
            f'font-size="11" fill="{MUTED}">{escape(fmt.format(tick))}</text>'
        )
    if reference is not None:
        parts.append(
            f'<line x1="{x(reference):.1f}" y1="{top}" x2="{x(reference):.1f}" '
            f'y2="{height - AXIS_HEIGHT}" stroke="{MUTED}" stroke-dasharray="4 3"/>'
        )
    for index, row in enumerate(rows):
        y = top + ROW_HEIGHT * index + ROW_HEIGHT / 2
        weight = ' font-weight="600"' if row.emphasis else ""
        parts.append(
            f'<text x="{LABEL_WIDTH + MARGIN}" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="{INK}"{weight}>{escape(_shorten(row.label))}</text>'
        )
        parts.append(
            f'<line x1="{x(row.low):.1f}" y1="{y:.1f}" x2="{x(row.high):.1f}" y2="{y:.1f}" '
            f'stroke="{ACCENT}" stroke-width="2"/>'
        )
        parts.append(
            f'<circle cx="{x(row.value):.1f}" cy="{y:.1f}" r="4" fill="{ACCENT}">'
            f"<title>{escape(row.label)}: {escape(fmt.format(row.value))} "
            f"[{escape(fmt.format(row.low))}, {escape(fmt.format(row.high))}]</title></circle>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text node above is escaped


def bar_chart(
    bars: Sequence[tuple[str, float]], *, lo: float, hi: float, reference: float | None, title: str, fmt: str = "{:.2f}"
) -> SafeString:
    """Horizontal bars from `lo` (or the reference line) to each value."""
    if not bars:
        return mark_safe("")
    rows = [Interval(label, value, min(value, reference or lo), max(value, reference or lo)) for label, value in bars]
    return interval_chart(rows, lo=lo, hi=hi, reference=reference, title=title, fmt=fmt)


SERIES_COLOURS = ("#3555d4", "#c2410c", "#15803d", "#7e22ce", "#0e7490", "#a16207")
LINE_WIDTH = 620
LINE_HEIGHT = 220
PANEL_WIDTH = 300
PANEL_HEIGHT = 170


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    width: int = LINE_WIDTH,
    height: int = LINE_HEIGHT,
    x_range: tuple[float, float] | None = None,
    colour_offset: int = 0,
) -> SafeString:
    """Lines of (x, y) points on shared axes with round ("nice") ticks, one colour and legend entry per series;
    empty when no points. `x_range` fixes the x-axis (small multiples share one), else it spans the points."""
    points = [point for values in series.values() for point in values]
    if not points:
        return mark_safe("")
    x_lo, x_hi = x_range or (min(x for x, _ in points), max(x for x, _ in points))
    x_ticks = nice_ticks(x_lo, x_hi, integer=True)
    y_ticks = nice_ticks(min(y for _, y in points), max(y for _, y in points))
    x_lo, x_hi, y_lo, y_hi = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    left, top, right, bottom = 56, MARGIN + 18 * len(series), width - MARGIN, height - AXIS_HEIGHT

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    parts = [_open(width, height, title)]
    y_format = tick_format(y_ticks)
    for tick in y_ticks:
        parts.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{right}" y2="{py(tick):.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED}">'
            f"{escape(y_format.format(tick))}</text>"
        )
    for tick in x_ticks:
        parts.append(
            f'<text x="{px(tick):.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11" fill="{MUTED}">'
            f"{escape(f'{tick:.0f}')}</text>"
        )
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{MUTED}"/>')
    parts.append(
        f'<text x="{right}" y="{height - 4}" text-anchor="end" font-size="11" fill="{MUTED}">{escape(x_label)}</text>'
    )
    for index, (name, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[(index + colour_offset) % len(SERIES_COLOURS)]
        parts.append(
            f'<text x="{left}" y="{MARGIN + 18 * index + 4}" font-size="12" fill="{colour}">■ {escape(name)}</text>'
        )
        if values:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in values)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            if len(values) == 1:  # a single step draws no line: mark it
                x, y = values[0]
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text node above is escaped


def small_multiples(
    series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, x_label: str
) -> list[SafeString]:
    """One small chart per series, each on its own y-axis with round ticks, all on the same x range, so that
    metrics of different scales (rewards in nats, accuracy as a share) each stay readable side by side."""
    xs = [x for values in series.values() for x, _ in values]
    if not xs:
        return []
    x_range = (min(xs), max(xs))
    return [
        line_chart(
            {name: values},
            title=f"{title}: {name}",
            x_label=x_label,
            width=PANEL_WIDTH,
            height=PANEL_HEIGHT,
            x_range=x_range,
            colour_offset=index + 1,
        )
        for index, (name, values) in enumerate(series.items())
        if values
    ]


def nice_ticks(lo: float, hi: float, *, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi]: a step of 1, 2, 2.5 or 5 × 10^k giving about `count` ticks, the
    first at or below `lo` and the last at or above `hi` (the axis spans them). `integer`: steps of at least 1."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:  # a flat series: a unit (or a tenth of its size) around it
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    ticks = [first + step * index for index in range(round((last - first) / step) + 1)]
    # Round away float noise (0.30000000000000004) so labels and comparisons read as the numbers they are.
    return [round(tick, 12) + 0.0 for tick in ticks]


def tick_format(ticks: Sequence[float]) -> str:
    """A format showing every tick with the decimals its step needs and no more (0.25 → 2 places, 5 → none)."""
    if len(ticks) < 2:
        return "{:g}"
    step = abs(ticks[1] - ticks[0])
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9 * max(1.0, step):
        decimals += 1
    return f"{{:.{decimals}f}}"


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="chart" font-family="system-ui, sans-serif">'
        f"<title>{escape(title)}</title>"
    )


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = (hi - lo) / (count - 1)
    return [lo + step * index for index in range(count)]


def _shorten(label: str, limit: int = 38) -> str:
    # 38 characters of 12 px text fill the label column (LABEL_WIDTH) without running off the chart's left edge.
    return label if len(label) <= limit else label[: limit - 1] + "…"
