"""Numbers and words as a lab reports them, for the pages only (the tables keep full precision).

Contract: pure functions from a table cell's text to display text. A cell that is empty stays
empty; a cell that is not a number is shown as written (never hidden, never turned into 0).
Rounding is the only change: donor NK/uL and its interval to 1 decimal, percentages to 1 decimal
(2 below 1 %), counts as integers, doses as ``3.0 x 10^6 cells/kg``, booleans ``yes``/``no``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

from nkflow.clinical.visits import KINDS


def number(text: str) -> float | None:
    """A cell as a finite float, or None (empty, not a number, infinite)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fixed(text: str, decimals: int) -> str:
    """``text`` rounded to ``decimals`` places, half away from zero.

    The rounding is on the decimal digits as written: ``12.25`` -> ``12.3``, as a lab rounds;
    binary floats would give ``12.2``.
    """
    if number(text) is None:
        return text
    step = Decimal(1).scaleb(-decimals)
    return str(Decimal(text.strip()).quantize(step, rounding=ROUND_HALF_UP))


def per_ul(text: str) -> str:
    """Cells/uL: 1 decimal (``75.2441`` -> ``75.2``)."""
    return fixed(text, 1)


def pct(text: str) -> str:
    """A percentage: 1 decimal, 2 below 1 % (``0.4871`` -> ``0.49``, ``38.04`` -> ``38.0``)."""
    v = number(text)
    if v is None:
        return text
    return fixed(text, 2 if abs(v) < 1 else 1)


def count(text: str) -> str:
    """An event or cell count, or a day: an integer (``380`` stays ``380``, ``12.0`` -> ``12``)."""
    return fixed(text, 0)


def ratio(text: str) -> str:
    """A fold change: 1 decimal (``9.8468`` -> ``9.8``)."""
    return fixed(text, 1)


def yes_no(text: str) -> str:
    """``true``/``false`` (any case) as ``yes``/``no``; other words (``unknown``) as written."""
    low = text.strip().lower()
    return {"true": "yes", "false": "no"}.get(low, text)


def dose(text: str) -> str:
    """Cells/kg in scientific notation: ``3e+06`` -> ``3.0 x 10^6 cells/kg``."""
    v = number(text)
    if v is None:
        return text
    if v == 0:
        return "0 cells/kg"
    exp = math.floor(math.log10(abs(v)))
    mant = v / 10**exp
    if round(mant, 1) >= 10:
        mant, exp = mant / 10, exp + 1
    return f"{mant:.1f} x 10^{exp} cells/kg"


def interval(lo: str, hi: str, fmt: Callable[[str], str] = per_ul) -> str:
    """``lo – hi`` formatted, or ``''`` when a bound is missing."""
    return f"{fmt(lo)} – {fmt(hi)}" if lo and hi else ""


COUNT_COLUMNS = {
    "study_day",
    "n_visits",
    "n_infusions",
    "n_samples_in_window",
    "treg_study_day7",
    "alc_per_ul",  # a cell count from the analyser
}


def formatter_for(column: str) -> Callable[[str], str] | None:
    """The display formatter of a visits/endpoints column, chosen by its name (names carry units).

    None means the column is shown as written.
    """
    if column.startswith("cells_per_kg"):
        return dose
    if "_pct" in column:
        return pct
    if column.endswith(("_events", "_day")) or column in COUNT_COLUMNS:
        return count
    if "_per_ul" in column:
        return per_ul
    if KINDS.get(column) == "boolean":  # the yes/no columns of visits.tsv and endpoints.tsv
        return yes_no
    return None
