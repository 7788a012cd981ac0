"""How an estimate with its interval is written, everywhere (tables, pages, the CLI, reports)."""

from __future__ import annotations

import polars as pl

DIGITS = 3


def format_ci(value: float | None, lo: float | None, hi: float | None, *, digits: int = DIGITS) -> str:
    """``0.42 [0.35, 0.5]``; an empty string where there is no value."""
    if value is None:
        return ""
    if lo is None or hi is None:
        return f"{round(value, digits)}"
    return f"{round(value, digits)} [{round(lo, digits)}, {round(hi, digits)}]"


def ci_expr(value: str | None, lo: str, hi: str, *, digits: int = DIGITS) -> pl.Expr:
    """``format_ci`` over columns; ``value=None`` writes the interval alone (``[lo, hi]``)."""
    interval = pl.format("[{}, {}]", pl.col(lo).round(digits), pl.col(hi).round(digits))
    if value is None:
        return interval
    return pl.format("{} {}", pl.col(value).round(digits), interval)
