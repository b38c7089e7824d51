"""Counts as an SVG bar chart: one pure function, used by ``GET /tasks/{id}/histogram.svg``,
the web page (which inlines the same SVG) and anyone with a counts dict.

Design choices, and why:

* Horizontal bars, one row per outcome: bitstrings of any width stay readable without
  rotated labels, and the picture grows downwards as outcomes are added.
* Presentation attributes only, no ``<style>`` element: the page inlines this SVG into
  its DOM, where a stylesheet would leak into the whole document.
* A wide result (up to one outcome per shot) is cut to the ``max_bars`` most frequent
  outcomes, and the chart says how many it left out: the picture never gets huge.
* No dependencies (no matplotlib on the request path), and deterministic output, so
  tests can compare it and caches can keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Literal

WIDTH = 640
PAD = 16
ROW = 22
BAR = 16
TITLE_HEIGHT = 28
FOOT_HEIGHT = 24
CHAR = 7.3  # width of one 12 px monospace character
BAR_COLOR = "#4f6bed"
TEXT_COLOR = "#1f2328"
MUTED_COLOR = "#59636e"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
SANS = "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"


def _num(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def top_outcomes(
    counts: Mapping[str, int], max_bars: int, order: Literal["outcome", "count"] = "outcome"
) -> list[tuple[str, int]]:
    """The outcomes to draw: the ``max_bars`` most frequent, in ``order``.

    Ties in frequency keep the smaller bitstring, so the choice is deterministic.
    """
    chosen = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, max_bars)]
    if order == "outcome":
        chosen.sort(key=lambda kv: kv[0])
    return chosen


def histogram_svg(
    counts: Mapping[str, int],
    *,
    title: str | None = None,
    max_bars: int = 64,
    order: Literal["outcome", "count"] = "outcome",
) -> str:
    """An SVG document drawing ``counts`` (outcome -> number of shots) as a bar chart.

    Each bar is a ``<g class="bar" data-outcome=... data-count=...>`` with a ``<title>``
    tooltip, so the chart is readable by people, screen readers and tests alike.
    """
    for key, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"count for {key!r} must be a non-negative integer, got {value!r}")
    shots = sum(counts.values())
    rows = top_outcomes(counts, max_bars, order)
    hidden = len(counts) - len(rows)
    longest = max((len(k) for k, _ in rows), default=4)
    label_width = min(max(longest * CHAR + 12, 48), 300)
    value_width = 112
    bar_x = PAD + label_width
    bar_space = WIDTH - bar_x - value_width - PAD
    biggest = max((v for _, v in rows), default=0)

    top = PAD + (TITLE_HEIGHT if title else 0)
    height = top + max(len(rows), 1) * ROW + FOOT_HEIGHT + PAD
    summary = f"{shots} shots, {len(counts)} outcome{'s' if len(counts) != 1 else ''}"
    label = f"Histogram of measurement counts: {summary}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(label)}" '
        'class="qmill-histogram">',
        f"<title>{escape(title or label)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    if title:
        out.append(
            f'<text x="{PAD}" y="{PAD + 14}" font-family="{SANS}" font-size="14" '
            f'font-weight="600" fill="{TEXT_COLOR}">{escape(title)}</text>'
        )
    if not rows:
        out.append(
            f'<text x="{PAD}" y="{top + 15}" font-family="{SANS}" font-size="12" '
            f'fill="{MUTED_COLOR}">no counts</text>'
        )
    for index, (outcome, count) in enumerate(rows):
        y = top + index * ROW
        length = bar_space * count / biggest if biggest else 0.0
        if count and length < 1:
            length = 1.0  # a rare outcome still shows
        share = 100 * count / shots if shots else 0.0
        text_y = _num(y + BAR / 2 + 4)
        out.append(
            f'<g class="bar" data-outcome="{escape(outcome)}" data-count="{count}">'
            f"<title>{escape(outcome)}: {count} ({share:.1f}%)</title>"
            f'<text x="{_num(bar_x - 8)}" y="{text_y}" text-anchor="end" font-family="{MONO}" '
            f'font-size="12" fill="{TEXT_COLOR}">{escape(outcome)}</text>'
            f'<rect x="{_num(bar_x)}" y="{_num(y)}" width="{_num(length)}" height="{BAR}" '
            f'rx="2" fill="{BAR_COLOR}"/>'
            f'<text x="{_num(bar_x + length + 6)}" y="{text_y}" font-family="{SANS}" '
            f'font-size="12" fill="{TEXT_COLOR}">{count} '
            f'<tspan fill="{MUTED_COLOR}">({share:.1f}%)</tspan></text>'
            "</g>"
        )
    foot = summary if not hidden else f"{summary}; the {hidden} least frequent are not shown"
    out.append(
        f'<text x="{PAD}" y="{height - PAD - 2}" font-family="{SANS}" font-size="11" '
        f'fill="{MUTED_COLOR}">{escape(foot)}</text>'
    )
    out.append("</svg>")
    return "".join(out) + "\n"
