"""Synthetic tubes for the QC tests: a steady acquisition, or a clog followed by a burst of junk.

Contract: :func:`make_tube` is deterministic for a given ``random_state`` and builds the truth by
construction, not by gating: the good events contain exactly ``n_lymph`` lymphocytes of which
exactly ``n_nk`` are NK cells, so the true NK % of lymphocytes is ``100 * n_nk / n_lymph``
(10.0 % by default). Populations are separated by at least 4 SD from the simple thresholds of
:func:`classify`, so those thresholds recover the labels of the good events (a few events in
10^5 at most). Junk events (debris released when a clog clears) are CD3-negative, CD56-dim
autofluorescent particles with lymphocyte-like scatter: they fall in the lymphocyte and NK
thresholds and inflate the NK %. :func:`write_fcs` writes a tube as an FCS 3.1 file with Time in
clock ticks and ``$TIMESTEP``, the way instruments do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHANNELS = ("Time", "FSC-A", "SSC-A", "CD3", "CD56")
TIMESTEP = 0.01  # seconds per Time tick, as on BD instruments

# Simple gates on the raw scale (see the module docstring for the separations they rely on).
LYMPH_FSC = (35000.0, 75000.0)
LYMPH_SSC_MAX = 35000.0
CD3_NEG_MAX = 1000.0
CD56_POS_MIN = 1000.0


@dataclass(frozen=True)
class SyntheticTube:
    """A synthetic tube with labels.

    ``events`` columns follow :data:`CHANNELS`; Time is in ticks of :data:`TIMESTEP` seconds.
    """

    events: np.ndarray
    is_junk: np.ndarray
    is_lymph: np.ndarray
    is_nk: np.ndarray
    n_lymph: int
    n_nk: int
    clog: tuple[float, float] | None
    burst: tuple[float, float] | None

    @property
    def truth_nk_pct(self) -> float:
        """True NK % of lymphocytes among the good events (by construction)."""
        return 100.0 * self.n_nk / self.n_lymph

    @property
    def time_seconds(self) -> np.ndarray:
        """Time in seconds (ticks x TIMESTEP), as FlowIO gives it for a channel named Time."""
        return self.events[:, 0] * TIMESTEP

    def signals(self) -> dict[str, np.ndarray]:
        """Key channels for time QC: scatter and the NK markers, raw."""
        return {name: self.events[:, i] for i, name in enumerate(CHANNELS) if name != "Time"}


def make_tube(
    random_state: int = 0,
    *,
    n_good: int = 60000,
    duration_s: float = 60.0,
    lymph_frac: float = 0.7,
    nk_frac_of_lymph: float = 0.10,
    clog: tuple[float, float] | None = (30.0, 33.0),
    burst_s: float = 0.5,
    n_junk: int = 6000,
) -> SyntheticTube:
    """Build a tube; ``clog=None`` gives a steady acquisition without junk.

    Good events arrive uniformly (a Poisson process) over ``duration_s`` seconds except during
    the clog, when none arrive; when the clog clears, ``n_junk`` junk events arrive uniformly
    within ``burst_s`` seconds.
    """
    rng = np.random.default_rng(random_state)
    n_lymph = round(lymph_frac * n_good)
    n_nk = round(nk_frac_of_lymph * n_lymph)
    n_t = round(0.75 * (n_lymph - n_nk))
    n_other = n_good - n_lymph

    def neg(k: int) -> np.ndarray:
        return rng.normal(100.0, 150.0, k)

    def pos(k: int, level: float, sd: float = 0.35) -> np.ndarray:
        return np.exp(rng.normal(np.log(level), sd, k))

    # Lymphocytes: NK (CD3- CD56+), T (CD3+ CD56-), B (CD3- CD56-); then monocytes/granulocytes.
    fsc = np.concatenate([rng.normal(55000, 5000, n_lymph), rng.normal(110000, 10000, n_other)])
    ssc = np.concatenate([rng.normal(20000, 3000, n_lymph), rng.normal(90000, 15000, n_other)])
    cd3 = np.concatenate([neg(n_nk), pos(n_t, 8000), neg(n_lymph - n_nk - n_t), neg(n_other)])
    cd56 = np.concatenate([pos(n_nk, 5000, 0.4), neg(n_lymph - n_nk), neg(n_other)])
    is_lymph = np.arange(n_good) < n_lymph
    is_nk = np.arange(n_good) < n_nk

    if clog is None:
        t_good = rng.uniform(0.0, duration_s, n_good)
        junk_t = np.empty(0)
        burst = None
        n_junk = 0
    else:
        c0, c1 = clog
        t_good = rng.uniform(0.0, duration_s - (c1 - c0), n_good)
        t_good = np.where(t_good >= c0, t_good + (c1 - c0), t_good)
        junk_t = rng.uniform(c1, c1 + burst_s, n_junk)
        burst = (c1, c1 + burst_s)
    junk = np.column_stack(
        [
            rng.normal(50000, 6000, n_junk),
            rng.normal(22000, 4000, n_junk),
            neg(n_junk),
            pos(n_junk, 4000, 0.5),
        ]
    )
    good = np.column_stack([fsc, ssc, cd3, cd56])
    t = np.concatenate([t_good, junk_t])
    values = np.vstack([good, junk])
    labels_junk = np.concatenate([np.zeros(n_good, bool), np.ones(n_junk, bool)])
    labels_lymph = np.concatenate([is_lymph, np.zeros(n_junk, bool)])
    labels_nk = np.concatenate([is_nk, np.zeros(n_junk, bool)])
    order = np.argsort(t, kind="stable")
    ticks = np.floor(t[order] / TIMESTEP)
    events = np.column_stack([ticks, values[order]])
    return SyntheticTube(
        events=events,
        is_junk=labels_junk[order],
        is_lymph=labels_lymph[order],
        is_nk=labels_nk[order],
        n_lymph=n_lymph,
        n_nk=n_nk,
        clog=clog,
        burst=burst,
    )


def classify(events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threshold gating on raw values: (lymphocyte mask, NK-of-lymphocyte mask)."""
    fsc, ssc, cd3, cd56 = events[:, 1], events[:, 2], events[:, 3], events[:, 4]
    lymph = (fsc > LYMPH_FSC[0]) & (fsc < LYMPH_FSC[1]) & (ssc < LYMPH_SSC_MAX)
    nk = lymph & (cd3 < CD3_NEG_MAX) & (cd56 > CD56_POS_MIN)
    return lymph, nk


def nk_pct_of_lymphocytes(events: np.ndarray, keep: np.ndarray | None = None) -> float:
    """NK % of lymphocytes by :func:`classify`, on the kept events only."""
    lymph, nk = classify(events)
    if keep is not None:
        lymph, nk = lymph & keep, nk & keep
    return 100.0 * nk.sum() / lymph.sum()


def write_fcs(path: Path, tube: SyntheticTube, *, with_time: bool = True) -> Path:
    """Write ``tube`` as FCS 3.1 (float32), Time in ticks with ``$TIMESTEP``.

    ``with_time=False`` drops the Time column and ``$TIMESTEP`` (a file without a Time channel).
    """
    import flowio

    cols = list(range(len(CHANNELS))) if with_time else list(range(1, len(CHANNELS)))
    names = [CHANNELS[i] for i in cols]
    meta = {"TIMESTEP": str(TIMESTEP)} if with_time else {}
    data = tube.events[:, cols].astype(np.float32).ravel().tolist()
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, data, names, metadata_dict=meta)
    return path
