"""The score chart of a run, written as SVG.

Drawn directly rather than with a plotting library: importing matplotlib cost every run
about half a second of CPU, more than all of its orchestration at 200 ms per LLM call,
and this chart is a few dozen shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

ACCEPTED, REJECTED, CURRENT, VAL = "#2ca02c", "#d62728", "#555555", "#1f77b4"
TEST_BEST, TEST_BASELINE = "#ff7f0e", "#999999"
WIDTH, HEIGHT = 860, 480
PLOT_LEFT, PLOT_RIGHT = 64, 640  # the legends sit right of the panels
MAX_STEP_LABELS = 16
DASHES = {"-": "", "--": "6 3", ":": "2 3"}  # legend and line styles: solid, dashed, dotted


def _px(value: float) -> str:
    """A coordinate to a tenth of a pixel, which keeps the file small."""
    return f"{value:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class Panel:
    """A plot area: score `low` at its bottom edge, `high` at its top."""

    top: float
    bottom: float
    low: float
    high: float

    def y(self, score: float) -> float:
        return self.bottom - (score - self.low) / (self.high - self.low) * (self.bottom - self.top)


@dataclass(frozen=True)
class StepAxis:
    """Steps from `first` at the left edge of the panels to `last` at the right."""

    first: float
    last: float

    def x(self, step: float) -> float:
        return PLOT_LEFT + (step - self.first) / (self.last - self.first) * (PLOT_RIGHT - PLOT_LEFT)


@dataclass
class Canvas:
    """The chart's SVG elements, in drawing order."""

    elements: list[str] = field(default_factory=list)

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        colour: str,
        width: float = 1,
        dash: str = "",
        opacity: float = 1,
    ) -> None:
        extra = (f' stroke-dasharray="{dash}"' if dash else "") + (
            f' stroke-opacity="{opacity}"' if opacity < 1 else ""
        )
        self.elements.append(
            f'<line x1="{_px(x1)}" y1="{_px(y1)}" x2="{_px(x2)}" y2="{_px(y2)}" '
            f'stroke="{colour}" stroke-width="{width}"{extra}/>'
        )

    def path(self, points: list[tuple[float, float]], colour: str, width: float) -> None:
        d = "M" + " L".join(f"{_px(x)},{_px(y)}" for x, y in points)
        self.elements.append(
            f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width}"/>'
        )

    def rect(self, x: float, y: float, w: float, h: float, fill: str, opacity: float = 1) -> None:
        self.elements.append(
            f'<rect x="{_px(x)}" y="{_px(y)}" width="{_px(w)}" height="{_px(h)}" fill="{fill}" '
            f'fill-opacity="{opacity}"/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        anchor: str = "start",
        size: int = 11,
        rotate: bool = False,
    ) -> None:
        turn = f' transform="rotate(-90 {_px(x)} {_px(y)})"' if rotate else ""
        self.elements.append(
            f'<text x="{_px(x)}" y="{_px(y)}" font-size="{size}" text-anchor="{anchor}"{turn}>'
            f"{escape(content)}</text>"
        )

    def marker(self, kind: str, x: float, y: float, colour: str, size: float = 8) -> None:
        """o circle, ^ and v triangles, x cross, * star: the chart's legend explains them."""
        r = size / 2
        if kind == "o":
            self.elements.append(
                f'<circle cx="{_px(x)}" cy="{_px(y)}" r="{_px(r)}" fill="{colour}"/>'
            )
        elif kind == "x":
            self.line(x - r, y - r, x + r, y + r, colour, 2)
            self.line(x - r, y + r, x + r, y - r, colour, 2)
        else:
            if kind == "*":  # ten corners, alternating outer and inner radius
                radii = [r if i % 2 == 0 else 0.45 * r for i in range(10)]
                corners = [
                    (x + radius * math.sin(math.pi * i / 5), y - radius * math.cos(math.pi * i / 5))
                    for i, radius in enumerate(radii)
                ]
            else:
                tip = -r if kind == "^" else r
                corners = [(x, y + tip), (x - r, y - tip), (x + r, y - tip)]
            points = " ".join(f"{_px(px)},{_px(py)}" for px, py in corners)
            self.elements.append(f'<polygon points="{points}" fill="{colour}"/>')

    def svg(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>'
            + "".join(self.elements)
            + "</svg>"
        )


@dataclass(frozen=True)
class LegendEntry:
    marker: str  # a Canvas.marker kind, or "-" / "--" / ":" for a line
    colour: str
    label: str


def _legend(canvas: Canvas, panel: Panel, entries: list[LegendEntry]) -> None:
    x = PLOT_RIGHT + 16
    for i, entry in enumerate(entries):
        y = panel.top + 10 + 17 * i
        if entry.marker in DASHES:
            canvas.line(x - 8, y, x + 8, y, entry.colour, 2, DASHES[entry.marker])
        else:
            canvas.marker(entry.marker, x, y, entry.colour)
        canvas.text(x + 14, y + 4, entry.label)


def _labelled_steps(steps: int) -> range:
    return range(0, steps + 1, max(1, math.ceil((steps + 1) / MAX_STEP_LABELS)))


def _frame(canvas: Canvas, panel: Panel, axis: StepAxis, steps: int, label: str) -> None:
    for score in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = panel.y(score)
        canvas.line(PLOT_LEFT, y, PLOT_RIGHT, y, "#000", 1, opacity=0.12)
        canvas.text(PLOT_LEFT - 6, y + 4, f"{score:g}", anchor="end", size=10)
    for step in _labelled_steps(steps):
        canvas.line(axis.x(step), panel.top, axis.x(step), panel.bottom, "#000", 1, opacity=0.08)
    canvas.elements.append(
        f'<rect x="{PLOT_LEFT}" y="{_px(panel.top)}" width="{PLOT_RIGHT - PLOT_LEFT}" '
        f'height="{_px(panel.bottom - panel.top)}" fill="none" stroke="#444"/>'
    )
    canvas.text(16, (panel.top + panel.bottom) / 2, label, anchor="middle", rotate=True)


@dataclass(frozen=True)
class Proposal:
    """One iteration row as the chart needs it (proposal 0 = a batch skipped as perfect)."""

    step: int
    proposal: int
    batch_before: float | None
    batch_after: float | None
    val_after: float | None
    accepted: bool


def score_chart(
    title: str,
    steps: int,
    proposals: list[Proposal],
    val_by_step: list[tuple[int, float]],
    best_test: float | None,
    baseline_test: float | None,
) -> str:
    """Two panels over the steps: train batch before/after each proposal, and val."""
    canvas = Canvas()
    steps = max(steps, 1)
    axis = StepAxis(-0.3, steps + 0.6)
    batch = Panel(top=40, bottom=270, low=-0.1, high=1.08)
    val = Panel(top=295, bottom=435, low=-0.05, high=1.08)
    canvas.text(WIDTH / 2, 22, title, anchor="middle", size=13)
    for it in proposals:
        if it.accepted:
            canvas.rect(axis.x(it.step) - 4, batch.top, 8, batch.bottom - batch.top, ACCEPTED, 0.15)
    _frame(canvas, batch, axis, steps, "train batch score")
    _frame(canvas, val, axis, steps, "val score")

    for it in proposals:
        if it.batch_before is None:
            continue
        x0, x = axis.x(it.step), axis.x(it.step + 0.1 * it.proposal)
        canvas.marker("o", x0, batch.y(it.batch_before), CURRENT)
        if it.proposal == 0:
            continue
        if it.batch_after is None:  # rejected before it was scored
            canvas.marker("x", x, batch.y(it.batch_before), REJECTED)
            continue
        colour = ACCEPTED if it.accepted else REJECTED
        canvas.line(x0, batch.y(it.batch_before), x, batch.y(it.batch_after), colour)
        canvas.marker("^" if it.accepted else "v", x, batch.y(it.batch_after), colour, 9)
    _legend(
        canvas,
        batch,
        [
            LegendEntry("o", CURRENT, "current prompt"),
            LegendEntry("^", ACCEPTED, "accepted candidate"),
            LegendEntry("v", REJECTED, "rejected candidate"),
            LegendEntry("x", REJECTED, "rejected, not scored"),
        ],
    )

    entries: list[LegendEntry] = []
    if val_by_step:
        line = [(axis.x(val_by_step[0][0]), val.y(val_by_step[0][1]))]
        for step, score in val_by_step[1:]:
            line += [(axis.x(step), line[-1][1]), (axis.x(step), val.y(score))]
        canvas.path(line, VAL, 2)
        for it in proposals:
            if it.accepted and it.val_after is not None:
                canvas.marker("*", axis.x(it.step), val.y(it.val_after), ACCEPTED, 15)
        entries += [
            LegendEntry("-", VAL, "val, current prompt"),
            LegendEntry("*", ACCEPTED, "accepted"),
        ]
    for score, colour, style, label in (
        (best_test, TEST_BEST, "--", "test, best"),
        (baseline_test, TEST_BASELINE, ":", "test, baseline"),
    ):
        if score is not None:
            y = val.y(score)
            canvas.line(PLOT_LEFT, y, PLOT_RIGHT, y, colour, 1.5, DASHES[style])
            entries.append(LegendEntry(style, colour, label))
    _legend(canvas, val, entries)

    for step in _labelled_steps(steps):
        label = "baseline" if step == 0 else str(step)
        canvas.text(axis.x(step), val.bottom + 16, label, anchor="middle", size=10)
    canvas.text((PLOT_LEFT + PLOT_RIGHT) / 2, HEIGHT - 10, "step", anchor="middle")
    return canvas.svg()
