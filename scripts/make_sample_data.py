#!/usr/bin/env python
"""Generate the synthetic NK-therapy cohort in ``data/sample/`` with known truth.

Contract
--------
``make_sample_data.py [--seed N] [--out DIR]`` writes, deterministically for a given seed
(same seed -> byte-identical files, no timestamps):

- ``fcs/<sample_id>_<tube>.fcs``: one FCS file per tube (``nk`` panel nk_v1, ``treg`` panel
  treg_v1) in one of two instrument styles (BD LSRFortessa: FCS 3.1, little-endian floats,
  ``$SPILLOVER``; Beckman/Cytek-like: FCS 3.0, big-endian floats, ``SPILL``).
- ``samples.tsv``, ``infusions.tsv``, ``cbc.tsv``, ``chimerism.tsv``: the side tables in the
  formats of docs/DEVELOPING.md ("Sheets"); FCS paths are relative to the sheet.
- ``truth/populations.tsv``, ``truth/visits.tsv``, ``truth/endpoints.tsv``,
  ``truth/tubes.tsv`` and ``truth/README.md``: the generator's own labels and the endpoint
  numbers they imply.

Events are simulated per cell type as true fluorescence (log-normal positive levels on top of
autofluorescence), mixed by a spillover matrix (observed = true @ S), plus detector noise
(constant electronic noise and a photon-statistics term proportional to sqrt(signal)). The
spillover matrix is stored in the file, so compensation (observed @ inv(S)) is required.
Population counts are exact integers chosen per tube, so the truth percentages are exact.

This is a developer tool, not part of the package; it prints a one-line summary.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

DEFAULT_SEED = 20260101
RANGE = 262144.0
MAX_VALUE = 262143.0

# ------------------------------------------------------------------------------------------
# Panels (marker order inside the generator) and instrument styles
# ------------------------------------------------------------------------------------------
SCATTER = ("FSC-A", "FSC-H", "SSC-A")
NK_MARKERS = ("CD45", "CD3", "CD56", "CD16", "CD14", "CD19", "Viability")
TREG_MARKERS = ("Viability", "CD3", "CD4", "CD8", "CD25", "CD127", "FoxP3", "Ki-67")
MARKERS = {"nk": NK_MARKERS, "treg": TREG_MARKERS}
PANEL_OF_TUBE = {"nk": "nk_v1", "treg": "treg_v1"}


@dataclass(frozen=True)
class Style:
    """One instrument style: names, FCS version, byte order, spillover keyword."""

    key: str
    cytometer: str
    version: str
    byteorder: str  # '<' little, '>' big
    spill_keyword: str
    timestep: float
    scatter: dict[str, tuple[str, str]]
    time_name: str
    fluor: dict[str, dict[str, tuple[str, str]]]  # tube -> marker -> ($PnN, $PnS)
    extra: dict[str, str] = field(default_factory=dict)


BD = Style(
    key="bd_fortessa",
    cytometer="LSRFortessa",
    version="FCS3.1",
    byteorder="<",
    spill_keyword="$SPILLOVER",
    timestep=0.01,
    scatter={"FSC-A": ("FSC-A", ""), "FSC-H": ("FSC-H", ""), "SSC-A": ("SSC-A", "")},
    time_name="Time",
    fluor={
        "nk": {
            "CD16": ("FITC-A", "CD16"),
            "CD19": ("PerCP-Cy5-5-A", "CD19"),
            "CD56": ("PE-Cy7-A", "CD56"),
            "CD3": ("APC-H7-A", "CD3"),
            "CD14": ("BV605-A", "CD14"),
            "CD45": ("BV510-A", "CD45"),
            "Viability": ("BV421-A", "Viability"),
        },
        "treg": {
            "FoxP3": ("PE-A", "FoxP3"),
            "CD25": ("BB515-A", "CD25"),
            "CD127": ("PE-Cy7-A", "CD127"),
            "Ki-67": ("AF647-A", "Ki-67"),
            "CD3": ("APC-H7-A", "CD3"),
            "CD4": ("BV605-A", "CD4"),
            "CD8": ("BV510-A", "CD8"),
            "Viability": ("BV421-A", "LIVE DEAD"),
        },
    },
    extra={"$CYTSN": "H64710000", "$SRC": "NKFLOW-SYNTHETIC", "CREATOR": "BD FACSDiva 9.0"},
)

BECKMAN = Style(
    key="beckman_cytek",
    cytometer="CytoFLEX LX",
    version="FCS3.0",
    byteorder=">",
    spill_keyword="SPILL",
    timestep=0.1,
    scatter={"FSC-A": ("FS INT", ""), "FSC-H": ("FS PEAK", ""), "SSC-A": ("SS INT", "")},
    time_name="TIME",
    fluor={
        "nk": {
            "CD16": ("FL1-A", "CD16 FITC"),
            "CD56": ("FL2-A", "CD56 PE"),
            "CD19": ("FL3-A", "CD19 ECD"),
            "CD14": ("FL4-A", "CD14 PC5.5"),
            "CD3": ("FL5-A", "BV785 - CD3"),
            "CD45": ("FL6-A", "CD45 KrO"),
            "Viability": ("FL7-A", "7-AAD"),
        },
        "treg": {
            "CD25": ("FL1-A", "CD25 FITC"),
            "FoxP3": ("FL2-A", "FoxP3 PE"),
            "CD127": ("FL3-A", "CD127 PC7"),
            "Ki-67": ("FL4-A", "Ki-67 AF647"),
            "CD3": ("FL5-A", "BV785 - CD3"),
            "CD4": ("FL6-A", "CD4 BV605"),
            "CD8": ("FL7-A", "CD8 BV510"),
            "Viability": ("FL8-A", "Zombie NIR"),
        },
    },
    extra={"$CYTSN": "AX00123", "$SRC": "NKFLOW-SYNTHETIC", "CREATOR": "CytExpert 2.4"},
)
STYLES = {s.key: s for s in (BD, BECKMAN)}


# ------------------------------------------------------------------------------------------
# Cell types: scatter and true fluorescence
# ------------------------------------------------------------------------------------------
# Positive levels are log10 medians with a log10 sd; 'neg' means autofluorescence only.
Level = tuple[float, float]
NEG: Level = (-1.0, 0.0)

LYMPH_SCATTER = {"fsc": (62000.0, 7000.0), "ssc": (16000.0, 0.2)}
CELL_SCATTER = {
    "lymph": LYMPH_SCATTER,
    "mono": {"fsc": (98000.0, 11000.0), "ssc": (58000.0, 0.18)},
    "gran": {"fsc": (118000.0, 12000.0), "ssc": (140000.0, 0.15)},
    "dead": {"fsc": (40000.0, 8000.0), "ssc": (21000.0, 0.25)},
}
AUTOFLUOR = {"lymph": 120.0, "mono": 350.0, "gran": 600.0, "dead": 200.0, "debris": 80.0}

# Phenotypes per tube: cell type -> (scatter class, {marker: level}); missing markers = NEG.
NK_PHENO: dict[str, tuple[str, dict[str, Level]]] = {
    "t": ("lymph", {"CD45": (4.3, 0.12), "CD3": (4.0, 0.2)}),
    "nkt_like": ("lymph", {"CD45": (4.3, 0.12), "CD3": (3.9, 0.2), "CD56": (3.35, 0.25)}),
    "b": ("lymph", {"CD45": (4.2, 0.12), "CD19": (3.8, 0.18)}),
    "nk_cd56bright": ("lymph", {"CD45": (4.3, 0.12), "CD56": (4.15, 0.2), "CD16": (2.4, 0.35)}),
    "nk_cd56dim": ("lymph", {"CD45": (4.25, 0.12), "CD56": (3.3, 0.18), "CD16": (4.0, 0.25)}),
    "mono": ("mono", {"CD45": (4.0, 0.12), "CD14": (4.2, 0.2), "CD16": (2.9, 0.3)}),
    "gran": ("gran", {"CD45": (3.6, 0.12), "CD16": (4.3, 0.2), "CD14": (2.7, 0.2)}),
    # the clog burst: lymphocyte-sized, live, CD3- and CD56-dim-like: lands in the NK gate
    "junk": ("lymph", {"CD45": (3.5, 0.3), "CD56": (3.4, 0.25), "CD16": (3.0, 0.5)}),
}
TREG_PHENO: dict[str, tuple[str, dict[str, Level]]] = {
    "cd4_conv": (
        "lymph",
        {"CD3": (4.0, 0.15), "CD4": (3.8, 0.15), "CD127": (3.4, 0.22), "CD25": (2.5, 0.35)},
    ),
    "cd4_act": (
        "lymph",
        {"CD3": (4.0, 0.15), "CD4": (3.75, 0.15), "CD127": (3.0, 0.2), "CD25": (3.35, 0.15)},
    ),
    "treg": (
        "lymph",
        {"CD3": (3.95, 0.15), "CD4": (3.7, 0.15), "CD25": (3.8, 0.18), "FoxP3": (3.6, 0.2)},
    ),
    "cd8": ("lymph", {"CD3": (4.05, 0.15), "CD8": (4.1, 0.15), "CD127": (3.3, 0.3)}),
    "dn_t": ("lymph", {"CD3": (4.0, 0.15)}),
    "b": ("lymph", {"CD25": (2.4, 0.3)}),
    "nk": ("lymph", {}),
    "mono": ("mono", {"CD4": (3.1, 0.15)}),
    "gran": ("gran", {}),
}
KI67: Level = (3.8, 0.15)
VIAB_DEAD: Level = (4.25, 0.2)

# Event mix of a tube (fractions of all events, before lymphocyte subsets)
MIX = {"debris": 0.07, "doublets": 0.04, "dead": 0.05, "gran": 0.25, "mono": 0.07}


def _level(rng: np.random.Generator, n: int, level: Level) -> np.ndarray:
    mu, sd = level
    return 10.0 ** rng.normal(mu, sd, n)


def _autofluor(rng: np.random.Generator, n: int, median: float) -> np.ndarray:
    return median * np.exp(rng.normal(0.0, 0.35, n))


def _scatter(rng: np.random.Generator, n: int, cls: str) -> np.ndarray:
    par = CELL_SCATTER[cls]
    fsc_a = rng.normal(*par["fsc"], n)
    fsc_h = fsc_a * rng.normal(0.82, 0.025, n)
    ssc_a = par["ssc"][0] * np.exp(rng.normal(0.0, par["ssc"][1], n))
    return np.column_stack([fsc_a, fsc_h, ssc_a])


def _cells(
    rng: np.random.Generator,
    n: int,
    pheno: tuple[str, dict[str, Level]],
    markers: tuple[str, ...],
    af_class: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scatter (n, 3) and true fluorescence (n, len(markers)) for one cell type."""
    cls, levels = pheno
    sc = _scatter(rng, n, cls)
    fl = np.empty((n, len(markers)))
    for j, m in enumerate(markers):
        fl[:, j] = _autofluor(rng, n, AUTOFLUOR[af_class or cls])
        lev = levels.get(m, NEG)
        if lev is not NEG:
            fl[:, j] += _level(rng, n, lev)
    return sc, fl


def _debris(rng: np.random.Generator, n: int, markers: tuple[str, ...]) -> tuple:
    fsc_a = 2000.0 + rng.exponential(6000.0, n)
    fsc_h = fsc_a * rng.normal(0.8, 0.06, n)
    ssc_a = 5000.0 * np.exp(rng.normal(0.0, 0.6, n))
    fl = np.column_stack([_autofluor(rng, n, AUTOFLUOR["debris"]) for _ in markers])
    vi = markers.index("Viability")
    dead = rng.random(n) < 0.6
    fl[dead, vi] += _level(rng, int(dead.sum()), (3.6, 0.4))
    return np.column_stack([fsc_a, fsc_h, ssc_a]), fl


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Visit:
    """One visit (= one sample with an nk and a treg tube)."""

    day: int
    nk_pct: float  # true NK % of live singlet lymphocytes
    bright_frac: float  # CD56bright fraction of NK
    treg_pct_cd4: float
    alc: str  # value as written in cbc.tsv
    chimerism: dict[str, float]  # fraction -> donor_pct
    n_nk: int = 2400
    n_treg: int = 2400
    junk: int = 0  # clog burst events in the nk tube


@dataclass(frozen=True)
class Patient:
    """One patient scenario."""

    pid: str
    style: str
    first_infusion: date
    infusion_days: tuple[int, ...]
    weight_kg: float
    nk_donor: str
    hsct_donor: str
    alc_unit: str
    visits: tuple[Visit, ...]
    scenario: str


PREFERRED_FRACTIONS = ("CD56", "PB")  # the truth assumes the config prefers CD56, then PB
WINDOW = (12, 16)  # day 14 +/- 2


def _cohort() -> tuple[Patient, ...]:
    """The scenario table (see truth/README.md for the story of each patient)."""
    v = Visit
    return (
        Patient(
            "P01",
            "bd_fortessa",
            date(2025, 3, 3),
            (0, 2, 4),
            72.0,
            "D01N",
            "D01H",
            "10^3/uL",
            (
                v(0, 11.0, 0.55, 8.0, "0.45", {}),
                v(7, 14.0, 0.65, 3.5, "0.95", {"PB": 71.0, "CD56": 93.0}, n_treg=5000),
                v(14, 27.0, 0.40, 4.5, "1.80", {"PB": 88.0, "CD56": 98.0}, n_nk=5000),
                v(28, 19.0, 0.25, 5.5, "1.60", {"PB": 84.0, "CD56": 96.0}),
            ),
            "clear PASS (expander); day-7 Treg 3.5 % of CD4; 3 infusions",
        ),
        Patient(
            "P02",
            "beckman_cytek",
            date(2025, 3, 10),
            (0,),
            81.5,
            "D02N",
            "D02H",
            "10^9/L",
            (
                v(0, 9.0, 0.60, 9.0, "0.38", {}),
                v(7, 6.0, 0.60, 9.5, "0.52", {"PB": 52.0}, n_treg=5000),
                v(14, 8.0, 0.50, 10.0, "0.60", {"PB": 85.0}, n_nk=5000),
                v(28, 6.5, 0.30, 9.0, "0.70", {"PB": 60.0}),
            ),
            "clear FAIL (~41 donor NK/uL)",
        ),
        Patient(
            "P03",
            "bd_fortessa",
            date(2025, 3, 17),
            (0, 7),
            64.0,
            "D03N",
            "D03H",
            "cells/uL",
            (
                v(0, 12.0, 0.50, 7.0, "420", {}),
                v(7, 15.0, 0.60, 4.0, "880", {"PB": 74.0}, n_treg=5000),
                v(14, 20.0, 0.45, 5.0, "QNS", {"PB": 90.0}, n_nk=5000),
                v(28, 16.0, 0.30, 6.0, "1150", {"PB": 81.0}),
            ),
            "NOT_EVALUABLE: day-14 ALC reported as QNS (quantity not sufficient)",
        ),
        Patient(
            "P04",
            "beckman_cytek",
            date(2025, 3, 24),
            (0,),
            77.0,
            "D04N",
            "D04H",
            "10^3/uL",
            (
                v(0, 10.5, 0.55, 8.5, "0.50", {}),
                v(7, 9.0, 0.60, 6.5, "0.70", {"PB": 60.0}, n_treg=5000),
                v(17, 12.0, 0.45, 6.0, "0.90", {"PB": 72.0}, n_nk=5000),
                v(28, 10.0, 0.30, 6.5, "1.00", {"PB": 70.0}),
            ),
            "NOT_EVALUABLE: no sample in the day-14 window (visit drawn on day 17)",
        ),
        Patient(
            "P05",
            "bd_fortessa",
            date(2025, 4, 7),
            (0, 2),
            58.0,
            "D05N",
            "D05H",
            "cells/uL",
            (
                v(0, 9.5, 0.50, 7.5, "510", {}),
                v(7, 6.5, 0.60, 6.0, "1210", {"PB": 90.0}, n_treg=5000),
                v(14, 7.3, 0.45, 6.5, "1500", {"PB": 97.0}, n_nk=5000),
                v(28, 6.0, 0.35, 7.0, "1450", {"PB": 95.0}),
            ),
            "borderline PASS: ~106 donor NK/uL, few NK events, 95 % interval contains 100",
        ),
        Patient(
            "P06",
            "beckman_cytek",
            date(2025, 4, 14),
            (0, 7),
            69.0,
            "D06N",
            "D06H",
            "10^9/L",
            (
                v(0, 13.0, 0.60, 8.0, "0.41", {}),
                v(7, 12.0, 0.70, 4.5, "0.55", {"PB": 40.0, "CD56": 88.0}, n_treg=5000),
                v(13, 20.0, 0.50, 5.0, "0.70", {"PB": 55.0, "CD56": 92.0}, n_nk=5000),
                v(28, 15.0, 0.35, 5.5, "0.80", {"PB": 50.0, "CD56": 90.0}),
            ),
            "off-day day-14 sample (day 13) with PB and CD56 chimerism: PASS with CD56, "
            "FAIL with PB",
        ),
        Patient(
            "P07",
            "bd_fortessa",
            date(2025, 4, 22),
            (0, 7),
            88.0,
            "D07",
            "D07",
            "10^9/L",
            (
                v(0, 12.5, 0.50, 7.0, "0.60", {}),
                v(7, 16.0, 0.60, 4.8, "0.90", {"PB": 97.0}, n_treg=5000),
                v(14, 24.0, 0.40, 5.0, "1.10", {"PB": 96.0}, n_nk=5000),
                v(28, 18.0, 0.30, 5.5, "1.20", {"PB": 97.0}),
            ),
            "NK donor is the HSCT donor: PASS, flagged (STR cannot separate infused NK cells)",
        ),
        Patient(
            "P08",
            "beckman_cytek",
            date(2025, 5, 5),
            (0,),
            75.0,
            "D08N",
            "D08H",
            "cells/uL",
            (
                v(0, 10.0, 0.55, 8.0, "480", {}),
                v(7, 6.0, 0.60, 7.0, "900", {"PB": 80.0}, n_treg=5000),
                v(14, 7.0, 0.45, 7.5, "1200", {"PB": 90.0}, n_nk=5000, junk=180),
                v(28, 6.5, 0.35, 7.0, "1250", {"PB": 88.0}),
            ),
            "flow-rate anomaly on the day-14 nk tube: clog then a junk burst; truth FAIL, "
            "PASS if the burst is not removed",
        ),
    )


ALC_FACTOR = {"cells/uL": 1.0, "10^3/uL": 1000.0, "10^9/L": 1000.0}


def alc_per_ul(value: str, unit: str) -> float | None:
    """ALC in cells/uL from a cbc.tsv value and unit; None when not numeric (e.g. QNS)."""
    try:
        return float(value) * ALC_FACTOR[unit]
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------
# Spillover
# ------------------------------------------------------------------------------------------
def spillover(style: Style, tube: str) -> tuple[list[str], np.ndarray]:
    """Detector names ($PnN, file order) and the spillover matrix S (rows = dyes)."""
    names = [pnn for pnn, _ in style.fluor[tube].values()]
    k = len(names)
    s = np.eye(k)
    # Fixed, instrument-specific pattern: neighbours in detector order spill the most.
    base = {"bd_fortessa": (0.22, 0.08, 0.03), "beckman_cytek": (0.28, 0.1, 0.04)}[style.key]
    for i in range(k):
        for j in range(k):
            d = j - i
            if d == 1:
                s[i, j] = base[0] * (1.0 + 0.15 * (i % 3))
            elif d == -1:
                s[i, j] = base[1] * (1.0 + 0.2 * (j % 2))
            elif abs(d) == 2:
                s[i, j] = base[2]
    return names, np.round(s, 4)


def spill_text(names: list[str], s: np.ndarray) -> str:
    vals = ",".join(f"{x:.4f}".rstrip("0").rstrip(".") if x != 0 else "0" for x in s.ravel())
    return f"{len(names)},{','.join(names)},{vals}"


# ------------------------------------------------------------------------------------------
# One tube
# ------------------------------------------------------------------------------------------
@dataclass
class TubeResult:
    """Events (file channel order), channel names and truth of one tube."""

    events: np.ndarray
    pnn: list[str]
    pns: list[str]
    truth: dict[str, int]
    n_junk: int
    gap: tuple[float, float] | None
    burst: tuple[float, float] | None
    duration_s: float


def _counts(n: int, fracs: dict[str, float]) -> dict[str, int]:
    """Exact integer counts summing to n (largest remainder)."""
    raw = {k: n * f for k, f in fracs.items()}
    out = {k: int(math.floor(x)) for k, x in raw.items()}
    rest = n - sum(out.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - out[k]), k))[:rest]:
        out[k] += 1
    return out


def make_tube(rng: np.random.Generator, style: Style, tube: str, visit: Visit) -> TubeResult:
    """Simulate one tube; returns events in file channel order and the truth counts."""
    markers = MARKERS[tube]
    pheno = NK_PHENO if tube == "nk" else TREG_PHENO
    n = visit.n_nk if tube == "nk" else visit.n_treg
    lymph_frac = 1.0 - sum(MIX.values())
    top = _counts(n, {**MIX, "lymph": lymph_frac})
    n_l = top["lymph"]
    if tube == "nk":
        nk = visit.nk_pct / 100.0
        sub = _counts(
            n_l,
            {
                "nk_cd56bright": nk * visit.bright_frac,
                "nk_cd56dim": nk * (1 - visit.bright_frac),
                "b": 0.08,
                "nkt_like": 0.04,
                "t": 1.0 - nk - 0.12,
            },
        )
    else:
        nk_frac = visit.nk_pct / 100.0
        cd4 = 0.55 * (1.0 - nk_frac - 0.08)
        tr = visit.treg_pct_cd4 / 100.0
        sub = _counts(
            n_l,
            {
                "treg": cd4 * tr,
                "cd4_act": cd4 * 0.03,
                "cd4_conv": cd4 * (1 - tr - 0.03),
                "cd8": (1.0 - nk_frac - 0.08) * 0.40,
                "dn_t": (1.0 - nk_frac - 0.08) * 0.05,
                "b": 0.08,
                "nk": nk_frac,
            },
        )
    blocks_sc, blocks_fl, labels = [], [], []

    def add(label: str, sc: np.ndarray, fl: np.ndarray) -> None:
        blocks_sc.append(sc)
        blocks_fl.append(fl)
        labels.extend([label] * len(sc))

    vi = markers.index("Viability")
    for name in sorted(sub):
        sc, fl = _cells(rng, sub[name], pheno[name], markers)
        if tube == "treg" and name == "treg":
            k = int(round(sub[name] * 0.30))
            fl[:k, markers.index("Ki-67")] += _level(rng, k, KI67)
            labels_ki = ["treg_ki67"] * k + ["treg"] * (sub[name] - k)
            blocks_sc.append(sc)
            blocks_fl.append(fl)
            labels.extend(labels_ki)
            continue
        if tube == "treg" and name in ("cd4_conv", "cd8"):
            k = int(round(sub[name] * 0.05))
            fl[:k, markers.index("Ki-67")] += _level(rng, k, KI67)
        add(name, sc, fl)
    for name in ("mono", "gran"):
        sc, fl = _cells(rng, top[name], pheno[name], markers)
        add(name, sc, fl)
    # dead cells: lymphocyte phenotypes with dimmer staining, shrunken, viability bright
    lymph_types = sorted(sub)
    picks = rng.choice(len(lymph_types), top["dead"])
    for j, name in enumerate(lymph_types):
        m = int((picks == j).sum())
        if m == 0:
            continue
        cls, levels = pheno[name]
        dim = {k: (mu - 0.3, sd) for k, (mu, sd) in levels.items()}
        sc, fl = _cells(rng, m, ("dead", dim), markers)
        fl[:, vi] += _level(rng, m, VIAB_DEAD)
        add("dead", sc, fl)
    sc, fl = _debris(rng, top["debris"], markers)
    add("debris", sc, fl)
    # doublets: two singlet events summed; FSC-H grows less than FSC-A
    nd = top["doublets"]
    pool_sc = np.vstack(blocks_sc)
    pool_fl = np.vstack(blocks_fl)
    lab = np.array(labels)
    ok = np.flatnonzero(np.isin(lab, ["debris", "dead"], invert=True))
    a = rng.choice(ok, nd)
    b = rng.choice(ok, nd)
    dsc = pool_sc[a] + pool_sc[b]
    dsc[:, 1] = np.maximum(pool_sc[a, 1], pool_sc[b, 1]) * rng.normal(1.12, 0.05, nd)
    add("doublet", dsc, pool_fl[a] + pool_fl[b])
    # clog burst junk (nk tube only)
    if visit.junk and tube == "nk":
        sc, fl = _cells(rng, visit.junk, pheno["junk"], markers)
        add("junk", sc, fl)
    scat = np.vstack(blocks_sc)
    true_fl = np.vstack(blocks_fl)
    lab = np.array(labels)
    total = len(lab)

    # acquisition time: Poisson arrivals at a constant rate, one clog gap, one burst
    duration = 60.0
    is_junk = lab == "junk"
    n_reg = int((~is_junk).sum())
    gap = burst = None
    t = np.empty(total)
    if visit.junk and tube == "nk":
        gap = (31.0, 39.0)
        burst = (39.0, 39.4)
        live_span = duration - (gap[1] - gap[0])
        u = rng.random(n_reg) * live_span
        t_reg = np.where(u < gap[0], u, u + (gap[1] - gap[0]))
        t[~is_junk] = t_reg
        t[is_junk] = burst[0] + rng.random(int(is_junk.sum())) * (burst[1] - burst[0])
    else:
        t[~is_junk] = rng.random(n_reg) * duration
    order = np.argsort(t, kind="stable")

    # mix into detectors, add noise
    fl_map = style.fluor[tube]
    det_names, s = spillover(style, tube)
    det_index = {pnn: i for i, pnn in enumerate(det_names)}
    true_det_order = np.column_stack(
        [true_fl[:, markers.index(m)] for m in fl_map]  # dye order == detector order
    )
    observed = true_det_order @ s
    observed += rng.normal(0.0, 35.0, observed.shape)
    observed += rng.normal(0.0, 1.0, observed.shape) * np.sqrt(np.abs(observed)) * 2.6
    scat_obs = scat * rng.normal(1.0, 0.01, scat.shape)
    assert len(det_index) == observed.shape[1]

    pnn = [style.scatter[m][0] for m in SCATTER] + det_names + [style.time_name]
    pns = [style.scatter[m][1] for m in SCATTER] + [p for _, p in fl_map.values()] + [""]
    time_units = np.floor(t / style.timestep)
    ev = np.column_stack([scat_obs, observed, time_units])[order]
    ev[:, :-1] = np.clip(ev[:, :-1], -5000.0, MAX_VALUE)
    ev[:, :3] = np.clip(ev[:, :3], 0.0, MAX_VALUE)
    ev = np.round(ev, 1).astype(np.float32)

    lab_o = lab[order]
    truth = _truth_counts(tube, lab_o)
    return TubeResult(ev, pnn, pns, truth, int(is_junk.sum()), gap, burst, duration)


NK_TRUTH_LYMPH = ("t", "nkt_like", "b", "nk_cd56bright", "nk_cd56dim")
TREG_TRUTH_LYMPH = ("cd4_conv", "cd4_act", "treg", "treg_ki67", "cd8", "dn_t", "b", "nk")


def _truth_counts(tube: str, lab: np.ndarray) -> dict[str, int]:
    def c(*names: str) -> int:
        return int(np.isin(lab, list(names)).sum())

    singlets = c(*set(lab.tolist()) - {"doublet", "junk"})
    if tube == "nk":
        lym = c(*NK_TRUTH_LYMPH)
        return {
            "events_in_file": len(lab),
            "junk": c("junk"),
            "singlets": singlets,
            "lymphocytes": lym,
            "live": lym,
            "nk": c("nk_cd56bright", "nk_cd56dim"),
            "nk_cd56bright": c("nk_cd56bright"),
            "nk_cd56dim": c("nk_cd56dim"),
            "nkt_like": c("nkt_like"),
            "cd3": c("t", "nkt_like"),
        }
    lym = c(*TREG_TRUTH_LYMPH)
    return {
        "events_in_file": len(lab),
        "junk": c("junk"),
        "singlets": singlets,
        "lymphocytes": lym,
        "live": lym,
        "cd3": c("cd4_conv", "cd4_act", "treg", "treg_ki67", "cd8", "dn_t"),
        "cd4": c("cd4_conv", "cd4_act", "treg", "treg_ki67"),
        "treg": c("treg", "treg_ki67"),
        "treg_ki67": c("treg_ki67"),
    }


# ------------------------------------------------------------------------------------------
# FCS writer (FCS 3.0 / 3.1, float32, either byte order)
# ------------------------------------------------------------------------------------------
def write_fcs(
    path: Path,
    events: np.ndarray,
    pnn: list[str],
    pns: list[str],
    keywords: dict[str, str],
    version: str,
    byteorder: str,
) -> None:
    """Write a list-mode FCS file with ``$DATATYPE F``; deterministic bytes."""
    n, p = events.shape
    delim = "/"
    kw: dict[str, str] = {
        "$BEGINANALYSIS": "0",
        "$ENDANALYSIS": "0",
        "$BEGINSTEXT": "0",
        "$ENDSTEXT": "0",
        "$BEGINDATA": "",
        "$ENDDATA": "",
        "$BYTEORD": "1,2,3,4" if byteorder == "<" else "4,3,2,1",
        "$DATATYPE": "F",
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(p),
        "$TOT": str(n),
    }
    for i in range(p):
        k = i + 1
        kw[f"$P{k}N"] = pnn[i]
        if pns[i].strip():
            kw[f"$P{k}S"] = pns[i]
        kw[f"$P{k}B"] = "32"
        kw[f"$P{k}E"] = "0,0"
        kw[f"$P{k}R"] = "262144"
        kw[f"$P{k}G"] = "1"
    kw.update(keywords)
    data = events.astype(byteorder + "f4").tobytes()
    text_start = 58

    def build() -> bytes:
        body = delim
        for key, val in kw.items():
            body += key.replace(delim, delim * 2) + delim + val.replace(delim, delim * 2) + delim
        return body.encode("ascii")

    begin = 0
    for _ in range(10):
        kw["$BEGINDATA"] = str(begin)
        kw["$ENDDATA"] = str(begin + len(data) - 1)
        text = build()
        new_begin = text_start + len(text)
        if new_begin == begin:
            break
        begin = new_begin
    header = version.encode("ascii") + b"    "
    for x in (text_start, begin - 1, begin, begin + len(data) - 1, 0, 0):
        header += f"{x:>8}".encode("ascii")
    assert len(header) == text_start
    path.write_bytes(header + text + data + b"00000000")


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def write_table(path: Path, header: list[str], rows: list[list[object]]) -> None:
    lines = ["\t".join(header)]
    for r in rows:
        lines.append("\t".join("" if v is None else str(v) for v in r))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def poisson_interval(value: float, n_num: int, n_den: int) -> tuple[float, float]:
    """Approximate 95 % interval of value = k * n_num / n_den (log-ratio of two Poisson counts)."""
    if n_num == 0:
        return 0.0, float("nan")
    se = math.sqrt(1.0 / n_num + 1.0 / n_den)
    return value * math.exp(-1.96 * se), value * math.exp(1.96 * se)


def used_of(visit: Visit) -> str:
    """The chimerism fraction the truth uses for a visit (config preference order)."""
    return next(f for f in PREFERRED_FRACTIONS if f in visit.chimerism)


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def readme(cohort: tuple[Patient, ...], notes: dict, seed: int) -> str:
    """truth/README.md: every scenario with the numbers the truth tables imply."""
    n = notes
    p05, p06, p08 = n.get("P05", {}), n.get("P06", {}), n.get("P08", {})
    lines = [
        "# Truth of the synthetic sample cohort",
        "",
        f"Generated by `scripts/make_sample_data.py --seed {seed}` (the committed seed is the",
        "default). Re-running it gives byte-identical files; nothing here carries a timestamp.",
        "Check gate trees against this truth with `scripts/check_sample_truth.py`.",
        "",
        "## Files",
        "",
        "- `populations.tsv`: `sample_id, tube, population, events` from the generator's own event",
        "  labels. `events_in_file` = events in the FCS file; `junk` = clog-burst events a time QC",
        "  must remove (all other rows exclude them); `singlets` = all events except doublets and",
        "  junk; `lymphocytes` = `live` = live singlet lymphocytes (T + B + NK; dead cells,",
        "  monocytes, granulocytes, debris, doublets, junk excluded). A lymphocyte scatter gate",
        "  also catches dead lymphocytes, so compare gated percentages with the `live` gate as",
        "  denominator. `nk` = CD3-CD56+ NK (= `nk_cd56bright` + `nk_cd56dim`); `nkt_like` =",
        "  CD3+CD56+; `cd3` = all T cells incl. NKT-like; treg tube: `cd3`, `cd4`, `treg`",
        "  (CD4+ CD25hi CD127lo FoxP3+), `treg_ki67` (Ki-67+ of those).",
        "- `visits.tsv`: per sample, true `nk_pct_of_lymphocytes` (= nk / live x 100), the NK and",
        "  lymphocyte event counts, ALC (cells/uL and as written in cbc.tsv), the chimerism",
        "  fraction used, `donor_chimerism_pct`, `donor_nk_per_ul`, `treg_pct_of_cd4`,",
        "  `ki67_pct_of_treg`. Empty = not available (no chimerism at day 0, QNS ALC).",
        "- `endpoints.tsv`: per patient, the day-14 sample (window day 12-16 after the first NK",
        "  infusion), `donor_nk_per_ul` with a 95 % interval, `verdict` (PASS when strictly > 100),",
        "  `borderline` (interval contains 100), `reason` codes (`above_threshold` /\n  `not_above_threshold` [+ `interval_contains_threshold`], or why NOT_EVALUABLE), `flags`.",
        "  Interval: donor x exp(+/-1.96 sqrt(1/n_nk + 1/n_lymphocytes)) (log ratio of two",
        "  Poisson counts); only the borderline patient's interval comes near 100.",
        "- `tubes.tsv`: per tube, instrument style, FCS version, spillover keyword, `$TIMESTEP`,",
        "  event count, junk count, and the clog gap / burst windows in seconds.",
        "",
        "Chimerism: the truth uses CD56-sorted chimerism when the patient has it, else PB",
        "(configure `endpoints.chimerism_preference` as CD56 then PB to match).",
        "ALC: `cells/uL` x 1, `10^3/uL` x 1000, `10^9/L` x 1000.",
        "",
        "## Instrument styles",
        "",
        "| style | patients | file | names | spillover |",
        "|---|---|---|---|---|",
        "| `bd_fortessa` | "
        + ", ".join(p.pid for p in cohort if p.style == "bd_fortessa")
        + " | FCS 3.1, float32 little-endian, `$CYT` LSRFortessa, `$TIMESTEP` 0.01 | `$PnN` "
        "`FSC-A`, `PE-Cy7-A`, `BV421-A`...; marker in `$PnS` (`CD56`, `LIVE DEAD`) | "
        "`$SPILLOVER` |",
        "| `beckman_cytek` | "
        + ", ".join(p.pid for p in cohort if p.style == "beckman_cytek")
        + " | FCS 3.0, float32 big-endian, `$CYT` CytoFLEX LX, `$TIMESTEP` 0.1 | `$PnN` "
        "`FS INT`, `FS PEAK`, `SS INT`, `FL1-A`..., `TIME`; `$PnS` `CD56 PE`, `BV785 - CD3`, "
        "`7-AAD`, `Zombie NIR` | `SPILL` |",
        "",
        "Fluorescence is simulated as true intensities (log-normal positive levels plus",
        "autofluorescence), mixed by the file's spillover matrix (observed = true @ S) with",
        "electronic and photon noise: compensate with observed @ inv(S). Scatter is linear,",
        "values are on an 18-bit scale (0-262143).",
        "",
        "Events per tube: 2,400 (nk) and 2,400 (treg), except the day-14 nk tubes (5,000) and the",
        "day-7 treg tubes (5,000), where the endpoint and the day-7 Treg read-out are taken.",
        "Populations per tube: debris 7 %, doublets 4 %, dead cells 5 %, granulocytes 25 %,",
        "monocytes 7 %, live lymphocytes 52 %; CD56bright fraction of NK falls from 50-70 % at",
        "day 7 to 25-35 % at day 28.",
        "",
        "## Scenarios",
        "",
        "| patient | infusions (study day) | NK donor / HSCT donor | scenario |",
        "|---|---|---|---|",
    ]
    for p in cohort:
        days = ", ".join(str(d) for d in p.infusion_days)
        lines.append(f"| {p.pid} | {days} | {p.nk_donor} / {p.hsct_donor} | {p.scenario} |")
    lines += [
        "",
        "Details:",
        "",
        f"- P05 (borderline): {p05.get('nk')} NK of {p05.get('live')} lymphocyte events,",
        f"  donor NK/uL {_fmt(p05.get('donor'))}, 95 % interval {_fmt(p05.get('lo'))}-"
        f"{_fmt(p05.get('hi'))}: PASS, borderline.",
        f"- P06 (day 13, off-day but inside the window): {_fmt(p06.get('donor'))} donor NK/uL with",
        f"  CD56 chimerism (PASS); {_fmt(p06.get('donor_pb'))} with PB chimerism (FAIL). The",
        "  report must name the fraction used and the actual day (13).",
        f"- P08 (flow anomaly, `{p08.get('sid')}` nk tube): acquisition runs 60 s with no event",
        "  between 31 s and 39 s (clog), then a burst of "
        f"{p08.get('junk')} junk events between 39.0 s and 39.4 s",
        "  (on top of the normal ~96 events/s). The junk has lymphocyte scatter, is live and",
        "  CD3- CD56-dim, so it lands in the NK gate. After removing it: NK "
        f"{_fmt(100.0 * int(p08.get('nk', 0)) / max(int(p08.get('live', 1)), 1))} % of",
        f"  lymphocytes, {_fmt(p08.get('donor'))} donor NK/uL = FAIL (the truth). Without time QC:",
        f"  NK {_fmt(p08.get('pct_with_junk'))} %, {_fmt(p08.get('donor_with_junk'))} donor NK/uL"
        " = PASS (wrong).",
        "- P03: the day-14 CBC row says `QNS`: missing ALC, NOT_EVALUABLE (`missing_alc`),",
        "  never 0. P04: visits on days 0, 7, 17, 28, none within 12-16: NOT_EVALUABLE",
        "  (`no_sample_in_window`), not FAIL.",
        "- P07: `nk_donor_id` equals `hsct_donor_id` (D07): STR cannot separate infused NK cells",
        "  from graft-derived ones; flagged `nk_donor_is_hsct_donor`, verdict unchanged (PASS).",
        "- Day-7 Treg < 5 % of CD4 in the expanders P01 (3.5 %), P03, P06 and P07; the clear FAIL",
        "  P02 has ~9.5 %. Ki-67+ is ~30 % of Treg throughout.",
        "",
    ]
    return "\n".join(lines)


def generate(out: Path, seed: int = DEFAULT_SEED) -> dict[str, str]:
    """Write the whole cohort under ``out``; return {relative path: sha256}."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "fcs").mkdir(exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    cohort = _cohort()
    samples, infusions, cbc, chim = [], [], [], []
    pops, visits_rows, endpoint_rows, tubes_rows = [], [], [], []
    notes: dict[str, dict[str, float | int | str]] = {}
    for pi, pat in enumerate(cohort):
        style = STYLES[pat.style]
        for k, d in enumerate(pat.infusion_days, start=1):
            infusions.append(
                [
                    pat.pid,
                    k,
                    (pat.first_infusion + timedelta(days=d)).isoformat(),
                    f"{int(pat.weight_kg * 3e6):d}",
                    f"{pat.weight_kg:g}",
                    pat.nk_donor,
                    pat.hsct_donor,
                ]
            )
        day14 = None
        for vi, visit in enumerate(pat.visits):
            sid = f"{pat.pid}-D{visit.day:02d}"
            when = pat.first_infusion + timedelta(days=visit.day)
            cbc.append([pat.pid, when.isoformat(), visit.alc, pat.alc_unit])
            for frac in ("PB", "CD56"):
                if frac in visit.chimerism:
                    chim.append([pat.pid, when.isoformat(), frac, f"{visit.chimerism[frac]:g}"])
            nk_truth: dict[str, int] = {}
            for tube in ("nk", "treg"):
                rng = np.random.default_rng([seed, pi, vi, 0 if tube == "nk" else 1])
                res = make_tube(rng, style, tube, visit)
                fname = f"fcs/{sid}_{tube}.fcs"
                names, s = spillover(style, tube)
                t0 = 9 * 3600 + 5 * 60 * vi + (0 if tube == "nk" else 120)
                t1 = t0 + int(res.duration_s)
                kw = {
                    "$CYT": style.cytometer,
                    "$DATE": f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year}",
                    "$BTIM": f"{t0 // 3600:02d}:{t0 // 60 % 60:02d}:{t0 % 60:02d}",
                    "$ETIM": f"{t1 // 3600:02d}:{t1 // 60 % 60:02d}:{t1 % 60:02d}",
                    "$TIMESTEP": f"{style.timestep:g}",
                    "$FIL": f"{sid}_{tube}.fcs",
                    "$SMNO": sid,
                    "TUBE NAME": tube.upper(),
                    style.spill_keyword: spill_text(names, s),
                    **style.extra,
                }
                write_fcs(
                    out / fname, res.events, res.pnn, res.pns, kw, style.version, style.byteorder
                )
                samples.append(
                    [
                        sid,
                        pat.pid,
                        when.isoformat(),
                        tube,
                        PANEL_OF_TUBE[tube],
                        PANEL_OF_TUBE[tube],
                        fname,
                    ]
                )
                for popname, cnt in res.truth.items():
                    pops.append([sid, tube, popname, cnt])
                tubes_rows.append(
                    [
                        sid,
                        tube,
                        fname,
                        style.key,
                        style.cytometer,
                        style.version,
                        style.spill_keyword,
                        f"{style.timestep:g}",
                        len(res.events),
                        res.n_junk,
                        _fmt(res.gap[0]) if res.gap else "",
                        _fmt(res.gap[1]) if res.gap else "",
                        _fmt(res.burst[0]) if res.burst else "",
                        _fmt(res.burst[1]) if res.burst else "",
                    ]
                )
                if tube == "nk":
                    nk_truth = res.truth
                else:
                    treg_truth = res.truth
            nk_pct = 100.0 * nk_truth["nk"] / nk_truth["live"]
            alc = alc_per_ul(visit.alc, pat.alc_unit)
            used = next((f for f in PREFERRED_FRACTIONS if f in visit.chimerism), None)
            donor_pct = visit.chimerism.get(used) if used else None
            donor = (
                alc * nk_pct / 100.0 * donor_pct / 100.0
                if alc is not None and donor_pct is not None
                else None
            )
            treg_pct = 100.0 * treg_truth["treg"] / treg_truth["cd4"]
            ki_pct = 100.0 * treg_truth["treg_ki67"] / treg_truth["treg"]
            visits_rows.append(
                [
                    sid,
                    pat.pid,
                    when.isoformat(),
                    visit.day,
                    _fmt(nk_pct),
                    nk_truth["nk"],
                    nk_truth["live"],
                    _fmt(alc),
                    visit.alc,
                    pat.alc_unit,
                    used or "",
                    _fmt(donor_pct),
                    _fmt(donor),
                    _fmt(treg_pct),
                    _fmt(ki_pct),
                ]
            )
            if WINDOW[0] <= visit.day <= WINDOW[1] and day14 is None:
                day14 = (sid, visit, nk_truth, alc, donor)
        flags = "nk_donor_is_hsct_donor" if pat.nk_donor == pat.hsct_donor else ""
        if day14 is None:
            endpoint_rows.append(
                [pat.pid, "", "", "", "", "", "NOT_EVALUABLE", "", "no_sample_in_window", flags]
            )
            continue
        sid, visit, nk_truth, alc, donor = day14
        if alc is None:
            endpoint_rows.append(
                [pat.pid, sid, visit.day, "", "", "", "NOT_EVALUABLE", "", "missing_alc", flags]
            )
            continue
        lo, hi = poisson_interval(donor, nk_truth["nk"], nk_truth["live"])
        notes[pat.pid] = {
            "sid": sid,
            "nk": nk_truth["nk"],
            "live": nk_truth["live"],
            "alc": alc,
            "lo": lo,
            "hi": hi,
            "donor": donor,
        }
        if nk_truth["junk"]:
            j = nk_truth["junk"]
            pct = 100.0 * (nk_truth["nk"] + j) / (nk_truth["live"] + j)
            frac = visit.chimerism[used_of(visit)] / 100.0
            notes[pat.pid]["junk"] = j
            notes[pat.pid]["pct_with_junk"] = pct
            notes[pat.pid]["donor_with_junk"] = alc * pct / 100.0 * frac
        if len(visit.chimerism) > 1:
            notes[pat.pid]["donor_pb"] = (
                donor / visit.chimerism[used_of(visit)] * visit.chimerism["PB"]
            )
        verdict = "PASS" if donor > 100.0 else "FAIL"
        endpoint_rows.append(
            [
                pat.pid,
                sid,
                visit.day,
                _fmt(donor),
                _fmt(lo),
                _fmt(hi),
                verdict,
                "true" if lo <= 100.0 <= hi else "false",
                ";".join(
                    ["above_threshold" if donor > 100.0 else "not_above_threshold"]
                    + (["interval_contains_threshold"] if lo <= 100.0 <= hi else [])
                ),
                flags,
            ]
        )

    write_table(
        out / "samples.tsv",
        ["sample_id", "patient_id", "collection_date", "tube", "panel", "gating", "fcs_file"],
        samples,
    )
    write_table(
        out / "infusions.tsv",
        [
            "patient_id",
            "infusion_number",
            "infusion_date",
            "cells_infused",
            "body_weight_kg",
            "nk_donor_id",
            "hsct_donor_id",
        ],
        infusions,
    )
    write_table(out / "cbc.tsv", ["patient_id", "date", "alc_value", "alc_unit"], cbc)
    write_table(out / "chimerism.tsv", ["patient_id", "date", "fraction", "donor_pct"], chim)
    write_table(out / "truth/populations.tsv", ["sample_id", "tube", "population", "events"], pops)
    write_table(
        out / "truth/visits.tsv",
        [
            "sample_id",
            "patient_id",
            "collection_date",
            "study_day",
            "nk_pct_of_lymphocytes",
            "nk_events",
            "lymphocyte_events",
            "alc_per_ul",
            "alc_value",
            "alc_unit",
            "chimerism_fraction",
            "donor_chimerism_pct",
            "donor_nk_per_ul",
            "treg_pct_of_cd4",
            "ki67_pct_of_treg",
        ],
        visits_rows,
    )
    write_table(
        out / "truth/endpoints.tsv",
        [
            "patient_id",
            "sample_id",
            "study_day",
            "donor_nk_per_ul",
            "donor_nk_per_ul_lo95",
            "donor_nk_per_ul_hi95",
            "verdict",
            "borderline",
            "reason",
            "flags",
        ],
        endpoint_rows,
    )
    write_table(
        out / "truth/tubes.tsv",
        [
            "sample_id",
            "tube",
            "fcs_file",
            "instrument_style",
            "cytometer",
            "fcs_version",
            "spillover_keyword",
            "timestep_s",
            "events_in_file",
            "junk_events",
            "gap_start_s",
            "gap_end_s",
            "burst_start_s",
            "burst_end_s",
        ],
        tubes_rows,
    )
    (out / "truth" / "README.md").write_text(readme(cohort, notes, seed), encoding="utf-8")
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "data" / "sample")
    args = ap.parse_args(argv)
    digests = generate(args.out, args.seed)
    size = sum((args.out / k).stat().st_size for k in digests)
    print(f"wrote {len(digests)} files, {size / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
