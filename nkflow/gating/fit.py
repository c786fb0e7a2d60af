"""Gate boundaries fitted to each tube: density valleys, peak tails, singlet bands, scatter clusters.

Contract
--------
Pure functions on transformed values (gate units); nothing here reads files or knows a tube.
Each fit returns a :class:`Fit` (the boundary and the statistics that justify it) or raises
:class:`FitFailure` with a code the caller turns into a QC reason (``gate_<code>:<where>``):

``too_few_events``  fewer than ``MIN_EVENTS`` finite values to fit on;
``no_valley``       no density valley between two modes inside the declared bounds (and no
                    fallback declared);
``out_of_bounds``   the fitted boundary falls outside its declared bounds;
``no_cluster``      no mixture component looks like the target population;
``degenerate_fit``  the fit collapsed (zero spread, singular covariance).

Methods (the ideas of flowDensity ``deGate`` and OpenCyto's ``mindensity``, ``tailgate``,
``singletGate`` and ``flowClust``; the code is ours):

* ``valley``: Gaussian kernel density (Silverman bandwidth) on a 512-point grid; among the
  minima between two adjacent significant peaks (height >= ``MIN_PEAK`` of the highest), the one
  inside the bounds with the lowest density relative to the lower of the highest peaks on its
  two sides (``depth``; a valley must have depth <= ``MAX_DEPTH``).
* ``tail``: the main (highest) peak plus ``k`` standard deviations towards the gate, the
  deviation from the peak's half width at half maximum on that side (HWHM / 1.1774, robust to
  the population beyond the edge).
  Used alone (CD25hi above the conventional CD4 cells) or as the declared fallback of a valley
  when there is one mode: a population that is truly absent is then a real zero, not a failure.
* ``singlet_band``: FSC-H / FSC-A ratio of the events above the 10th FSC-A percentile; the band
  median +/- ``k`` x 1.4826 MAD, drawn as a triangle from the origin.
* ``scatter_cluster``: a Gaussian mixture (scikit-learn, seeded) on FSC x SSC; components that
  are light (``min_weight``) or debris-like (FSC coefficient of variation > ``max_x_cv``) are
  set aside, the one with the lowest SSC mean is the target, components whose means lie inside
  its 2.5-sigma ellipse are merged into it, and the gate is its ellipse holding ``coverage`` of a
  Gaussian (distance^2 = -2 ln(1 - coverage)).

Events piled on exactly the lowest value (integer files clip negatives to 0, mass cytometry
writes exact zeros) are left out when ``tail`` looks for the main peak: a pile is not a
population. A valley keeps them: they are the low end of the negatives and anchor that side.

Randomness only through the declared ``random_state``; subsampling is a seeded choice of at most
``max_events`` events, so identical input gives identical boundaries.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nkflow.errors import ConfigError

logger = logging.getLogger(__name__)

MIN_EVENTS = 50
GRID = 512
MIN_PEAK = 0.01
MAX_DEPTH = 0.8
MAX_FIT_EVENTS = 20000
#: each side of a valley must hold at least this many events (and this share of them)
MIN_SIDE_EVENTS = 5
MIN_SIDE_FRAC = 0.005

#: declared arguments of the shape methods, with their defaults
SHAPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "singlet_band": {"k": 4.0, "ratio_bounds": (0.3, 1.5), "min_quantile": 0.1},
    "scatter_cluster": {
        "components": 4,
        "coverage": 0.95,
        "min_weight": 0.05,
        "max_x_cv": 0.35,
        "mean_bounds": ((0.0, 1.0), (0.0, 1.0)),
        "random_state": 0,
        "max_events": MAX_FIT_EVENTS,
    },
}


class FitFailure(Exception):
    """A boundary could not be fitted; ``code`` names why (module table)."""

    def __init__(self, code: str, message: str, stats: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stats = dict(stats or {})
        #: set by the caller: ``<gate>.<marker>`` or the gate id
        self.where = ""


@dataclass(frozen=True)
class Fit:
    """A fitted boundary: its method (as used: ``valley`` or its ``tail`` fallback) and statistics."""

    method: str
    value: Any
    stats: dict[str, Any] = field(default_factory=dict)
    #: a valley's density profile ``(grid, density, i_low_peak, i_high_peak)``, kept for the
    #: plausible range of the boundary (:mod:`nkflow.gating.perturb`); not part of the record
    profile: tuple[np.ndarray, np.ndarray, int, int] | None = field(
        default=None, repr=False, compare=False
    )


def check_shape_params(where: str, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the declared arguments of a shape fit; return them with defaults, frozen.

    Raises
    ------
    ConfigError
        An unknown argument or a value of the wrong kind (the message names it).
    """
    defaults = SHAPE_DEFAULTS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{where}: unknown fit argument(s) {unknown} for {method}; allowed: {sorted(defaults)}"
        )
    out = dict(defaults)
    for k, v in params.items():
        d = defaults[k]
        if isinstance(d, tuple):
            try:
                arr = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                arr = np.zeros(0)
            like = np.asarray(d)
            if arr.shape != like.shape:
                raise ConfigError(f"{where}: fit '{k}' must look like {like.tolist()}, found {v!r}")
            out[k] = tuple(map(tuple, arr.tolist())) if arr.ndim == 2 else tuple(arr.tolist())
        elif isinstance(d, int) and not isinstance(d, bool):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{where}: fit '{k}' must be a whole number >= 0, found {v!r}")
            out[k] = int(v)
        else:
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ConfigError(f"{where}: fit '{k}' must be a number > 0, found {v!r}")
            out[k] = float(v)
    if method == "scatter_cluster" and not 0 < out["coverage"] < 1:
        raise ConfigError(
            f"{where}: fit 'coverage' must be between 0 and 1, found {out['coverage']}"
        )
    return out


# ----------------------------------------------------------------------------- 1-D


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def density(v: np.ndarray, lo: float, hi: float, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernel density of ``v`` on ``n`` grid points from ``lo`` to ``hi``.

    Binned (histogram then Gaussian convolution), Silverman's bandwidth
    ``0.9 min(sd, IQR/1.34) n^-1/5``, at least two grid steps.
    """
    grid = np.linspace(lo, hi, n)
    step = grid[1] - grid[0]
    counts, _ = np.histogram(v, bins=n, range=(lo - step / 2, hi + step / 2))
    sd = float(np.std(v))
    q75, q25 = np.percentile(v, [75, 25])
    spread = min(sd, float(q75 - q25) / 1.34) or sd
    bw = 0.9 * spread * v.size ** (-1 / 5) if v.size > 1 else step
    sig = max(bw / step, 2.0)
    half = int(np.ceil(4 * sig))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sig) ** 2)
    dens = np.convolve(counts.astype(np.float64), k / k.sum(), mode="same")
    return grid, dens / (v.size * step)


def _grid_for(v: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(np.quantile(v, 0.001)), float(np.quantile(v, 0.999))
    pad = 0.05 * max(hi - lo, bounds[1] - bounds[0])
    return density(v, min(lo, bounds[0]) - pad, max(hi, bounds[1]) + pad)


def _peaks(dens: np.ndarray) -> np.ndarray:
    """Indices of local maxima at least ``MIN_PEAK`` of the highest."""
    d = dens
    is_max = np.r_[False, (d[1:-1] > d[:-2]) & (d[1:-1] >= d[2:]), False]
    return np.flatnonzero(is_max & (d >= MIN_PEAK * d.max()))


def valley(values: np.ndarray, bounds: tuple[float, float]) -> Fit:
    """The most significant density valley inside ``bounds`` (module docstring).

    Raises
    ------
    FitFailure
        ``too_few_events`` or ``no_valley``.
    """
    v = _need(values)
    grid, dens = _grid_for(v, bounds)
    peaks = _peaks(dens)
    best: tuple[float, int, int, int] | None = None
    for a, b in zip(peaks[:-1], peaks[1:], strict=False):
        seg = dens[a : b + 1]
        flat = np.flatnonzero(seg <= seg.min() + 1e-12 * seg.max())
        i = int(a + flat[flat.size // 2])  # the middle of a flat (empty) valley floor
        if not bounds[0] <= grid[i] <= bounds[1]:
            continue
        depth = float(dens[i] / min(dens[: i + 1].max(), dens[i:].max()))
        n_below = int(np.count_nonzero(v < grid[i]))
        side = min(n_below, v.size - n_below)
        if side < max(MIN_SIDE_EVENTS, MIN_SIDE_FRAC * v.size):
            continue
        if depth <= MAX_DEPTH and (best is None or depth < best[0]):
            best = (depth, i, int(a), int(b))
    if best is None:
        where = ", ".join(f"{grid[p]:.3f}" for p in peaks) or "none"
        raise FitFailure(
            "no_valley",
            f"no density valley between two modes within bounds [{bounds[0]:g}, {bounds[1]:g}] "
            f"({v.size} events; modes at {where})",
            {"n_events": int(v.size), "modes": [round(float(grid[p]), 4) for p in peaks]},
        )
    depth, i, a, b = best
    below = float(np.mean(v < grid[i]))
    return Fit(
        "valley",
        float(grid[i]),
        {
            "n_events": int(v.size),
            "valley_depth": round(depth, 4),
            "peak_low": round(float(grid[a]), 4),
            "peak_high": round(float(grid[b]), 4),
            "frac_below": round(below, 4),
        },
        profile=(grid, dens, a, b),
    )


def tail(values: np.ndarray, bounds: tuple[float, float], k: float, upper: bool) -> Fit:
    """Edge of the main peak, ``k`` robust standard deviations towards the gate.

    Parameters
    ----------
    upper
        True: the edge above the main peak (a ``min`` bound: keep what lies above it);
        False: the edge below it (a ``max`` bound).

    Raises
    ------
    FitFailure
        ``too_few_events``, ``degenerate_fit`` (no spread) or ``out_of_bounds``.
    """
    v = _without_floor_pile(_need(values))
    grid, dens = _grid_for(v, bounds)
    top = int(np.argmax(dens))
    mode = float(grid[top])
    # half width at half maximum on the gate's side: the spread of the main peak itself, not
    # of what lies beyond it (a Gaussian's sd is HWHM / 1.1774)
    half = dens[top:] if upper else dens[top::-1]
    below = np.flatnonzero(half < 0.5 * dens[top])
    if below.size == 0:
        raise FitFailure("degenerate_fit", f"the main peak at {mode:.4g} has no edge to measure")
    step = float(grid[1] - grid[0])
    sd = float(below[0]) * step / 1.1774
    if not sd > 0:
        raise FitFailure("degenerate_fit", f"the main peak at {mode:.4g} has no spread")
    cut = mode + k * sd if upper else mode - k * sd
    stats = {"n_events": int(v.size), "mode": round(mode, 4), "sd": round(sd, 5), "k": k}
    _in_bounds(cut, bounds, "tail", stats)
    return Fit("tail", float(cut), stats)


def _need(values: np.ndarray) -> np.ndarray:
    v = _finite(values)
    if v.size < MIN_EVENTS:
        raise FitFailure("too_few_events", f"{v.size} events to fit on, need at least {MIN_EVENTS}")
    return v


def _without_floor_pile(v: np.ndarray) -> np.ndarray:
    """``v`` without the events piled on its lowest value, when they are a pile.

    Integer files clip negatives to 0 and mass cytometry writes exact zeros: hundreds of events
    on one value make a spike that the density takes for the main population (a ``tail`` cut
    then lands below every cell). A pile is at least ``MIN_SIDE_EVENTS`` events and 0.5 % of
    them on exactly the minimum. ``v`` is not empty (:func:`tail` passes it through ``_need``).
    """
    floor = v.min()
    at = v == floor
    n_at = int(np.count_nonzero(at))
    if n_at >= max(MIN_SIDE_EVENTS, MIN_SIDE_FRAC * v.size):
        return v[~at]
    return v


def _in_bounds(cut: float, bounds: tuple[float, float], what: str, stats: Mapping) -> None:
    if not bounds[0] <= cut <= bounds[1]:
        raise FitFailure(
            "out_of_bounds",
            f"{what} boundary {cut:.4g} is outside its bounds [{bounds[0]:g}, {bounds[1]:g}]",
            stats,
        )


def fit_bound(
    values: np.ndarray,
    method: str,
    bounds: tuple[float, float],
    k: float,
    upper: bool,
    fallback: str | None = None,
) -> Fit:
    """Fit one rectangle bound (``valley`` with an optional ``tail`` fallback, or ``tail``)."""
    if method == "tail":
        return tail(values, bounds, k, upper)
    try:
        return valley(values, bounds)
    except FitFailure as exc:
        if exc.code != "no_valley" or fallback != "tail":
            raise
        fit = tail(values, bounds, k, upper)
        return Fit("tail", fit.value, {**fit.stats, "fallback_from": "valley: " + exc.message})


def control_percentile(control: np.ndarray, bounds: tuple[float, float], pct: float) -> Fit:
    """The ``pct`` percentile of an FMO control tube's values (gate units).

    Raises
    ------
    FitFailure
        ``too_few_events`` in the control population, or ``out_of_bounds``.
    """
    c = _finite(control)
    if c.size < MIN_EVENTS:
        raise FitFailure(
            "too_few_events",
            f"the FMO tube has {c.size} events to set the boundary from, need {MIN_EVENTS}",
        )
    cut = float(np.percentile(c, pct))
    stats = {"n_events": int(c.size), "percentile": pct}
    _in_bounds(cut, bounds, f"FMO {pct:g}th percentile", stats)
    return Fit("fmo", cut, stats)


# ----------------------------------------------------------------------------- 2-D


def subsample(n: int, max_events: int, random_state: int) -> np.ndarray | None:
    """Seeded, sorted choice of at most ``max_events`` of ``n`` rows (None: all)."""
    if n <= max_events:
        return None
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=max_events, replace=False))


def singlet_band(area: np.ndarray, height: np.ndarray, p: Mapping[str, Any]) -> Fit:
    """FSC-H / FSC-A band of single cells; value: polygon vertices in gate units.

    Raises
    ------
    FitFailure
        ``too_few_events``, ``degenerate_fit`` or ``out_of_bounds`` (lower ratio outside
        ``ratio_bounds``).
    """
    a, h = np.asarray(area, dtype=np.float64), np.asarray(height, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(h) & (a > 0)
    a, h = a[ok], h[ok]
    if a.size < MIN_EVENTS:
        raise FitFailure("too_few_events", f"{a.size} events to fit on, need {MIN_EVENTS}")
    big = a >= np.quantile(a, p["min_quantile"])
    r = h[big] / a[big]
    med = float(np.median(r))
    mad = 1.4826 * float(np.median(np.abs(r - med)))
    if not mad > 0:
        raise FitFailure("degenerate_fit", "FSC-H / FSC-A ratio has no spread")
    lo, hi = med - p["k"] * mad, med + p["k"] * mad
    stats = {
        "n_events": int(r.size),
        "ratio_median": round(med, 5),
        "ratio_sd": round(mad, 5),
        "ratio_low": round(lo, 5),
        "ratio_high": round(hi, 5),
    }
    _in_bounds(lo, p["ratio_bounds"], "lower FSC-H/FSC-A ratio", stats)
    x = 1.02 * max(1.0, float(np.max(a)))  # just past the top of the scale
    verts = ((0.0, 0.0), (x, lo * x), (x, hi * x))
    return Fit("singlet_band", verts, stats)


def scatter_cluster(x: np.ndarray, y: np.ndarray, p: Mapping[str, Any]) -> Fit:
    """The lowest-SSC cell cluster on FSC x SSC; value: (mean, covariance, distance^2).

    Raises
    ------
    FitFailure
        ``too_few_events``, ``no_cluster``, ``degenerate_fit`` or ``out_of_bounds`` (the mean
        outside ``mean_bounds``).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    pts = np.column_stack([x, y]).astype(np.float64)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if pts.shape[0] < max(MIN_EVENTS, 20 * p["components"]):
        raise FitFailure("too_few_events", f"{pts.shape[0]} events to fit a scatter cluster on")
    sub = subsample(pts.shape[0], p["max_events"], p["random_state"])
    fit_pts = pts if sub is None else pts[sub]
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            n_components=p["components"],
            covariance_type="full",
            random_state=p["random_state"],
            reg_covar=1e-6,
            max_iter=200,
        ).fit(fit_pts)
    means, covs, w = gm.means_, gm.covariances_, gm.weights_
    sds = np.sqrt(np.stack([np.diag(c) for c in covs]))
    cv = sds[:, 0] / np.maximum(np.abs(means[:, 0]), 1e-12)
    cand = [j for j in range(len(w)) if w[j] >= p["min_weight"] and cv[j] <= p["max_x_cv"]]
    comps = [
        {
            "weight": round(float(w[j]), 4),
            "mean": [round(float(m), 4) for m in means[j]],
            "x_cv": round(float(cv[j]), 4),
        }
        for j in np.argsort(means[:, 1])
    ]
    if not cand:
        raise FitFailure(
            "no_cluster",
            f"no mixture component has weight >= {p['min_weight']:g} and FSC CV <= "
            f"{p['max_x_cv']:g} (components by SSC: {comps})",
            {"components": comps},
        )
    j = min(cand, key=lambda i: means[i, 1])
    inv = np.linalg.inv(covs[j])
    group = [
        i
        for i in cand
        if i == j or float((means[i] - means[j]) @ inv @ (means[i] - means[j])) < 2.5**2
    ]
    wg = w[group] / w[group].sum()
    mean = (wg[:, None] * means[group]).sum(axis=0)
    cov = sum(
        wg[n] * (covs[i] + np.outer(means[i] - mean, means[i] - mean)) for n, i in enumerate(group)
    )
    if not np.all(np.isfinite(cov)) or np.linalg.det(cov) <= 0:
        raise FitFailure("degenerate_fit", "the selected cluster has a singular covariance")
    d2 = -2.0 * math.log(1.0 - p["coverage"])
    stats = {
        "n_events": int(fit_pts.shape[0]),
        "weight": round(float(w[group].sum()), 4),
        "components_merged": len(group),
        "mean": [round(float(m), 5) for m in mean],
        "components": comps,
        "bic": round(float(gm.bic(fit_pts)), 1),
    }
    for dim, (lo, hi) in enumerate(p["mean_bounds"]):
        _in_bounds(float(mean[dim]), (lo, hi), f"cluster mean (dim {dim + 1})", stats)
    covt = tuple(tuple(round(float(c), 10) for c in row) for row in cov)
    return Fit("scatter_cluster", (tuple(round(float(m), 8) for m in mean), covt, d2), stats)
