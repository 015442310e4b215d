"""One number format for the whole report: counts, rates, intervals, p-values, thresholds.

- Counts are integers with thousands separators and never carry an interval.
- Rates and other real numbers show three significant digits (``0.270``, ``0.0345``,
  ``12.3``), never scientific notation in the ordinary range.
- An interval uses the decimals of the largest of its value and bounds, so the three
  numbers line up; an interval of zero width is not shown as if it were evidence.
- p-values read ``< 0.001`` or two significant digits (``0.054``, ``0.19``, ``1.0``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "OP_SYMBOLS",
    "OP_WORDS",
    "ZERO_WIDTH_CI",
    "decimals_for",
    "format_number",
    "format_p_value",
    "format_threshold",
    "format_value_ci",
    "is_count",
]

OP_SYMBOLS: dict[str, str] = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}
OP_WORDS: dict[str, str] = {"<=": "at most", "<": "below", ">=": "at least", ">": "above"}
# Shown in place of an interval whose bounds coincide: the resamples did not vary (no
# event in a group, say), which says nothing about how precise the estimate is.
ZERO_WIDTH_CI = "CI not estimable"
_MAX_DECIMALS = 8
P_FLOOR = 0.001


def decimals_for(x: float) -> int:
    """Decimal places that show ``x`` with three significant digits.

    No decimals from 100 up (the integer part says enough), one from 10, two from 1;
    below 1, as many as three significant digits need (at most 8).

    Examples
    --------
    >>> [decimals_for(x) for x in (1234.5, 12.3, 1.5, 0.912, 0.034, 0.0012, 0.0)]
    [0, 1, 2, 3, 4, 5, 3]
    """
    a = abs(float(x))
    if not math.isfinite(a) or a == 0.0:
        return 3
    if a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1:
        return 2
    # Round first, so that 0.0999996 (which prints as 0.100) gets 3 decimals, not 4.
    digits = 2 - math.floor(math.log10(float(f"{a:.3g}")))
    return min(_MAX_DECIMALS, digits)


def is_count(*xs: Any) -> bool:
    """Whether every given number is a whole number (a count)."""
    vals = [x for x in xs if x is not None]
    return bool(vals) and all(
        isinstance(x, (int, float))
        and not isinstance(x, bool)
        and math.isfinite(float(x))
        and float(x).is_integer()
        and abs(float(x)) < 1e15
        for x in vals
    )


def format_number(x: Any, decimals: int | None = None) -> str:
    """Format one number for the report; ``"–"`` when missing or not finite.

    Integers (and bools) are written without decimals, with thousands separators;
    other numbers with three significant digits unless ``decimals`` is given.

    Examples
    --------
    >>> format_number(0.91234), format_number(12345), format_number(None), format_number(0.034)
    ('0.912', '12,345', '–', '0.0340')
    >>> format_number(0.27), format_number(0.0061), format_number(0.5, decimals=2)
    ('0.270', '0.00610', '0.50')
    """
    if x is None or isinstance(x, bool):
        return "–" if x is None else str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(f):
        return "–"
    d = decimals_for(f) if decimals is None else decimals
    if f != 0.0 and abs(f) < 0.5 * 10.0**-d:
        return f"{f:.1e}"
    text = f"{f:,.{d}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text.replace(",", "")) == 0 else text


def _bound(b: Any) -> float | None:
    if b is None:
        return None
    try:
        f = float(b)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def format_value_ci(
    value: float | None, ci: Iterable[float | None] | None = None, *, decimals: int | None = None
) -> str:
    """Format a value with its confidence interval as ``"0.912 [0.881, 0.934]"``.

    The bounds use the same decimals as the value (those of the largest of the three).
    A whole-number value without an interval is a count. An interval of zero width
    (both bounds equal) is replaced by :data:`ZERO_WIDTH_CI`.

    Examples
    --------
    >>> format_value_ci(0.9123, (0.881, 0.934))
    '0.912 [0.881, 0.934]'
    >>> format_value_ci(0.034, [0.0121, 0.0562])
    '0.0340 [0.0121, 0.0562]'
    >>> format_value_ci(0.0, (0.0, 0.0)), format_value_ci(1140.0), format_value_ci(None)
    ('0.000 [CI not estimable]', '1,140', '–')
    """
    v = _bound(value)
    if v is None:
        return "–"
    bounds = None if ci is None else [_bound(b) for b in ci]
    if bounds is not None and len(bounds) != 2:
        bounds = None
    if bounds is None and decimals is None and is_count(v):
        return format_number(int(v))
    if decimals is None:
        mags = [abs(x) for x in [v, *(bounds or [])] if x is not None and x != 0.0]
        decimals = decimals_for(max(mags)) if mags else 3
    text = format_number(v, decimals)
    if bounds is None:
        return text
    lo, hi = bounds
    if lo is not None and hi is not None and lo == hi:
        return f"{text} [{ZERO_WIDTH_CI}]"
    return f"{text} [{format_number(lo, decimals)}, {format_number(hi, decimals)}]"


def format_p_value(p: Any) -> str:
    """A p-value as ``"< 0.001"`` or with two significant digits; ``"–"`` when missing.

    Examples
    --------
    >>> [format_p_value(p) for p in (0.0004, 0.00123, 0.0539, 0.188, 1.0, None)]
    ['< 0.001', '0.0012', '0.054', '0.19', '1.0', '–']
    """
    f = _bound(p)
    if f is None:
        return "–"
    if f < P_FLOOR:
        return f"< {P_FLOOR:g}"
    return f"{min(f, 1.0):#.2g}".rstrip(".")


def format_threshold(op: str | None, threshold: float | None) -> str:
    """Format ``op threshold`` as ``"≤ 0.05"`` (``"–"`` when there is none).

    A threshold is a number someone wrote in a policy: it is shown as written.

    Examples
    --------
    >>> format_threshold("<=", 0.05), format_threshold(">=", 0.75), format_threshold(None, None)
    ('≤ 0.05', '≥ 0.75', '–')
    """
    t = _bound(threshold)
    if op is None or t is None:
        return "–"
    return f"{OP_SYMBOLS.get(op, op)} {t:g}"
