"""Data-driven thresholds: density valley, two-component Gaussian mixture, control (FMO) tube.

Contract
--------
``find_threshold(values, spec, control=None) -> (threshold | None, flag | None)``: pure; values
are already transformed (gate units). Exactly one of the two is None. A threshold is always
inside ``spec.bounds``. A flag is ``{code, message}`` with codes

``too_few_events``  fewer than ``MIN_EVENTS`` finite values;
``no_valley``       no density valley between two modes inside the bounds;
``degenerate_fit``  the mixture collapsed (a tiny component, or Ashman's D <= 2: not bimodal);
``out_of_bounds``   the mixture or control threshold falls outside the bounds;
``missing_control`` a control gate was evaluated without its control tube.

The valley is found by :func:`nkflow.gating.fit.valley`, the same finder the fitted gates use.
The caller (``gate_sample``) names the gate and tube and decides on the fallback; this module
never substitutes a default. Randomness only through ``spec.random_state``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from nkflow.gating import fit
from nkflow.gating.tree import AutoSpec

logger = logging.getLogger(__name__)

#: the same floor as the fitted gates' (one valley finder: :func:`nkflow.gating.fit.valley`)
MIN_EVENTS = fit.MIN_EVENTS
#: smallest mixture weight and Ashman's D (Ashman et al. 1994) for a usable two-component fit
MIN_WEIGHT = 0.01
MIN_ASHMAN_D = 2.0


def _flag(code: str, message: str) -> tuple[None, dict[str, str]]:
    return None, {"code": code, "message": message}


def gmm_threshold(
    values: np.ndarray, bounds: tuple[float, float], random_state: int
) -> tuple[float | None, dict[str, str] | None]:
    """Equal-posterior point between the means of a 2-component Gaussian mixture.

    Returns
    -------
    (threshold, None), or (None, {code, message}) as :func:`find_threshold`.
    """
    from sklearn.mixture import GaussianMixture

    v = values[np.isfinite(values)].reshape(-1, 1)
    gm = GaussianMixture(n_components=2, random_state=random_state).fit(v)
    means = gm.means_.ravel()
    sds = np.sqrt(gm.covariances_.ravel())
    w = gm.weights_.ravel()
    order = np.argsort(means)
    means, sds, w = means[order], sds[order], w[order]
    # Ashman's D: two normal components are clearly separated (bimodal) only when D > 2
    sep = math.sqrt(2.0) * (means[1] - means[0]) / max(math.hypot(sds[0], sds[1]), 1e-12)
    if w.min() < MIN_WEIGHT or sep <= MIN_ASHMAN_D:
        return _flag(
            "degenerate_fit",
            f"two-component mixture is degenerate (weights {w[0]:.3f}/{w[1]:.3f}, "
            f"means {means[0]:.4g}/{means[1]:.4g}, Ashman's D {sep:.2f}; need weights >= "
            f"{MIN_WEIGHT:g} and D > {MIN_ASHMAN_D:g})",
        )
    grid = np.linspace(means[0], means[1], 2001).reshape(-1, 1)
    post = gm.predict_proba(grid)[:, order[1]]
    cut = float(grid[int(np.argmax(post >= 0.5)), 0])
    if not (bounds[0] <= cut <= bounds[1]):
        return _flag(
            "out_of_bounds",
            f"mixture threshold {cut:.4g} is outside bounds [{bounds[0]:g}, {bounds[1]:g}]",
        )
    return cut, None


def find_threshold(
    values: np.ndarray, spec: AutoSpec, control: np.ndarray | None = None
) -> tuple[float | None, dict[str, str] | None]:
    """Find a data-driven threshold for one gate.

    Parameters
    ----------
    values
        Transformed values of the gate's marker on the parent population.
    spec
        The gate's :class:`~nkflow.gating.tree.AutoSpec`.
    control
        Transformed values from the control tube (``method: control`` only).

    Returns
    -------
    (threshold, None) on success, (None, {code, message}) on failure.
    """
    v = np.asarray(values, dtype=np.float64)
    if spec.method == "control":
        if control is None:
            return _flag("missing_control", "no control (FMO) tube values were given")
        c = np.asarray(control, dtype=np.float64)
        c = c[np.isfinite(c)]
        if c.size < MIN_EVENTS:
            return _flag(
                "too_few_events",
                f"control tube has {c.size} events in the parent population, need {MIN_EVENTS}",
            )
        cut = float(np.percentile(c, spec.control_percentile))
        if not (spec.bounds[0] <= cut <= spec.bounds[1]):
            return _flag(
                "out_of_bounds",
                f"control {spec.control_percentile:g}th percentile {cut:.4g} is outside bounds "
                f"[{spec.bounds[0]:g}, {spec.bounds[1]:g}]",
            )
        return cut, None
    n = int(np.count_nonzero(np.isfinite(v)))
    if n < MIN_EVENTS:
        return _flag("too_few_events", f"{n} events in the parent population, need {MIN_EVENTS}")
    if spec.method == "valley":
        try:
            return fit.valley(v, spec.bounds).value, None
        except fit.FitFailure as exc:
            return _flag(exc.code, exc.message)
    return gmm_threshold(v, spec.bounds, spec.random_state)
