"""Bar charts drawn on the server as inline SVG: no JavaScript, prints as it shows, readable by screen readers.

Each chart carries a <title> and <desc> for the whole picture and a <title> per bar (what a
pointer or a screen reader announces). Templates put the same figures in a data table under
the chart (`cases/partials/list_chart.html`), so nothing depends on seeing the picture.

Bar lengths are computed with Decimal: the values are exact amounts (base units or money)
and only the final coordinate is rounded, to a tenth of a pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
LABEL_WIDTH = 210  # left column: the bar's label
VALUE_WIDTH = 230  # right of the longest bar: the value as written (an ETH amount has 18 decimals)
ROW_HEIGHT = 26
BAR_HEIGHT = 16
PAD = 8
COLOUR = "#0b3d91"


@dataclass(frozen=True)
class Bar:
    label: str
    value: int | Decimal  # drives the bar's length
    display: str  # the value as people read it (asset precision, money with two decimals)


@dataclass
class Chart:
    """A titled bar chart and the headings of its fallback table."""

    chart_id: str
    title: str
    label_heading: str
    value_heading: str
    bars: Sequence[Bar] = field(default_factory=list)
    description: str = ""

    @cached_property
    def svg(self) -> SafeString:
        return bar_chart(self.bars, chart_id=self.chart_id, title=self.title, description=self.description)

    @property
    def is_empty(self) -> bool:
        return not any(bar.value for bar in self.bars)


def _coordinate(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _shorten(label: str, limit: int = 30) -> str:
    # The full label stays in the bar's <title> and in the table under the chart.
    return label if len(label) <= limit else label[: limit - 1] + "…"


def bar_chart(bars: Sequence[Bar], *, chart_id: str, title: str, description: str = "") -> SafeString:
    """Horizontal bars, one row per bar, lengths proportional to `value` (negative values draw as zero)."""
    plot_width = Decimal(WIDTH - LABEL_WIDTH - VALUE_WIDTH - 2 * PAD)
    largest = max((Decimal(bar.value) for bar in bars), default=Decimal(0))
    height = max(len(bars), 1) * ROW_HEIGHT + 2 * PAD

    def row(index: int, bar: Bar) -> SafeString:
        value = max(Decimal(bar.value), Decimal(0))
        length = plot_width * value / largest if largest > 0 else Decimal(0)
        top = Decimal(PAD + index * ROW_HEIGHT)
        baseline = _coordinate(top + BAR_HEIGHT - 2)
        x = Decimal(LABEL_WIDTH + PAD)
        return format_html(
            '<g class="bar"><title>{}: {}</title>'
            '<text x="{}" y="{}" text-anchor="end">{}</text>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"></rect>'
            '<text x="{}" y="{}">{}</text></g>',
            bar.label, bar.display,
            LABEL_WIDTH - 6, baseline, _shorten(bar.label),
            _coordinate(x), _coordinate(top), _coordinate(length), BAR_HEIGHT, COLOUR,
            _coordinate(x + length + 6), baseline, bar.display,
        )

    rows = mark_safe("\n".join(row(i, bar) for i, bar in enumerate(bars)))  # each row escaped by format_html
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {} {}" '
        'width="100%" font-size="12" aria-labelledby="{}-title {}-desc">'
        '<title id="{}-title">{}</title><desc id="{}-desc">{}</desc>\n{}</svg>',
        WIDTH, height, chart_id, chart_id, chart_id, title, chart_id, description or title, rows,
    )
