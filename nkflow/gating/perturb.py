"""Plausible re-gatings of one tube, and two populations counted under each.

Every fitted boundary on the way to the two populations is moved across its plausible range, and
the two populations are counted for each.

Contract
--------
:func:`perturb_counts` takes a :class:`~nkflow.gating.GatingResult` (the boundaries as fitted,
the events' columns as gating computed them) and the ids of two populations (the endpoint's
numerator, ``nk``, and its denominator, ``live``) and returns a :class:`Perturbation`: the
boundaries that were moved with their ranges, the ones that were not and why, and a table with
one row per re-gating:

* draw 0, ``varied = none``: every boundary as fitted (the counts of ``counts.tsv``);
* draws 1..R, ``varied = all``: every boundary drawn at once, independently and uniformly in its
  range (a shape's scale log-uniformly);
* then, per boundary, ``sweep_points`` values across its range with the others as fitted
  (``varied = <boundary id>``): which single boundary can move a verdict.

Ranges (``docs/uncertainty.md``):

``valley``           where the fit's own density stays below the valley floor plus
                     ``valley_density_frac`` of the lower of the two peaks' heights, between the
                     two peaks and inside the bound's declared ``bounds``;
``tail``             the distance from the main peak (k SD) times ``1 -/+ tail_frac``;
``singlet_band``     the band's half-widths (around the median ratio) times ``s``;
``scatter_cluster``  the ellipse's axes times ``s`` (distance^2 times ``s^2``); ``s`` between
                     ``1/shape_scale`` and ``shape_scale``;
``same_as``          follows the bound it copies; ``fmo`` and fixed bounds are not moved.

Nothing is re-fitted and the tree is not re-evaluated per draw: every event's value on every
moving boundary (its gate-unit value, FSC-H/FSC-A ratio or Mahalanobis distance) is computed
once; an event whose values keep it on the same side of every boundary over all draws is
counted once, and only the events that some draw moves are compared per draw. Draw 0 equals
the gating engine's counts (the same comparisons in gate units).

Randomness only through ``numpy.random.default_rng([random_state, seed])``; the caller derives
``seed`` from the tube's ids (:func:`tube_seed`), so the same tube gives the same table.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nkflow.gating.tree import Gate

logger = logging.getLogger(__name__)

#: leading columns of a perturbation table (boundary columns, one per moved boundary, follow)
COLUMNS = ("draw", "varied", "nk_events", "lymphocyte_events")
#: rows per block of uncertain events compared at once (memory: block x draws booleans)
_BLOCK = 1 << 14


@dataclass(frozen=True)
class PerturbSettings:
    """The ``uncertainty.perturbation`` settings (``workflow/schemas/uncertainty.schema.yaml``)."""

    draws: int
    valley_density_frac: float
    shape_scale: float
    tail_frac: float
    sweep_points: int
    random_state: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PerturbSettings:
        """From the ``uncertainty.perturbation`` block, checked by its schema, defaults filled."""
        from nkflow.schemas import build_settings

        return build_settings(  # type: ignore[no-any-return]
            cls, d, "uncertainty", prefix="uncertainty.perturbation", path=("perturbation",)
        )


@dataclass(frozen=True)
class Boundary:
    """One moved boundary: its fitted value and plausible range (gate units, or a scale)."""

    id: str
    gate: str
    marker: str
    side: str
    method: str
    fitted: float
    low: float
    high: float

    @property
    def where(self) -> str:
        """``<gate>.<marker>`` for a bound, the gate id for a shape (as in QC reason codes)."""
        return f"{self.gate}.{self.marker}" if self.marker else self.gate


@dataclass
class Perturbation:
    """Result of :func:`perturb_counts`."""

    table: Any  # pandas.DataFrame: COLUMNS + one column per boundary
    boundaries: list[Boundary] = field(default_factory=list)
    not_perturbed: list[dict[str, str]] = field(default_factory=list)
    seed: tuple[int, int] = (0, 0)

    def record(self) -> dict[str, Any]:
        """The provenance record (JSON-ready)."""
        return {
            "seed": list(self.seed),
            "boundaries": [asdict(b) for b in self.boundaries],
            "not_perturbed": list(self.not_perturbed),
            "rows": int(len(self.table)),
        }


def tube_seed(sample_id: str, tube: str) -> int:
    """A 63-bit seed from the tube's ids (the same tube, the same draws, in any batch)."""
    digest = hashlib.sha256(f"{sample_id}\t{tube}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ----------------------------------------------------------------------------- ranges


def valley_range(
    grid: np.ndarray,
    density: np.ndarray,
    value: float,
    peaks: tuple[int, int],
    bounds: tuple[float, float],
    frac: float,
) -> tuple[float, float]:
    """Where a valley boundary may plausibly lie (gate units).

    The stretch of the density around the valley floor (at ``value``) where it stays at or
    below ``floor + frac x h``, ``h`` the height of the lower of the highest peaks on its two
    sides (as in the fit's depth), not past the two peaks ``peaks`` (grid indices) and inside
    ``bounds``. A shallow valley (floor near the peaks) gives a wide range, a deep narrow one a
    narrow range; a valley floor above ``frac x h`` still has a range (it is measured from the
    floor).
    """
    i = int(np.argmin(np.abs(grid - value)))
    a, b = int(peaks[0]), int(peaks[1])
    floor = float(density[i])
    h = float(min(density[: i + 1].max(), density[i:].max()))
    level = floor + frac * h
    left = np.flatnonzero(density[a : i + 1] > level)
    right = np.flatnonzero(density[i : b + 1] > level)
    lo_i = a + int(left[-1]) + 1 if left.size else a
    hi_i = i + int(right[0]) - 1 if right.size else b
    lo, hi = float(grid[lo_i]), float(grid[hi_i])
    lo, hi = max(lo, float(bounds[0])), min(hi, float(bounds[1]))
    return min(lo, value), max(hi, value)


def _ranges(
    res: Any, gates: Sequence[str], s: PerturbSettings
) -> tuple[list[Boundary], dict[str, str], list[dict[str, str]]]:
    """Moved boundaries, ``same_as`` ties (bound id -> moved bound id) and the others."""
    moved: list[Boundary] = []
    ties: dict[str, str] = {}
    fixed: list[dict[str, str]] = []
    by_marker: dict[tuple[str, str], str] = {}
    f_scale = float(s.shape_scale)
    for f in res.fits:
        if f["gate"] not in gates:
            continue
        if f["side"] == "shape":
            bid = f"{f['gate']}.scale"
            if f["method"] not in ("singlet_band", "scatter_cluster"):
                # a reviewer's override (or any shape not fitted here) is held where it was set
                fixed.append(
                    {"id": bid, "method": f["method"], "reason": f"{f['method']} is not moved"}
                )
                continue
            moved.append(
                Boundary(bid, f["gate"], "", "scale", f["method"], 1.0, 1 / f_scale, f_scale)
            )
            continue
        marker, side, value = f["markers"][0], f["side"], float(f["value"])
        bid = f"{f['gate']}.{marker}.{side}"
        method = f["method"]
        if method == "valley":
            prof = res.profiles.get(bid)
            if prof is None:
                fixed.append({"id": bid, "method": method, "reason": "no density profile"})
                continue
            lo, hi = valley_range(
                prof["grid"], prof["density"], value, prof["peaks"], prof["bounds"],
                s.valley_density_frac,
            )  # fmt: skip
        elif method == "tail":
            mode = float(f["stats"]["mode"])
            dist = value - mode
            ends = (mode + dist * (1 - s.tail_frac), mode + dist * (1 + s.tail_frac))
            lo, hi = min(ends), max(ends)
        elif method == "same_as":
            ref = by_marker.get((str(f["stats"].get("gate")), marker))
            if ref is not None:
                ties[bid] = ref
            else:
                fixed.append({"id": bid, "method": method, "reason": "its source is not moved"})
            continue
        else:
            fixed.append({"id": bid, "method": method, "reason": f"{method} bounds are not moved"})
            continue
        by_marker[(f["gate"], marker)] = bid
        moved.append(Boundary(bid, f["gate"], marker, side, method, value, lo, hi))
    return moved, ties, fixed


# ----------------------------------------------------------------------------- draws


def _parameters(
    bounds: Sequence[Boundary], s: PerturbSettings, seed: int
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The ``varied`` label of every row and each boundary's value in every row."""
    rng = np.random.default_rng([int(s.random_state), int(seed)])
    r, k = int(s.draws), int(s.sweep_points)
    labels = ["none"] + ["all"] * r + [b.id for b in bounds for _ in range(k)]
    n = len(labels)
    values: dict[str, np.ndarray] = {}
    for j, b in enumerate(bounds):
        col = np.full(n, b.fitted, dtype=np.float64)
        u = rng.random(r)
        if b.side == "scale":
            col[1 : r + 1] = np.exp(math.log(b.low) + u * (math.log(b.high) - math.log(b.low)))
            sweep = np.geomspace(b.low, b.high, k)
        else:
            col[1 : r + 1] = b.low + u * (b.high - b.low)
            sweep = np.linspace(b.low, b.high, k)
        start = 1 + r + j * k
        col[start : start + k] = sweep
        values[b.id] = col
    return labels, values


class _Condition:
    """One gate's test on every kept event, as a function of the moving parameters."""

    def __init__(self, fixed: np.ndarray) -> None:
        #: events the gate keeps whatever the draw (and, for moved gates, where the test is
        #: decided by the values below)
        self.fixed = fixed
        self.tests: list[tuple[np.ndarray, np.ndarray, bool]] = []  # (score, thresholds, ge)

    def add(self, score: np.ndarray, thresholds: np.ndarray, ge: bool) -> None:
        self.tests.append((score, np.asarray(thresholds, dtype=np.float64), ge))

    def always(self) -> tuple[np.ndarray, np.ndarray]:
        """(in for every draw, out for every draw) per event."""
        inn = self.fixed.copy()
        out = ~self.fixed
        for score, thr, ge in self.tests:
            with np.errstate(invalid="ignore"):
                if ge:
                    inn &= score >= thr.max()
                    out |= ~(score >= thr.min())
                else:
                    inn &= score < thr.min()
                    out |= ~(score < thr.max())
        return inn, out

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), draws) booleans: the test on ``rows`` for every draw."""
        draws = max((t.size for _, t, _ in self.tests), default=1)
        m = np.repeat(self.fixed[rows][:, None], draws, axis=1)
        for score, thr, ge in self.tests:
            x = score[rows][:, None]
            with np.errstate(invalid="ignore"):
                m &= (x >= thr[None, :]) if ge else (x < thr[None, :])
        return m


def _gate_units(res: Any, d: Any) -> np.ndarray:
    """Every event's value of dimension ``d`` in gate units (transformed), NaN kept."""
    raw = res.raw_values(d)
    xf = res.tree.transform_of(d)
    with np.errstate(all="ignore"):
        return np.asarray(raw if xf is None else xf.apply(raw), dtype=np.float64)


def _condition(
    res: Any, g: Gate, values: Mapping[str, np.ndarray], ties: Mapping[str, str], n_rows: int
) -> _Condition | str:
    """The test of gate ``g`` (concrete, fitted numbers in place), or why it cannot be built."""
    n = res.n_events
    everyone = np.ones(n, dtype=bool)
    moved_shape = f"{g.id}.scale" in values
    if g.type == "rectangle" and not g.complement:
        c = _Condition(everyone)
        for d in g.dims:
            x = None
            for side, ge in (("min", True), ("max", False)):
                v = getattr(d, side)
                if v is None:
                    continue
                bid = f"{g.id}.{d.marker}.{side}"
                bid = ties.get(bid, bid)
                thr = values.get(bid, np.full(n_rows, float(v)))
                x = _gate_units(res, d) if x is None else x
                c.add(x, thr, ge)
        return c
    if g.type == "polygon" and moved_shape and g.fit is None:
        # the fitted singlet band: a triangle from the origin, lo <= FSC-H / FSC-A <= hi
        verts = np.asarray(g.vertices, dtype=np.float64)
        x_edge = float(verts[1, 0])
        lo, hi = verts[1, 1] / x_edge, verts[2, 1] / x_edge
        med = next(f for f in res.fits if f["gate"] == g.id)["stats"]["ratio_median"]
        a, h = (_gate_units(res, d) for d in g.dims)
        with np.errstate(all="ignore"):
            ratio = np.where(a > 0, h / a, np.nan)
        c = _Condition((a >= 0) & (a <= x_edge))
        scale = values[f"{g.id}.scale"]
        c.add(ratio, med - scale * (med - lo), True)
        c.add(ratio, np.nextafter(med + scale * (hi - med), np.inf), False)  # ratio <= hi
        return c
    if g.type == "ellipse" and moved_shape and not g.complement:
        pts = np.column_stack([_gate_units(res, d) for d in g.dims])
        tr = pts - np.asarray(g.mean, dtype=np.float64)
        inv = np.linalg.inv(np.asarray(g.covariance, dtype=np.float64))
        d2 = (np.dot(tr, inv) * tr).sum(axis=1)  # as flowutils.points_in_ellipsoid
        c = _Condition(everyone)
        scale = values[f"{g.id}.scale"]
        # inclusive, as the engine: d2 <= D  <=>  d2 < the next float above D
        c.add(d2, np.nextafter(float(g.distance_square or 0.0) * scale**2, np.inf), False)
        return c
    if any(bid.startswith(f"{g.id}.") for bid in values):
        # a moved boundary this test cannot move (a complement gate): say so, never hold it
        return f"moving the fitted boundaries of {g.type} gate '{g.id}' is not supported"
    if g.type in ("rectangle", "polygon", "ellipse"):
        return _Condition(res.in_shape(g))
    return f"{g.type} gate '{g.id}' on the path is not supported"


def _path(tree: Any, pop: str) -> list[str]:
    """Gate ids from the root to ``pop``."""
    out: list[str] = []
    p: str | None = pop
    while p is not None:
        node = tree.population(p)
        out.append(node.gate)
        p = node.parent
    return out[::-1]


def perturb_counts(
    res: Any, numerator: str, denominator: str, s: PerturbSettings, seed: int
) -> Perturbation | str:
    """Counts of ``numerator`` and ``denominator`` under plausible re-gatings (module docstring).

    Parameters
    ----------
    res
        The tube's :class:`~nkflow.gating.GatingResult`.
    numerator, denominator
        Population ids (``nk`` and the lymphocyte denominator ``live``).
    s
        Ranges and numbers of draws.
    seed
        The tube's seed (:func:`tube_seed`).

    Returns
    -------
    Perturbation or str
        The table and ranges, or the reason they cannot be computed (``population '<p>' not
        computed``, an unsupported gate type on the path).
    """
    import pandas as pd

    tree = res.tree
    for pop in (numerator, denominator):
        if pop not in tree.populations:
            return f"population '{pop}' is not in gate tree '{tree.name}'"
        if pop in res.not_computed:
            return f"population '{pop}' was not computed ({res.not_computed[pop]})"
    paths = {p: _path(tree, p) for p in (numerator, denominator)}
    gates = list(dict.fromkeys(paths[denominator] + paths[numerator]))
    bounds, ties, fixed = _ranges(res, gates, s)
    labels, values = _parameters(bounds, s, seed)
    n_rows = len(labels)
    keep = res.keep if res.keep is not None else np.ones(res.n_events, dtype=bool)
    conds: dict[str, _Condition] = {}
    for gid in gates:
        c = _condition(res, tree.gate(gid), values, ties, n_rows)
        if isinstance(c, str):
            return c
        conds[gid] = c
    counts: dict[str, np.ndarray] = {}
    for pop in (denominator, numerator):
        sure = keep.copy()
        out = ~keep
        for gid in paths[pop]:
            inn, never = conds[gid].always()
            sure &= inn
            out |= never
        rows = np.flatnonzero(~sure & ~out)
        total = np.full(n_rows, int(np.count_nonzero(sure)), dtype=np.int64)
        for a in range(0, rows.size, _BLOCK):
            blk = rows[a : a + _BLOCK]
            m = np.ones((blk.size, n_rows), dtype=bool)
            for gid in paths[pop]:
                m &= conds[gid].matrix(blk)
            total += m.sum(axis=0)
        counts[pop] = total
        logger.debug("perturb %s: %d events always in, %d moved", pop, int(total[0]), rows.size)
    table = pd.DataFrame(
        {
            "draw": np.arange(n_rows, dtype=np.int64),
            "varied": labels,
            "nk_events": counts[numerator],
            "lymphocyte_events": counts[denominator],
            **{b.id: values[b.id] for b in bounds},
        }
    )
    return Perturbation(table, bounds, fixed, (int(s.random_state), int(seed)))
