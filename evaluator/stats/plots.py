"""Server-side SVG charts for the statistics pages: no JavaScript, no CDN, text escaped.

Each function takes plain rows and returns a complete <svg> element as a SafeString.
"""

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


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, x_label: str) -> SafeString:
    """Lines of (x, y) points on shared axes, one colour and legend entry per series; empty when no points."""
    points = [point for values in series.values() for point in values]
    if not points:
        return mark_safe("")
    x_lo, x_hi = min(x for x, _ in points), max(x for x, _ in points)
    y_lo, y_hi = min(y for _, y in points), max(y for _, y in points)
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1)
    left, top, right, bottom = 56, MARGIN + 18 * len(series), LINE_WIDTH - MARGIN, LINE_HEIGHT - AXIS_HEIGHT

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    parts = [_open(LINE_WIDTH, LINE_HEIGHT, title)]
    for tick in _ticks(y_lo, y_hi):
        parts.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{right}" y2="{py(tick):.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED}">'
            f"{escape(f'{tick:.3g}')}</text>"
        )
    for tick in _ticks(x_lo, x_hi):
        parts.append(
            f'<text x="{px(tick):.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11" fill="{MUTED}">'
            f"{escape(f'{tick:.0f}')}</text>"
        )
    parts.append(
        f'<text x="{right}" y="{LINE_HEIGHT - 4}" text-anchor="end" font-size="11" fill="{MUTED}">'
        f"{escape(x_label)}</text>"
    )
    for index, (name, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        parts.append(
            f'<text x="{left}" y="{MARGIN + 18 * index + 4}" font-size="12" fill="{colour}">■ {escape(name)}</text>'
        )
        if values:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in values)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text node above is escaped


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="chart" font-family="system-ui, sans-serif">'
        f"<title>{escape(title)}</title>"
    )


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = (hi - lo) / (count - 1)
    return [lo + step * index for index in range(count)]


def _shorten(label: str, limit: int = 42) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
