"""How every view writes a score: three decimals, or '-' where there is none."""

from __future__ import annotations


def score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
