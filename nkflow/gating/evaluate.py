"""Fast, exact evaluation of a gate tree on one tube's events.

Contract
--------
``gate_sample(tree, events, marker_index, spill=None, keep=None, controls=None)`` returns a
:class:`GatingResult` whose per-event membership equals FlowKit's ``GatingStrategy.gate_sample``
for the same tree (see ``to_flowkit``), with three differences by design: events outside
``keep`` (time QC) belong to no population; a gate whose marker is missing is *not computed*
(with all its descendants) instead of raising; a data-driven gate that fails is flagged.

Speed comes from doing less, never from approximating:

* a gate reads only its parent's events and only the columns it uses;
* compensation is computed only for the channels gates use (one row of the inverse spillover
  per needed channel);
* a threshold ``f(x) >= v`` on a non-decreasing transform ``f`` is decided in raw space against
  ``f^-1(v -/+ eps)``; only events inside that small bracket are transformed and compared in
  transformed space, so the answer is exactly that of ``f``;
* polygons and ellipses are first cut to their (padded) bounding box the same way.

Nothing here reads files; the caller gives float64 raw events (``FcsSample.events``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nkflow.errors import GatingError
from nkflow.fcs import transforms as tf
from nkflow.gating import fit as fit_mod
from nkflow.gating.override import STALE_TOLERANCE, GateOverride
from nkflow.gating.tree import Dim, Gate, GateTree

logger = logging.getLogger(__name__)

#: Columns of :meth:`GatingResult.counts_table` (a tube's counts.tsv adds sample_id and tube).
COUNT_COLUMNS = (
    "population",
    "parent",
    "events",
    "parent_events",
    "pct_of_parent",
    "pct_of_lymphocytes",
    "status",
    "reason",
    "boundary",
)

_EPS = 1e-9
_CHUNK = 1 << 13
#: parent fraction above which a gate works on full-length columns instead of gathering
_DENSE = 0.25


# ----------------------------------------------------------------------------- results


@dataclass
class GatingResult:
    """Per-event membership, counts and flags of one tube.

    Attributes
    ----------
    tree
        The evaluated tree.
    n_events
        Number of events in the tube (before ``keep``).
    not_computed
        ``{population: reason}``; reasons ``missing_marker:<marker>``,
        ``auto_gate_failed:<gate>:<code>``, ``missing_control:<gate>``.
    flags
        ``[{gate, code, message}]`` for data-driven gate failures and fallbacks.
    thresholds
        ``{gate: threshold}`` used by each data-driven gate (transformed units).
    fits
        One record per boundary fitted to this tube (``gate``, ``marker`` or ``markers``,
        ``side``, ``method``, ``value`` in gate units, ``raw`` in channel units, ``stats``), in
        tree order. ``tree`` then holds the gates as evaluated (fitted numbers in place).
    """

    tree: GateTree
    n_events: int
    members: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    not_computed: dict[str, str] = field(default_factory=dict)
    flags: list[dict[str, str]] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    fits: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"<gate>.<marker>.<side>": {"grid", "density", "peaks", "bounds"}}``: the density each
    #: valley boundary was fitted on (not serialised; :mod:`nkflow.gating.perturb` reads it)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def _check(self, pop: str) -> None:
        if pop not in self.tree.populations:
            raise GatingError(
                f"population '{pop}' is not in gate tree '{self.tree.name}' "
                f"({self.tree.source}); known: {', '.join(self.tree.populations)}"
            )

    def membership(self, pop: str) -> np.ndarray:
        """Boolean array (n_events,) of the events in ``pop``.

        Raises
        ------
        GatingError
            ``pop`` is unknown, or was not computed (the reason is in the message).
        """
        self._check(pop)
        if pop in self.not_computed:
            raise GatingError(
                f"population '{pop}' was not computed ({self.not_computed[pop]}); "
                "check res.not_computed before asking for its events"
            )
        return self.members[pop]

    def raw_values(self, d: Dim, rows: np.ndarray | None = None) -> np.ndarray:
        """Values of gate dimension ``d`` as gating read them, before its transform.

        Compensated or a ratio as ``d`` declares; ``rows`` are event indices (every event
        when None). ``self.tree.transform_of(d)`` takes them to gate units.
        """
        return self._columns().raw(d, rows)

    def in_shape(self, g: Gate) -> np.ndarray:
        """Boolean (n_events,): the events inside rectangle, polygon or ellipse gate ``g``.

        Its own boundary only: the parent population and ``keep`` are not applied.
        """
        fn = _rectangle if g.type == "rectangle" else _shape
        return np.asarray(fn(self._columns(), g, None, None), dtype=bool)

    def _columns(self) -> _Columns:
        if self.columns is None:
            raise GatingError(
                f"gating result of tree '{self.tree.name}' holds no event columns; "
                "use a result returned by gate_sample"
            )
        return self.columns

    def count(self, pop: str) -> int | None:
        """Number of events in ``pop``; None when it was not computed."""
        self._check(pop)
        if pop in self.not_computed:
            return None
        return int(np.count_nonzero(self.members[pop]))

    def counts_table(self, denominator: str) -> Any:
        """Tidy counts, one row per population in tree order (``docs/DEVELOPING.md``).

        Parameters
        ----------
        denominator
            Population used for ``pct_of_lymphocytes`` (filled for it and its descendants).

        Returns
        -------
        pandas.DataFrame
            Columns ``population, parent, events, parent_events, pct_of_parent,
            pct_of_lymphocytes, status, reason, boundary``; numbers are empty (NA) when not
            computed; ``boundary`` gives the boundaries fitted to this tube for the population's
            gate (empty for a fixed gate).
        """
        import pandas as pd

        tree = self.tree
        self._check(denominator)
        den = self.count(denominator)
        under: set[str] = {denominator}
        for p in tree.populations:
            par = tree.population(p).parent
            if par in under:
                under.add(p)
        fitted = _boundaries(self.fits)
        rows: list[tuple[Any, ...]] = []
        for p in tree.populations:
            node = tree.population(p)
            par, bound = node.parent, fitted.get(node.gate, "")
            if p in self.not_computed:
                rows.append(
                    (p, par or "", None, None, None, None, "not_computed", self.not_computed[p], "")
                )
                continue
            ev = self.count(p)
            assert ev is not None
            pe = self.n_kept if par is None else self.count(par)
            pct_par = 100.0 * ev / pe if pe else None
            pct_l = 100.0 * ev / den if (den and p in under) else None
            rows.append((p, par or "", ev, pe, pct_par, pct_l, "ok", "", bound))
        dtypes = dict.fromkeys(("events", "parent_events"), "Int64")
        dtypes.update(dict.fromkeys(("pct_of_parent", "pct_of_lymphocytes"), "float64"))
        return pd.DataFrame(rows, columns=list(COUNT_COLUMNS)).astype(dtypes)

    n_kept: int = 0
    keep: np.ndarray | None = field(default=None, repr=False)
    #: the columns gating read (raw, compensated, ratio), kept so that a tube is compensated
    #: once: :meth:`raw_values` and :meth:`in_shape` read them
    columns: _Columns | None = field(default=None, repr=False)
    #: ``(gate, marker) -> value`` of every fitted (or overridden) bound, for ``same_as``
    fitted_bounds: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    #: the overrides this result was computed with (gate id -> GateOverride)
    overrides: dict[str, Any] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------- helpers


def _boundaries(fits: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Gate id -> its fitted boundaries in words, e.g. ``CD3 max 0.4821 (valley)``."""
    out: dict[str, list[str]] = {}
    for f in fits:
        if f["side"] == "shape":
            v, st = f["value"], f["stats"]
            if f["method"] == "override":
                what = f"vertices {v['vertices']}"
            elif "mean" in v:
                what = "ellipse mean " + ", ".join(f"{m:.4g}" for m in v["mean"])
                what += f" (d2 {v['distance_square']:.3g})"
            else:
                what = f"ratio {st['ratio_low']:.4g}-{st['ratio_high']:.4g}"
            out.setdefault(f["gate"], []).append(f"{'/'.join(f['markers'])} {what} ({f['method']})")
        else:
            out.setdefault(f["gate"], []).append(
                f"{f['markers'][0]} {f['side']} {float(f['value']):.4g} ({f['method']})"
            )
    return {g: "; ".join(v) for g, v in out.items()}


def _spill_parts(
    spill: Any, channel_names: Sequence[str] | None
) -> tuple[list[int], np.ndarray] | None:
    """(column indices, spillover matrix) from a Spillover, an indexed object or a tuple."""
    if spill is None:
        return None
    if isinstance(spill, tuple) and len(spill) == 2:
        idx, mat = spill
        return [int(i) for i in idx], np.asarray(mat, dtype=np.float64)
    mat = getattr(spill, "matrix", None)
    for name in ("indices", "column_indices", "channel_indices"):
        idx = getattr(spill, name, None)
        if idx is not None and mat is not None:
            return [int(i) for i in idx], np.asarray(mat, dtype=np.float64)
    chans = getattr(spill, "channels", None)
    if chans is not None and mat is not None:
        if channel_names is None:
            raise GatingError(
                "gate_sample: the spillover names its channels "
                f"({', '.join(chans)}) but no channel_names were given to match them to event "
                "columns; pass channel_names=sample.channel_names"
            )
        names = list(channel_names)
        missing = [c for c in chans if c not in names]
        if missing:
            raise GatingError(
                f"gate_sample: spillover channel(s) {missing} are not among the event columns "
                f"({', '.join(names)}); the matrix does not belong to this file"
            )
        return [names.index(c) for c in chans], np.asarray(mat, dtype=np.float64)
    raise GatingError(
        f"spillover object {type(spill).__name__} has no 'matrix' with 'channels' or 'indices'; "
        "pass a Spillover from nkflow.fcs.compensation or (column_indices, matrix)"
    )


class _Columns:
    """Lazily computed full-length columns: raw, compensated, ratio."""

    def __init__(
        self,
        tree: GateTree,
        events: np.ndarray,
        marker_index: Mapping[str, int | None],
        spill: Any,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        self.tree = tree
        self.events = events
        self.mi: dict[str, int] = {k: int(v) for k, v in marker_index.items() if v is not None}
        self.fcs = _spill_parts(spill, channel_names)
        self.cache: dict[tuple[str, str | None], np.ndarray] = {}
        self.inv: dict[str, tuple[list[int], np.ndarray]] = {}

    def _matrix(self, comp: str) -> tuple[list[int], np.ndarray] | None:
        if comp in self.inv:
            return self.inv[comp]
        if comp == "FCS":
            if self.fcs is None:
                return None
            idx, mat = self.fcs
        else:
            m = self.tree.matrices[comp]
            idx = [self.mi[d] for d in m.detectors]
            mat = np.asarray(m.matrix, dtype=np.float64)
        self.inv[comp] = (idx, np.linalg.inv(mat))
        return self.inv[comp]

    def column_index(self, marker: str, comp: str | None) -> int | None:
        if marker in self.mi:
            return self.mi[marker]
        if comp not in (None, "FCS") and comp in self.tree.matrices:
            m = self.tree.matrices[comp]
            if marker in m.fluorochromes:
                det = m.detectors[m.fluorochromes.index(marker)]
                return self.mi.get(det)
        return None

    def missing(self, gate: Gate) -> str | None:
        for d in gate.dims:
            if d.ratio:
                r = self.tree.transforms[d.marker]
                assert isinstance(r, tf.RatioTransform)
                for m in (r.numerator, r.denominator):
                    if m not in self.mi:
                        return m
            elif self.column_index(d.marker, d.compensation) is None:
                return d.marker
        return None

    def _compensate_all(self, comp: str, parts: tuple[list[int], np.ndarray]) -> None:
        """Compensate, in one chunked pass, every column the tree reads with ``comp``."""
        idx, inv = parts
        want: dict[str, int] = {}
        for g in self.tree.gates:
            for d in g.dims:
                if d.ratio or d.compensation != comp or (d.marker, comp) in self.cache:
                    continue
                col = self.column_index(d.marker, comp)
                if col is not None and col in idx:
                    want[d.marker] = idx.index(col)
        w = inv[:, list(want.values())]
        n = self.events.shape[0]
        out = np.empty((len(want), n), dtype=np.float64)
        lo, hi = min(idx), max(idx)
        contiguous = idx == list(range(lo, hi + 1))
        # Chunked so the gathered (rows x k) block stays small (memory target: 3x raw); one
        # BLAS thread: for these thin products threads only add contention (3-10x slower on a
        # busy 2-core machine).
        from threadpoolctl import threadpool_limits

        wt = np.ascontiguousarray(w.T)
        with threadpool_limits(limits=1, user_api="blas"):
            for a in range(0, n, _CHUNK):
                block = self.events[a : a + _CHUNK, lo : hi + 1]
                if not contiguous:
                    block = block[:, [i - lo for i in idx]]
                np.matmul(wt, block.T, out=out[:, a : a + _CHUNK])
        for k, m in enumerate(want):
            self.cache[(m, comp)] = out[k]

    def raw(self, d: Dim, rows: np.ndarray | None) -> np.ndarray:
        """Untransformed (possibly compensated or ratio) values of ``d`` on ``rows``."""
        if d.ratio:
            r = self.tree.transforms[d.marker]
            assert isinstance(r, tf.RatioTransform)
            x = self.events[:, self.mi[r.numerator]]
            y = self.events[:, self.mi[r.denominator]]
            if rows is not None:
                x, y = x[rows], y[rows]
            return r.apply2(x, y)
        col = self.column_index(d.marker, d.compensation)
        assert col is not None
        comp = d.compensation
        parts = self._matrix(comp) if comp is not None else None
        if parts is None or col not in parts[0]:
            if rows is not None:
                return self.events[rows, col]
            key0 = (d.marker, None)
            if key0 not in self.cache:
                # a contiguous copy: every later full-length pass reads 8 bytes per event
                self.cache[key0] = np.ascontiguousarray(self.events[:, col])
            return self.cache[key0]
        key = (d.marker, comp)
        if key not in self.cache:
            assert comp is not None
            self._compensate_all(comp, parts)
        v = self.cache[key]
        return v if rows is None else v[rows]


def _apply(xf: tf.Transform | None, x: np.ndarray) -> np.ndarray:
    return x if xf is None else xf.apply(x)


def _bracket(xf: tf.Transform, value: float) -> tuple[float, float] | None:
    """Raw ``lo, hi`` with ``f(lo) < value <= f(hi)``, or None when it cannot be proven."""
    if not xf.increasing:
        return None
    eps = _EPS * max(1.0, abs(value))
    with np.errstate(all="ignore"):
        lo, hi = (float(v) for v in xf.inverse(np.array([value - eps, value + eps])))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            return None
        flo, fhi = (float(v) for v in xf.apply(np.array([lo, hi])))
    if not (flo < value <= fhi):
        return None
    return lo, hi


def _cmp(
    x: np.ndarray,
    xf: tf.Transform | None,
    value: float,
    ge: bool,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """Exactly ``f(x) >= value`` (``ge``) or ``f(x) < value``, transforming few events.

    Exact where ``within`` is true (everywhere when None); elsewhere the answer may be wrong
    and must be masked out by the caller.
    """
    if xf is None:
        return x >= value if ge else x < value
    br = _bracket(xf, value)
    if br is None:
        fx = xf.apply(x)
        return fx >= value if ge else fx < value
    lo, hi = br
    below, above = x < lo, x > hi
    out = above if ge else below
    # everything else, NaN included (FlowKit's logicle maps NaN to a number), is decided by f
    band = ~(below | above)
    if np.isfinite(xf.domain_min):
        band |= x <= xf.domain_min
    if within is not None:
        band &= within
    bi = np.flatnonzero(band)
    if bi.size:
        with np.errstate(all="ignore"):
            fx = xf.apply(x[bi])
        out[bi] = fx >= value if ge else fx < value
    return out


def _box(
    x: np.ndarray, xf: tf.Transform | None, vmin: float, vmax: float, within: np.ndarray | None
) -> np.ndarray:
    """A superset of the events (in ``within``) with ``vmin <= f(x) <= vmax``."""
    pad = 1e-6 * max(vmax - vmin, 1e-12) + 1e-12
    return _cmp(x, xf, vmin - pad, True, within) & _cmp(x, xf, vmax + pad, False, within)


# ----------------------------------------------------------------------------- gates


def _rectangle(
    cols: _Columns, g: Gate, rows: np.ndarray | None, within: np.ndarray | None
) -> np.ndarray:
    out: np.ndarray | None = None
    for d in g.dims:
        x = cols.raw(d, rows)
        xf = cols.tree.transform_of(d)
        for val, ge in ((d.min, True), (d.max, False)):
            if val is None:
                continue
            m = _cmp(x, xf, val, ge, within)
            out = m if out is None else (out & m)
    assert out is not None
    return ~out if g.complement else out


def _positive_definite(cov: tuple[tuple[float, ...], ...]) -> bool:
    c = np.asarray(cov, dtype=np.float64)
    if not np.array_equal(c, c.T):
        return False
    try:
        np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        return False
    return True


def _shape(
    cols: _Columns, g: Gate, rows: np.ndarray | None, within: np.ndarray | None
) -> np.ndarray:
    from flowutils import gating as fug

    xs = [cols.raw(d, rows) for d in g.dims]
    xfs = [cols.tree.transform_of(d) for d in g.dims]
    n = xs[0].shape[0]
    if g.type == "polygon":
        v = np.asarray(g.vertices, dtype=np.float64)
        lows, highs = v.min(axis=0), v.max(axis=0)
    elif _positive_definite(g.covariance):
        sd = np.sqrt(np.diag(np.asarray(g.covariance)) * float(g.distance_square or 0.0))
        lows, highs = np.asarray(g.mean) - sd, np.asarray(g.mean) + sd
    else:
        # Not a true ellipsoid (Gating-ML allows any matrix): no bounding box, test every event.
        lows = highs = None
    cheap = all(xf is None or isinstance(xf, tf.LinearTransform) for xf in xfs)
    if lows is None or highs is None or (cheap and within is None):
        # no box, or a box that would cost as much as transforming everything
        ci = None if within is None else np.flatnonzero(within)
    else:
        cand: np.ndarray | None = within
        for x, xf, lo, hi in zip(xs, xfs, lows, highs, strict=True):
            m = _box(x, xf, float(lo), float(hi), cand)
            cand = m if cand is None else (cand & m)
        assert cand is not None
        ci = np.flatnonzero(cand)
    out = np.zeros(n, dtype=bool)
    if ci is None or ci.size:
        sel = slice(None) if ci is None else ci
        pts = np.empty((n if ci is None else ci.size, len(xs)), dtype=np.float64)
        with np.errstate(all="ignore"):
            for j, (x, xf) in enumerate(zip(xs, xfs, strict=True)):
                pts[:, j] = _apply(xf, x[sel])
        if g.type == "polygon":
            out[sel] = fug.points_in_polygon(np.asarray(g.vertices, dtype=np.float64), pts)
        else:
            out[sel] = fug.points_in_ellipsoid(
                np.asarray(g.covariance, dtype=np.float64),
                np.asarray(g.mean, dtype=np.float64),
                float(g.distance_square or 0.0),
                pts,
            )
    return ~out if g.complement else out


def _quadrants(
    cols: _Columns, g: Gate, rows: np.ndarray | None, within: np.ndarray | None
) -> dict[str, np.ndarray]:
    xs = [cols.raw(d, rows) for d in g.dims]
    memo: dict[tuple[int, float, bool], np.ndarray] = {}
    res = {}
    for q, ranges in g.quadrants:
        m: np.ndarray | None = None
        for i, (lo, hi) in enumerate(ranges):
            for val, ge in ((lo, True), (hi, False)):
                if val is None:
                    continue
                key = (i, val, ge)
                if key not in memo:
                    memo[key] = _cmp(xs[i], cols.tree.transform_of(g.dims[i]), val, ge, within)
                m = memo[key] if m is None else (m & memo[key])
        res[q] = m if m is not None else np.ones(xs[0].shape[0], dtype=bool)
    return res


# ----------------------------------------------------------------------------- driver


def _descendants(tree: GateTree, pops: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    todo = list(pops)
    while todo:
        p = todo.pop(0)
        for c in tree.children(p):
            out.append(c)
            todo.append(c)
        for g in tree.gates:
            if g.type == "boolean" and any(r == p for r, _ in g.of) and g.id not in out:
                out.append(g.id)
                todo.append(g.id)
    return out


def gate_sample(
    tree: GateTree,
    events: np.ndarray,
    marker_index: Mapping[str, int | None],
    spill: Any = None,
    keep: np.ndarray | None = None,
    controls: dict[str, np.ndarray] | None = None,
    tube: str = "",
    channel_names: Sequence[str] | None = None,
    ranges: Mapping[str, float] | None = None,
    overrides: Mapping[str, GateOverride] | None = None,
    reuse: GatingResult | None = None,
) -> GatingResult:
    """Evaluate ``tree`` on one tube.

    Parameters
    ----------
    tree
        A validated gate tree.
    events
        (n, p) float64 raw events (``FcsSample.events``); never modified.
    marker_index
        Marker name -> column index; markers missing in this tube are absent (or None).
    spill
        Spillover used for dims with ``compensated: true`` (``compensation: FCS``): an object
        with ``matrix`` (k x k) and ``indices`` (k column indices), or a tuple
        ``(indices, matrix)``; None leaves those dims uncompensated (as FlowKit does when the
        file has no spillover).
    keep
        Boolean mask of events that survived time QC; None keeps all.
    controls
        ``{gate_id: values}`` for ``method: control`` gates, and ``{"<gate>.<marker>": values}``
        for fitted bounds that declare ``fmo_percentile``: raw (compensated if the gate is)
        values of the marker in the control (FMO) tube's population; see
        :func:`nkflow.gating.control_values` and :func:`fmo_values`.
    tube
        Label used in flag messages (e.g. ``"P003-D14/treg"``).
    channel_names
        ``$PnN`` of each event column (``FcsSample.channel_names``); needed to place a
        :class:`nkflow.fcs.compensation.Spillover`, which names its channels.
    ranges
        Marker -> ``$PnR`` of its channel, for transforms declared ``t: range`` (see
        :meth:`GateTree.for_ranges`); None leaves them at 2^18.
    overrides
        Gate id -> a reviewer's :class:`~nkflow.gating.override.GateOverride`, applied where
        the gate's boundary is fixed for the tube (after its fit, or instead of its declared
        value); recorded in ``res.fits`` with method ``override`` beside what the fit gave.
    reuse
        An earlier result of this call on the same tube (same tree, events, keep, controls and
        ranges), e.g. the previous step of a reviewer moving a boundary. The gates before the
        first gate whose override differs are taken from it instead of being fitted and
        evaluated again: tree order is topological (parents, ``same_as`` and ``fit_on``
        sources come first), so they cannot depend on the change and the result is exactly
        that of a full evaluation.

    Returns
    -------
    GatingResult
        ``res.tree`` is the tree as evaluated: transforms placed on the file's ranges and fitted
        boundaries written in (a template gate stays where its fit failed).

    Raises
    ------
    GatingError
        ``events`` is not a 2-D array or ``keep`` has the wrong length.
    """
    ev = np.asarray(events)
    if ev.ndim != 2:
        raise GatingError(f"events must be a 2-D (n_events, n_channels) array, found {ev.shape}")
    n = ev.shape[0]
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (n,):
            raise GatingError(
                f"keep mask has shape {keep.shape}, expected ({n},) to match the events"
            )
    tree = tree.for_ranges(ranges or {})
    if reuse is not None and not (
        reuse.columns is not None
        and reuse.columns.events is ev
        and reuse.keep is keep
        and reuse.tree.gates[0].id == tree.gates[0].id
    ):
        reuse = None  # another tube: nothing to take from it
    cols = (
        _Columns(tree, ev, marker_index, spill, channel_names) if reuse is None else reuse.columns
    )
    res = GatingResult(
        tree=tree,
        n_events=n,
        n_kept=n if keep is None else int(np.count_nonzero(keep)),
        keep=keep,
        columns=cols,
        overrides=dict(overrides or {}),
    )
    run = _Run(tree, res, controls or {}, f" in tube {tube}" if tube else "")
    start = 0 if reuse is None else _reuse_prefix(tree, reuse, res, run.used, res.overrides)
    for g in tree.gates[start:]:
        run.gate(g)
    for g in tree.gates:  # after every population: a reference may come later in the tree
        if g.keeps is not None and g.id not in res.not_computed:
            _keeps(res, g, run.label)
    if run.used:
        res.tree = replace(tree, gates=tuple(run.used.get(g.id, g) for g in tree.gates))
    return res


@dataclass
class _Run:
    """One evaluation of a tree on a tube: what each gate step reads, and the result it fills."""

    tree: GateTree
    res: GatingResult
    controls: Mapping[str, np.ndarray]
    label: str
    #: gate id -> the gate as evaluated, where its boundaries were fitted or overridden
    used: dict[str, Gate] = field(default_factory=dict)

    def fail(self, pops: tuple[str, ...], reason: str) -> None:
        """Mark ``pops`` and their descendants not computed (a first reason is kept)."""
        for p in (*pops, *_descendants(self.tree, pops)):
            self.res.not_computed.setdefault(p, reason)

    def gate(self, g: Gate) -> None:
        """Evaluate gate ``g`` (its parent done), or mark its populations not computed."""
        res = self.res
        pops = g.population_ids()
        if any(p in res.not_computed for p in pops):
            return
        if g.parent is not None and g.parent in res.not_computed:
            self.fail(pops, res.not_computed[g.parent])
            return
        parent = res.keep if g.parent is None else res.members[g.parent]
        if g.type == "boolean":
            self.boolean(g, parent)
            return
        assert res.columns is not None
        miss = res.columns.missing(g)
        if miss is not None:
            self.fail(pops, f"missing_marker:{miss}")
            return
        placed = self.place(g, parent)
        if placed is None:
            return
        g = placed
        if g.type == "threshold":
            if not self.threshold(g, parent):
                return
        else:
            self.geometric(g, parent)
        if g.plausible_pct is not None:
            _plausible(res, g, parent, self.label)

    def boolean(self, g: Gate, parent: np.ndarray | None) -> None:
        """And, or or not of earlier populations, within the parent (or ``keep``)."""
        res = self.res
        bad = next((r for r, _ in g.of if r in res.not_computed), None)
        if bad is not None:
            self.fail(g.population_ids(), res.not_computed[bad])
            return
        refs = [~res.members[r] if comp else res.members[r] for r, comp in g.of]
        if g.op == "and":
            m = np.logical_and.reduce(refs)
        elif g.op == "or":
            m = np.logical_or.reduce(refs)
        else:
            m = ~refs[0]
        if parent is not None:  # the parent population, or keep for a root gate
            m &= parent
        res.members[g.id] = m

    def place(self, g: Gate, parent: np.ndarray | None) -> Gate | None:
        """``g`` with its boundaries fixed for this tube; None when its fit failed.

        The boundaries are fitted, or a reviewer's override; a failed fit is flagged and its
        populations are not computed.
        """
        res = self.res
        assert res.columns is not None
        ov = res.overrides.get(g.id)
        if not g.fitted and ov is None:
            return g
        prow = np.flatnonzero(parent) if parent is not None else np.arange(res.n_events)
        try:
            g = _fit_gate(
                res.columns, g, prow, res.fitted_bounds, res.fits, res.members, self.controls,
                ov, profiles=res.profiles,
            )  # fmt: skip
        except fit_mod.FitFailure as exc:
            where = exc.where or g.id
            fit_flag = {
                "gate": g.id,
                "code": exc.code,
                "where": where,
                "message": f"gate '{g.id}'{self.label}: {where}: {exc.message}; "
                "population not computed",
            }
            res.flags.append(fit_flag)
            logger.warning(fit_flag["message"])
            self.fail(g.population_ids(), f"gate_fit_failed:{where}:{exc.code}")
            return None
        self.used[g.id] = g
        if ov is not None:
            res.flags.extend(_stale_flags(g.id, ov, res.fits, self.label))
        return g

    def geometric(self, g: Gate, parent: np.ndarray | None) -> None:
        """Members of a rectangle, polygon, ellipse or quadrant gate."""
        res, cols, n = self.res, self.res.columns, self.res.n_events
        assert cols is not None
        # Large parent: work on full-length columns and mask (no gathers); small parent:
        # gather its rows first.
        rows: np.ndarray | None = None
        within: np.ndarray | None = None
        if parent is not None:
            if np.count_nonzero(parent) >= _DENSE * n:
                within = parent
            else:
                rows = np.flatnonzero(parent)
        if g.type == "quadrant":
            for q, m in _quadrants(cols, g, rows, within).items():
                res.members[q] = _scatter(m, rows, parent, n)
        else:  # rectangle, polygon or ellipse (the types tree validation admits)
            fn = _rectangle if g.type == "rectangle" else _shape
            res.members[g.id] = _scatter(fn(cols, g, rows, within), rows, parent, n)

    def threshold(self, g: Gate, parent: np.ndarray | None) -> bool:
        """Members of a data-driven threshold gate; False when it failed without a fallback."""
        from nkflow.gating import auto

        res = self.res
        assert g.auto is not None and res.columns is not None
        d = g.dims[0]
        xf = self.tree.transform_of(d)
        rows = None if parent is None else np.flatnonzero(parent)
        x = res.columns.raw(d, rows)
        ctrl = self.controls.get(g.id) if g.auto.method == "control" else None
        if ctrl is not None:
            ctrl = _apply(xf, np.asarray(ctrl, dtype=np.float64))
        with np.errstate(all="ignore"):
            vals = _apply(xf, x)
        cut, flag = auto.find_threshold(vals, g.auto, control=ctrl)
        if flag is not None:
            flag = {
                "gate": g.id,
                "code": flag["code"],
                "message": f"gate '{g.id}'{self.label}: {flag['message']}",
            }
            fallback = g.auto.allow_fallback and g.auto.default is not None
            if fallback:
                cut = g.auto.default
                flag["message"] += f"; used the declared default {cut:g} (allow_fallback)"
                flag["code"] = f"{flag['code']}_fallback"
            else:
                flag["message"] += "; population not computed (allow_fallback is false)"
            res.flags.append(flag)
            logger.warning(flag["message"])
            if not fallback:
                self.fail(g.population_ids(), f"auto_gate_failed:{g.id}:{flag['code']}")
                return False
        assert cut is not None
        res.thresholds[g.id] = float(cut)
        sub = vals >= cut if g.auto.side == "above" else vals < cut
        res.members[g.id] = _scatter(sub, rows, parent, res.n_events)
        return True


def _scatter(
    sub: np.ndarray, rows: np.ndarray | None, parent: np.ndarray | None, n: int
) -> np.ndarray:
    """Full-length membership from a gate's answer on ``rows`` (or on every event, masked)."""
    if rows is None:
        return sub & parent if parent is not None else sub
    full = np.zeros(n, dtype=bool)
    full[rows] = sub
    return full


def _same_override(a: GateOverride | None, b: GateOverride | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.bounds, a.vertices) == (b.bounds, b.vertices)


def _reuse_prefix(
    tree: GateTree,
    prev: GatingResult,
    res: GatingResult,
    used: dict[str, Gate],
    overrides: dict[str, GateOverride],
) -> int:
    """Copy from ``prev`` the gates before the first one whose override changed.

    The index returned is that of the first gate to evaluate.
    """
    k = next(
        (
            i
            for i, g in enumerate(tree.gates)
            if not _same_override(overrides.get(g.id), prev.overrides.get(g.id))
        ),
        len(tree.gates),
    )
    prefix = {g.id for g in tree.gates[:k]}
    pops = {p for g in tree.gates[:k] for p in g.population_ids()}
    for p in pops:
        if p in prev.members:
            res.members[p] = prev.members[p]
        if p in prev.not_computed:
            res.not_computed[p] = prev.not_computed[p]
    res.flags.extend(
        f for f in prev.flags if f.get("gate") in prefix and f.get("code") not in KEEPS_CODES
    )  # a keeps_pct_of flag is made again after every gate (its reference may have moved)
    res.fits.extend(f for f in prev.fits if f["gate"] in prefix)
    res.thresholds.update({g: v for g, v in prev.thresholds.items() if g in prefix})
    res.fitted_bounds.update({kb: v for kb, v in prev.fitted_bounds.items() if kb[0] in prefix})
    for g in tree.gates[:k]:
        was = prev.tree.gate(g.id)
        if was != g:
            used[g.id] = was
    return k


def _plausible(res: GatingResult, g: Gate, parent: np.ndarray | None, label: str) -> None:
    """Flag a population whose share of its parent is outside the gate's plausible range."""
    assert g.plausible_pct is not None
    lo, hi = g.plausible_pct
    n_par = res.n_kept if parent is None else int(np.count_nonzero(parent))
    for pop in g.population_ids():
        n_pop = int(np.count_nonzero(res.members[pop]))
        pct = 100.0 * n_pop / n_par if n_par else math.nan
        if not lo <= pct <= hi:
            msg = (
                f"gate '{g.id}'{label}: {pop} is {pct:.3g} % of its parent ({n_pop} of "
                f"{n_par} events), outside the plausible range {lo:g}-{hi:g} % declared in the "
                "gate tree; the gate does not fit this tube (check the instrument and template)"
            )
            res.flags.append({"gate": g.id, "code": "implausible", "where": pop, "message": msg})
            logger.warning(msg)


#: flags of a ``keeps_pct_of`` check: the gate keeps too little of its reference population,
#: or the reference was not computed or has too few events to say
KEEPS_CODES = ("drops_reference", "drops_reference_not_assessed")


def _keeps(res: GatingResult, g: Gate, label: str) -> None:
    """Flag a gate that keeps less than its declared share of its reference population."""
    assert g.keeps is not None
    ref, lo, need = g.keeps.population, g.keeps.min_pct, g.keeps.min_events
    where = f"gate '{g.id}'{label}: keeps_pct_of {ref}"
    n_ref = 0 if ref in res.not_computed else int(np.count_nonzero(res.members[ref]))
    if n_ref < need:
        why = (
            f"not computed ({res.not_computed[ref]})"
            if ref in res.not_computed
            else f"{n_ref} events, fewer than min_events {need}"
        )
        msg = f"{where}: not assessed, the reference population is {why}"
        res.flags.append(
            {"gate": g.id, "code": "drops_reference_not_assessed", "where": ref, "message": msg}
        )
        return
    n_kept = int(np.count_nonzero(res.members[ref] & res.members[g.id]))
    pct = 100.0 * n_kept / n_ref
    if pct < lo:
        msg = (
            f"{where}: the gate keeps {pct:.3g} % of {ref} ({n_kept} of {n_ref} events), below "
            f"the {lo:g} % declared in the gate tree; a boundary of '{g.id}' cuts through the "
            "cells it should keep; fix: check the cut in the gating figure and move it with a "
            "review override, or, if this sample's reference cells are truly outside the gate "
            "(e.g. many CD56- NK cells), lower keeps_pct_of.min_pct in the gate tree"
        )
        res.flags.append({"gate": g.id, "code": "drops_reference", "where": ref, "message": msg})
        logger.warning(msg)


def _fit_gate(
    cols: _Columns,
    g: Gate,
    prow: np.ndarray,
    fitted_bounds: dict[tuple[str, str], float],
    records: list[dict[str, Any]],
    members: Mapping[str, np.ndarray],
    controls: Mapping[str, np.ndarray],
    override: GateOverride | None = None,
    profiles: dict[str, dict[str, Any]] | None = None,
) -> Gate:
    """The gate with its boundaries fitted on the parent's events ``prow``, ``override`` applied.

    Records are appended; the density profile of each valley goes into ``profiles``.

    A boundary that ``override`` sets takes the override's value; its fit (a declared gate: its
    declared value) is still tried and recorded beside it, and a failed fit of that boundary is
    not a failure. Override vertices replace a polygon's (:func:`check_override` admits them on
    polygons only).

    Raises
    ------
    FitFailure
        With ``where`` set to ``<gate>.<marker>`` (empty for a shape: the gate id).
    """
    tree = cols.tree
    rows = _fit_rows(prow)

    def values(d: Dim, on: str | None = None) -> np.ndarray:
        if on is not None and on not in members:
            raise fit_mod.FitFailure(
                "reference_not_fitted", f"population '{on}' to fit on was not computed"
            )
        at = rows if on is None else _fit_rows(np.flatnonzero(members[on]))
        with np.errstate(all="ignore"):
            return np.asarray(_apply(tree.transform_of(d), cols.raw(d, at)), dtype=np.float64)

    if override is not None and override.vertices is not None:
        old = None if override.old_vertices is None else [list(v) for v in override.old_vertices]
        records.append(_override_record(
            g, "shape", {"vertices": [list(v) for v in override.vertices]}, None, old, override,
            lambda: [list(v) for v in _fit_gate(
                cols, g, prow, fitted_bounds, [], members, controls
            ).vertices],
        ))  # fmt: skip
        verts = tuple(tuple(float(x) for x in v) for v in override.vertices)
        return replace(g, vertices=verts, fit=None)
    if g.fit is not None:
        xs = [values(d) for d in g.dims]
        if g.fit.method == "singlet_band":
            f = fit_mod.singlet_band(xs[0], xs[1], dict(g.fit.params))
            new = replace(g, vertices=f.value, fit=None)
            boundary: dict[str, Any] = {"vertices": [list(v) for v in f.value]}
        else:
            f = fit_mod.scatter_cluster(xs[0], xs[1], dict(g.fit.params))
            mean, cov, d2 = f.value
            new = replace(g, mean=mean, covariance=cov, distance_square=d2, fit=None)
            boundary = {"mean": list(mean), "covariance": [list(r) for r in cov]}
            boundary["distance_square"] = d2
            boundary["raw_mean"] = [_raw_of(tree, d, m) for d, m in zip(g.dims, mean, strict=True)]
        records.append(
            {
                "gate": g.id,
                "markers": [d.marker for d in g.dims],
                "side": "shape",
                "method": f.method,
                "value": boundary,
                "raw": None,
                "stats": f.stats,
            }
        )
        return new
    dims = []
    for d in g.dims:
        for side in ("min", "max"):
            fb = getattr(d, f"fit_{side}")
            new_value = None if override is None else override.bounds.get((d.marker, side))
            if fb is None and new_value is None:
                continue
            where = f"{g.id}.{d.marker}"
            if new_value is not None:
                assert override is not None

                def fit_alone(d: Dim = d, fitted: bool = fb is not None, side: str = side) -> Any:
                    if fitted:
                        alone = replace(g, dims=(d,))
                        d = _fit_gate(
                            cols, alone, prow, dict(fitted_bounds), [], members, controls
                        ).dims[0]
                    v = getattr(d, side)
                    return None if v is None else float(v)

                value = float(new_value)
                records.append(_override_record(
                    g, side, value, _raw_of(tree, d, value),
                    override.old_bounds.get((d.marker, side)), override, fit_alone, d.marker,
                ))  # fmt: skip
                if fb is not None:
                    fitted_bounds[(g.id, d.marker)] = value
                d = _with_bound(d, side, value)
                continue
            if fb.same_as is not None:
                key = (fb.same_as, d.marker)
                if key not in fitted_bounds:
                    missing = fit_mod.FitFailure(
                        "reference_not_fitted",
                        f"its {side} is the bound fitted by gate '{fb.same_as}', which was not "
                        "fitted on this tube",
                    )
                    missing.where = where
                    raise missing
                value, method, stats = fitted_bounds[key], "same_as", {"gate": fb.same_as}
            else:
                try:
                    upper = (fb.edge or ("upper" if side == "min" else "lower")) == "upper"
                    fmo = controls.get(where) if fb.fmo_percentile is not None else None
                    if fmo is not None:
                        with np.errstate(all="ignore"):
                            ctrl = _apply(tree.transform_of(d), np.asarray(fmo, dtype=np.float64))
                        f = fit_mod.control_percentile(ctrl, fb.bounds, fb.fmo_percentile)
                    else:
                        f = fit_mod.fit_bound(
                            values(d, fb.on), fb.method, fb.bounds, fb.k, upper, fb.fallback
                        )
                except fit_mod.FitFailure as failure:
                    failure.where = where
                    raise
                value, method, stats = float(f.value), f.method, f.stats
                if f.profile is not None and profiles is not None:
                    grid, dens, a, b = f.profile
                    profiles[f"{where}.{side}"] = {
                        "grid": grid, "density": dens, "peaks": (a, b), "bounds": fb.bounds,
                    }  # fmt: skip
                if fb.on is not None:
                    stats = {**stats, "fitted_on": fb.on}
            fitted_bounds[(g.id, d.marker)] = value
            d = _with_bound(d, side, value)
            records.append(
                {
                    "gate": g.id,
                    "markers": [d.marker],
                    "side": side,
                    "method": method,
                    "value": value,
                    "raw": _raw_of(tree, d, value),
                    "stats": stats,
                }
            )
        dims.append(d)
    return replace(g, dims=tuple(dims))


def _fit_rows(rows: np.ndarray) -> np.ndarray:
    """The (seeded) at most ``MAX_FIT_EVENTS`` of ``rows`` a boundary is fitted on."""
    sub = fit_mod.subsample(rows.size, fit_mod.MAX_FIT_EVENTS, 0)
    return rows if sub is None else rows[sub]


def _raw_of(tree: GateTree, d: Dim, v: float) -> float | None:
    """Gate-unit value ``v`` of ``d`` in channel units (None where the inverse is not finite)."""
    xf = tree.transform_of(d)
    with np.errstate(all="ignore"):
        r = float(v) if xf is None else float(np.asarray(xf.inverse(np.array([v])))[0])
    return r if math.isfinite(r) else None


def _with_bound(d: Dim, side: str, value: float) -> Dim:
    """``d`` with its ``min`` or ``max`` fixed at ``value`` (no longer fitted)."""
    bound: dict[str, Any] = {side: value, f"fit_{side}": None}
    return replace(d, **bound)


def _override_record(
    g: Gate,
    side: str,
    value: Any,
    raw: float | None,
    old: Any,
    ov: GateOverride,
    fitted: Callable[[], Any],
    marker: str = "",
) -> dict[str, Any]:
    """The record of a boundary ``ov`` sets (a ``marker``'s bound, or ``side`` ``shape``).

    Beside it, what the fit gives: ``fitted()`` fits the boundary alone; a failure is recorded
    (``stats.fit_failed``), not raised.
    """
    stats: dict[str, Any] = {"fitted": None, "old": old, "source": ov.source, **ov.info}
    try:
        stats["fitted"] = fitted()
    except fit_mod.FitFailure as exc:
        stats["fit_failed"] = f"{exc.code}: {exc.message}"
    return {
        "gate": g.id,
        "markers": [d.marker for d in g.dims] if side == "shape" else [marker],
        "side": side,
        "method": "override",
        "value": value,
        "raw": raw,
        "stats": stats,
    }


def _stale_flags(
    gate_id: str, ov: GateOverride, fits: Sequence[Mapping[str, Any]], label: str
) -> list[dict[str, str]]:
    """``override_stale`` flags: the boundary under an override now fits elsewhere.

    It fits elsewhere than the ``old`` value the reviewer corrected: the data or the tree changed
    since.
    """
    out = []
    for f in fits:
        if f["gate"] != gate_id or f["method"] != "override":
            continue
        st = f["stats"]
        old, fitted = st.get("old"), st.get("fitted")
        if old is None:
            continue
        if f["side"] == "shape":
            same = np.shape(old) == np.shape(fitted) and np.allclose(
                np.asarray(old, float), np.asarray(fitted, float), atol=STALE_TOLERANCE
            )
            where = gate_id
        else:
            same = fitted is not None and abs(float(fitted) - float(old)) <= STALE_TOLERANCE
            where = f"{gate_id}.{f['markers'][0]}"
        if same:
            continue
        now = (
            "no fit"
            if fitted is None
            else ("other vertices" if f["side"] == "shape" else f"{float(fitted):.4g}")
        )
        was = "its vertices" if f["side"] == "shape" else f"{float(old):.4g}"
        out.append(
            {
                "gate": gate_id,
                "code": "override_stale",
                "where": where,
                "message": (
                    f"gate '{gate_id}'{label}: the override {ov.source or ''} was made on "
                    f"{was} but the tube now gives {now}: the data or the tree changed since "
                    "the correction; review it again"
                ),
            }
        )
    return out


def control_values(
    tree: GateTree,
    gate_id: str,
    events: np.ndarray,
    marker_index: Mapping[str, int | None],
    spill: Any = None,
    keep: np.ndarray | None = None,
    channel_names: Sequence[str] | None = None,
    ranges: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Values of a control gate's marker in a control (FMO) tube's parent population.

    Gates the control tube with the same tree up to the gate's parent and returns the raw
    (compensated if the gate is) values, ready for ``gate_sample(..., controls={gate_id: v})``.
    ``ranges`` are the control tube's own $PnR per marker, as for :func:`gate_sample`: with
    ``t: range`` transforms, the parent gates are placed on the control file's scale.

    Raises
    ------
    GatingError
        The gate is not a threshold gate or its parent cannot be computed in the control tube.
    """
    g = tree.gate(gate_id)
    if g.type != "threshold":
        raise GatingError(f"gate '{gate_id}' is a {g.type} gate, not a threshold gate")
    res = gate_sample(
        tree, events, marker_index, spill=spill, keep=keep, channel_names=channel_names,
        ranges=ranges,
    )  # fmt: skip
    where = f"parent '{g.parent}' of gate '{gate_id}'"
    return _control_tube_values(res, g, g.dims[0], g.parent, "control tube", where)


def fmo_values(
    tree: GateTree,
    gate_id: str,
    marker: str,
    events: np.ndarray,
    marker_index: Mapping[str, int | None],
    spill: Any = None,
    keep: np.ndarray | None = None,
    channel_names: Sequence[str] | None = None,
    ranges: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Raw values of ``marker`` in an FMO tube, in the population a fitted bound is fitted on.

    The FMO tube is gated with the same tree (its own fits) up to that population
    (``fit_on``, else the gate's parent); the result goes to
    ``gate_sample(..., controls={"<gate>.<marker>": values})``.

    Raises
    ------
    GatingError
        The gate has no fitted bound on ``marker``, or the population was not computed in the
        FMO tube (the reason is named).
    """
    g = tree.gate(gate_id)
    dim = next((d for d in g.dims if d.marker == marker and (d.fit_min or d.fit_max)), None)
    if dim is None:
        raise GatingError(f"gate '{gate_id}' has no fitted bound on {marker}")
    fb = dim.fit_min or dim.fit_max
    assert fb is not None
    on = fb.on or g.parent
    res = gate_sample(
        tree,
        events,
        marker_index,
        spill=spill,
        keep=keep,
        channel_names=channel_names,
        ranges=ranges,
    )
    where = f"population '{on}' (where gate '{gate_id}' fits {marker})"
    return _control_tube_values(res, g, dim, on, "FMO tube", where)


def _control_tube_values(
    res: GatingResult, g: Gate, dim: Dim, on: str | None, tube: str, where: str
) -> np.ndarray:
    """Raw values of ``dim`` in population ``on`` of a control tube gated as ``res``.

    ``on`` None means every kept event; the columns gating computed are reused (not compensated
    again).
    """
    if on is None:
        rows = np.flatnonzero(res.keep) if res.keep is not None else np.arange(res.n_events)
    elif on in res.not_computed:
        raise GatingError(f"{tube}: {where} was not computed ({res.not_computed[on]})")
    else:
        rows = np.flatnonzero(res.members[on])
    cols = res._columns()
    if cols.missing(g) is not None:
        raise GatingError(f"{tube} lacks marker '{cols.missing(g)}' needed by gate '{g.id}'")
    return np.array(cols.raw(dim, rows), dtype=np.float64)
