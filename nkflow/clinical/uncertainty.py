"""How sure a day-14 verdict is: gate placement, counting and chimerism error in one distribution.

Contract
--------
Pure functions on numbers and on one tube's re-gatings (the rows of ``perturbation.tsv``
written by :mod:`nkflow.gating.perturb`); no I/O. :func:`combine` draws donor NK/uL as

    ALC x (NK fraction) x (% donor / 100)

where, in each of ``draws`` draws (methods: ``docs/uncertainty.md``),

* **gate placement**: the NK and denominator counts of one joint re-gating (each re-gating used
  equally often);
* **counting**: the NK fraction drawn from its Jeffreys posterior
  ``Beta(k + 1/2, n - k + 1/2)`` given those ``k`` NK of ``n`` denominator events (binomial
  sampling of the gated events);
* **chimerism**: % donor drawn from a normal with the reported mean and the STR SD across loci
  (when % donor comes from peaks) or the configured assay SD, truncated to [0, 100].

The three sources are drawn independently. It returns the probability that donor NK/uL is above
the threshold, the 2.5-97.5 % interval, each source's share of the variance (each source alone,
the others switched off at their reported values), the dominant source, a histogram of the
draws, and the boundaries whose plausible range alone flips the verdict (``verdict_unstable``).
The ALC is taken as exact. Randomness only through ``numpy.random.default_rng([random_state,
seed])``, ``seed`` from the patient and sample ids (:func:`endpoint_seed`): the same inputs give
the same numbers, byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: sources of spread, in the order of the ``*_variance_frac`` columns
SOURCES = ("gate", "counting", "chimerism")
HIST_BINS = 40


@dataclass(frozen=True)
class UncertaintySettings:
    """The endpoint-step part of ``uncertainty`` (``workflow/schemas/uncertainty.schema.yaml``)."""

    draws: int
    chimerism_assay_sd_pct: float
    random_state: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> UncertaintySettings:
        """From a configuration's ``uncertainty`` block, checked by its schema, defaults filled."""
        from nkflow.schemas import build_settings

        raw = (config or {}).get("uncertainty")
        return build_settings(cls, raw, "uncertainty", prefix="uncertainty")  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Sweep:
    """One boundary moved across its range, the others as fitted."""

    boundary: str  # column id, e.g. nk.CD56.min
    where: str  # <gate>.<marker> or the gate id
    values: np.ndarray
    nk: np.ndarray
    lymph: np.ndarray


@dataclass(frozen=True)
class GateDraws:
    """One tube's re-gatings: the fitted counts, the joint draws and the sweeps."""

    base: tuple[int, int]
    nk: np.ndarray
    lymph: np.ndarray
    sweeps: tuple[Sweep, ...] = ()


@dataclass
class Uncertainty:
    """What :func:`combine` returns (all donor NK/uL)."""

    p_above: float
    lo95: float
    hi95: float
    median: float
    variance_frac: dict[str, float | None]
    dominant: str | None
    unstable: list[str]
    histogram: dict[str, Any] = field(default_factory=dict)


def endpoint_seed(patient_id: str, sample_id: str) -> int:
    """A 63-bit seed from the patient and sample ids (the tube seed's rule)."""
    from nkflow.gating.perturb import tube_seed

    return tube_seed(patient_id, sample_id)


def _where(boundary: str) -> str:
    """``nk.CD56.min`` -> ``nk.CD56``; ``lymphocytes.scale`` -> ``lymphocytes``."""
    parts = boundary.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 else boundary


def gate_draws(rows: Sequence[Mapping[str, Any]]) -> GateDraws | str:
    """The re-gatings of one tube from its ``perturbation.tsv`` rows, or why they are unusable.

    Rows are ``{draw, varied, nk_events, lymphocyte_events, <boundary>...}`` records
    (``varied``: ``none`` for the fitted gates, ``all`` for joint draws, else a boundary id).
    """
    base = [r for r in rows if r["varied"] == "none"]
    joint = [r for r in rows if r["varied"] == "all"]
    if len(base) != 1 or not joint:
        return "perturbation_incomplete"
    b = base[0]

    def counts(rs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([int(r["nk_events"]) for r in rs], dtype=np.int64),
            np.array([int(r["lymphocyte_events"]) for r in rs], dtype=np.int64),
        )

    nk, ly = counts(joint)
    sweeps = []
    for bid in dict.fromkeys(r["varied"] for r in rows if r["varied"] not in ("none", "all")):
        rs = [r for r in rows if r["varied"] == bid]
        snk, sly = counts(rs)
        vals = np.array([float(r[bid]) for r in rs], dtype=np.float64)
        sweeps.append(Sweep(bid, _where(bid), vals, snk, sly))
    return GateDraws((int(b["nk_events"]), int(b["lymphocyte_events"])), nk, ly, tuple(sweeps))


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, n: int, lo: float = 0.0, hi: float = 100.0
) -> np.ndarray:
    """``n`` draws of N(mean, sd) truncated to [lo, hi] (rejection; sd 0 gives the mean)."""
    if not sd > 0:
        return np.full(n, min(max(mean, lo), hi))
    out = rng.normal(mean, sd, n)
    bad = np.flatnonzero((out < lo) | (out > hi))
    for _ in range(200):
        if bad.size == 0:
            break
        out[bad] = rng.normal(mean, sd, bad.size)
        bad = bad[(out[bad] < lo) | (out[bad] > hi)]
    # a mean far outside [lo, hi] with a tiny sd: the nearest bound is all that is left
    return np.clip(out, lo, hi)


def _flip_ranges(
    gate: GateDraws, alc: float, pct: float, threshold: float, above: bool
) -> list[str]:
    """``verdict_unstable`` codes: boundaries whose range alone flips the point verdict."""
    out = []
    for sw in gate.sweeps:
        with np.errstate(divide="ignore", invalid="ignore"):
            donor = alc * sw.nk / sw.lymph * pct / 100.0
        flips = np.flatnonzero((sw.lymph > 0) & ((donor > threshold) != above))
        if flips.size:
            lo, hi = float(sw.values[flips].min()), float(sw.values[flips].max())
            out.append(f"verdict_unstable:{sw.where}:{lo:.4g}-{hi:.4g}")
    if not out:
        with np.errstate(divide="ignore", invalid="ignore"):
            donor = alc * gate.nk / gate.lymph * pct / 100.0
        k = int(np.count_nonzero((gate.lymph > 0) & ((donor > threshold) != above)))
        if k:
            out.append(f"verdict_unstable:joint:{k}/{gate.nk.size}")
    return out


def combine(
    *,
    alc_per_ul: float,
    chimerism_pct: float,
    chimerism_sd: float,
    gate: GateDraws,
    threshold: float,
    above: bool,
    settings: UncertaintySettings,
    seed: int,
) -> Uncertainty | str:
    """Draws of donor NK/uL from the three sources, summarised (module docstring).

    ``above`` is the reported verdict (donor NK/uL > threshold on the reported value): a
    boundary is named in ``unstable`` when its range alone gives the other verdict.

    Returns
    -------
    Uncertainty or str
        The summary, or a reason code when it cannot be computed
        (``empty_denominator``: a re-gating left no denominator events).
    """
    if np.any(gate.lymph <= 0) or gate.base[1] <= 0:
        return "empty_denominator"
    rng = np.random.default_rng([int(settings.random_state), int(seed)])
    m = int(settings.draws)
    r = np.arange(m) % gate.nk.size
    k, n = gate.nk[r].astype(np.float64), gate.lymph[r].astype(np.float64)
    k0, n0 = float(gate.base[0]), float(gate.base[1])
    frac_all = rng.beta(k + 0.5, n - k + 0.5)
    frac_count = rng.beta(np.full(m, k0 + 0.5), np.full(m, n0 - k0 + 0.5))
    chim = _truncated_normal(rng, chimerism_pct, chimerism_sd, m)
    scale = alc_per_ul / 100.0
    donor = scale * frac_all * chim
    alone = {
        "gate": scale * (k / n) * chimerism_pct,
        "counting": scale * frac_count * chimerism_pct,
        "chimerism": scale * (k0 / n0) * chim,
    }
    var = {s: float(np.var(v)) for s, v in alone.items()}
    total = sum(var.values())
    shares: dict[str, float | None] = {s: (var[s] / total if total > 0 else None) for s in SOURCES}
    dominant = max(SOURCES, key=lambda s: var[s]) if total > 0 else None
    lo, med, hi = (float(x) for x in np.quantile(donor, [0.025, 0.5, 0.975]))
    top = float(donor.max())
    bottom = float(donor.min())
    if top <= bottom:
        bottom, top = bottom - 0.5, top + 0.5
    counts, edges = np.histogram(donor, bins=HIST_BINS, range=(bottom, top))
    return Uncertainty(
        p_above=float(np.mean(donor > threshold)),
        lo95=lo,
        hi95=hi,
        median=med,
        variance_frac=shares,
        dominant=dominant,
        unstable=_flip_ranges(gate, alc_per_ul, chimerism_pct, threshold, above),
        histogram={
            "draws": m,
            "bin_edges": [float(f"{x:.6g}") for x in edges],
            "counts": [int(c) for c in counts],
        },
    )
