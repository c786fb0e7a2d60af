#!/usr/bin/env python
"""Generate the synthetic NK-therapy cohort in ``data/sample/`` with known truth.

``scripts/make_sample_data.py`` is its command; the generator ships in the package because
``nkflow qualify`` generates its truth cohort on the spot from the installed code and seed.

Contract
--------
``make_sample_data.py [--seed N] [--variant default|validation|lab] [--out DIR] [--ensure]``
writes, deterministically for a given seed and variant (same arguments -> byte-identical
files, no timestamps):

- ``fcs/<sample_id>_<tube>.fcs``: one FCS file per tube (``nk`` panel nk_v1, ``treg`` panel
  treg_v1). Each patient is acquired on one instrument style (``STYLES``); styles differ the
  way real instruments do: FCS version, ``$DATATYPE`` (F float32, or I 32-bit unsigned
  integers clipped to ``[0, $PnR-1]``), ``$PnR`` (2^18, 2^20, 2^22, 2^24), byte order,
  spillover keyword (``$SPILLOVER`` / ``SPILL``) and the order of its detector list, channel
  naming (marker in ``$PnS``, marker plus fluorochrome in ``$PnS``, marker in ``$PnN`` with
  ``$PnS`` empty), scatter gains (lymphocyte FSC-A / SSC-A medians at different fractions of
  the range, FSC-H/FSC-A ratio) and per-marker positive levels.
- ``samples.tsv``, ``infusions.tsv``, ``cbc.tsv``, ``chimerism.tsv``: the side tables in the
  formats of docs/DEVELOPING.md ("Sheets"); FCS paths are relative to the sheet.
- ``truth/populations.tsv``, ``truth/visits.tsv``, ``truth/endpoints.tsv``,
  ``truth/tubes.tsv``, ``truth/styles.tsv``, ``truth/label_codes.tsv`` and
  ``truth/README.md``: the generator's own labels and the endpoint numbers they imply.
- ``truth/labels/<sample_id>_<tube>.npy``: one uint8 label code per event, in file order
  (``numpy.load``); ``truth/label_codes.tsv`` names the codes and the populations.tsv rows
  each code counts toward.
- ``MANIFEST.sha256`` (``sha256sum -c`` format): the digest of every file above.

The FCS files and per-event labels are large (~90 MB) and are not committed: ``--ensure``
regenerates them when any file listed in ``DIR/MANIFEST.sha256`` is missing or differs, and
exits with status 1 (naming the files) if the regeneration does not reproduce the manifest.
Without ``--ensure`` the cohort is written and the manifest rewritten.

``--variant validation`` (default seed ``VALIDATION_SEED``) writes a second cohort with the same
scenarios and truth layout on other instrument settings (``VALIDATION_STYLES``: other gains,
positions, per-marker multipliers and a 2^24 integer style) that gates were not developed on.

``--variant lab`` (seed ``LAB_SEED``, default ``--out data/lab``) writes a small cohort (L01-L04,
scenarios of the default cohort) where every blood draw is ONE combined FCS file,
``fcs/<sample_id>.fcs``, stained with both panels (tube kind ``combined``: the union of the nk
and treg markers, one channel each, on the Fortessa and Aurora styles; its per-event labels
give the truth of both gate trees). It describes those files twice: ``canonical/*.tsv`` in
nkflow's sheet format (each file listed once per gate tree) with ``config.yaml``, and
``lab_export/*.csv`` as a lab exports them (its own column names, ``06-Feb-2024`` dates, one
row per draw with tubes ``nk;treg``, cells per kg with the weight, no donor ids, fractions
``CD56+`` / ``whole blood``) with ``config_lab.yaml`` mapping the columns (``sheet_format:``).
Both configs expect the cohort in ``data/lab`` of the run directory; both runs must give the
same endpoint tables (tests/integration/test_lab_export.py).

Events are simulated per cell type on a reference scale (2^18) as scatter plus true
fluorescence (log-normal positive levels on top of autofluorescence). Per style, scatter is
multiplied by the style's gains, autofluorescence and noise scale with the range, and positive
levels scale with the range times the style's per-marker multiplier. Fluorescence is mixed by
the style's spillover matrix (observed = true @ S), plus detector noise (constant electronic
noise and a photon-statistics term proportional to sqrt(signal)). The spillover matrix is
stored in the file, so compensation (observed @ inv(S)) is required. Population counts are
exact integers chosen per tube, so the truth percentages are exact.

Its command (:func:`main`) prints a one-line summary.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from nkflow.provenance import sha256_file

DEFAULT_SEED = 20260101
VALIDATION_SEED = 20260707
LAB_SEED = 20261212
REF_RANGE = 262144.0  # the reference scale events are simulated on
N_EVENTS = 15_000  # events per tube (plus junk)
N_EVENTS_DAY14 = 50_000  # both tubes of the visit the endpoint is read from
MANIFEST = "MANIFEST.sha256"

# ------------------------------------------------------------------------------------------
# Panels (marker order inside the generator) and instrument styles
# ------------------------------------------------------------------------------------------
SCATTER = ("FSC-A", "FSC-H", "SSC-A")
NK_MARKERS = ("CD45", "CD3", "CD56", "CD16", "CD14", "CD19", "Viability")
TREG_MARKERS = ("Viability", "CD3", "CD4", "CD8", "CD25", "CD127", "FoxP3", "Ki-67")
# One FCS file stained with both panels (one channel per marker: CD3 and Viability once); the
# nk_v1 and the treg_v1 gate trees are both applied to it.
COMBINED_MARKERS = NK_MARKERS + tuple(m for m in TREG_MARKERS if m not in NK_MARKERS)
MARKERS = {"nk": NK_MARKERS, "treg": TREG_MARKERS, "combined": COMBINED_MARKERS}
PANEL_OF_TUBE = {"nk": "nk_v1", "treg": "treg_v1"}
TREES_OF_TUBE = {"nk": ("nk",), "treg": ("treg",), "combined": ("nk", "treg")}
TUBE_STREAM = {"nk": 0, "treg": 1, "combined": 2}  # the tube's random stream within a draw
TUBE_NAME = {"nk": "NK", "treg": "TREG", "combined": "NK TREG"}  # FCS keyword TUBE NAME

Fluor = tuple[str, str, float]  # ($PnN, $PnS, multiplier on the positive level)


@dataclass(frozen=True, kw_only=True)
class Style:
    """One instrument style.

    ``fluor`` maps tube -> marker -> (``$PnN``, ``$PnS``, positive-level multiplier); the
    order of that mapping is the detector (data column) order. ``lymph_fsc`` / ``lymph_ssc``
    are the lymphocyte FSC-A / SSC-A medians as fractions of ``range``; ``fsc_h_ratio`` is the
    singlet FSC-H/FSC-A ratio. ``spill_base`` = (next detector, previous detector, two away)
    spill fractions; ``spill_order`` 'data' lists the spillover detectors in data order,
    'sorted' alphabetically, 'reversed' backwards. The defaults are an FCS 3.1 float32
    little-endian file with ``$SPILLOVER``, scatter named as in ``SCATTER`` and a ``Time``
    channel: a style states only what differs.
    """

    key: str
    cytometer: str
    version: str = "FCS3.1"
    datatype: str = "F"  # 'F' float32 or 'I' uint32
    range: int
    byteorder: str = "<"  # '<' little, '>' big
    spill_keyword: str = "$SPILLOVER"
    spill_base: tuple[float, float, float]
    spill_order: str
    timestep: float
    lymph_fsc: float
    lymph_ssc: float
    fsc_h_ratio: float
    scatter: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {m: (m, "") for m in SCATTER}
    )
    time_name: str = "Time"
    fluor: dict[str, dict[str, Fluor]]
    extra: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def scale(self) -> float:
        """Fluorescence scale relative to the reference range."""
        return self.range / REF_RANGE


_SRC = {"$SRC": "NKFLOW-SYNTHETIC"}

BD = Style(
    key="bd_fortessa",
    cytometer="LSRFortessa",
    range=2**18,
    spill_base=(0.22, 0.08, 0.03),
    spill_order="data",
    timestep=0.01,
    lymph_fsc=0.236,
    lymph_ssc=0.061,
    fsc_h_ratio=0.82,
    fluor={
        "nk": {
            "CD16": ("FITC-A", "CD16", 1.0),
            "CD19": ("PerCP-Cy5-5-A", "CD19", 1.0),
            "CD56": ("PE-Cy7-A", "CD56", 1.0),
            "CD3": ("APC-H7-A", "CD3", 1.0),
            "CD14": ("BV605-A", "CD14", 1.0),
            "CD45": ("BV510-A", "CD45", 1.0),
            "Viability": ("BV421-A", "Viability", 1.0),
        },
        "treg": {
            "FoxP3": ("PE-A", "FoxP3", 1.0),
            "CD25": ("BB515-A", "CD25", 1.0),
            "CD127": ("PE-Cy7-A", "CD127", 1.0),
            "Ki-67": ("AF647-A", "Ki-67", 1.0),
            "CD3": ("APC-H7-A", "CD3", 1.0),
            "CD4": ("BV605-A", "CD4", 1.0),
            "CD8": ("BV510-A", "CD8", 1.0),
            "Viability": ("BV421-A", "LIVE DEAD", 1.0),
        },
        # one tube per draw with both stains: a 5-laser Fortessa's 13 detectors
        "combined": {
            "CD16": ("FITC-A", "CD16", 1.0),
            "CD19": ("PerCP-Cy5-5-A", "CD19", 1.0),
            "FoxP3": ("PE-A", "FoxP3", 1.0),
            "CD25": ("PE-CF594-A", "CD25", 1.0),
            "CD56": ("PE-Cy7-A", "CD56", 1.0),
            "Ki-67": ("AF647-A", "Ki-67", 1.0),
            "CD3": ("APC-H7-A", "CD3", 1.0),
            "CD14": ("BV605-A", "CD14", 1.0),
            "CD4": ("BV650-A", "CD4", 1.0),
            "CD8": ("BV711-A", "CD8", 1.0),
            "CD127": ("BV786-A", "CD127", 1.0),
            "CD45": ("BV510-A", "CD45", 1.0),
            "Viability": ("BV421-A", "Viability", 1.0),
        },
    },
    extra={"$CYTSN": "H64710000", **_SRC, "CREATOR": "BD FACSDiva 9.0"},
    note="marker in $PnS",
)

CYTOFLEX = Style(
    key="cytoflex",
    cytometer="CytoFLEX LX",
    version="FCS3.0",
    datatype="I",
    range=2**20,
    byteorder=">",
    spill_keyword="SPILL",
    spill_base=(0.28, 0.1, 0.04),
    spill_order="data",
    timestep=0.1,
    lymph_fsc=0.118,
    lymph_ssc=0.074,
    fsc_h_ratio=0.93,
    time_name="TIME",
    fluor={
        "nk": {
            "CD16": ("FL1-A", "CD16 FITC", 0.7),
            "CD56": ("FL2-A", "CD56 PE", 2.2),
            "CD19": ("FL3-A", "CD19 ECD", 1.0),
            "CD14": ("FL4-A", "CD14 PC5.5", 0.8),
            "CD3": ("FL5-A", "BV785 - CD3", 1.6),
            "CD45": ("FL6-A", "CD45 KrO", 0.5),
            "Viability": ("FL7-A", "7-AAD", 1.3),
        },
        "treg": {
            "CD25": ("FL1-A", "CD25 FITC", 0.6),
            "FoxP3": ("FL2-A", "FoxP3 PE", 1.8),
            "CD127": ("FL3-A", "CD127 PC7", 1.4),
            "Ki-67": ("FL4-A", "Ki-67 AF647", 1.2),
            "CD3": ("FL5-A", "BV785 - CD3", 1.6),
            "CD4": ("FL6-A", "CD4 BV605", 0.9),
            "CD8": ("FL7-A", "CD8 BV510", 0.7),
            "Viability": ("FL8-A", "Zombie NIR", 1.1),
        },
    },
    extra={"$CYTSN": "AX00123", **_SRC, "CREATOR": "CytExpert 2.4"},
    note="detector FLn-A in $PnN, marker + fluorochrome in $PnS",
)

AURORA = Style(
    key="aurora",
    cytometer="Aurora",
    range=2**22,
    spill_base=(0.015, 0.006, 0.0),  # unmixed: only a small residual remains
    spill_order="sorted",
    timestep=0.001,
    lymph_fsc=0.168,
    lymph_ssc=0.034,
    fsc_h_ratio=0.70,
    fluor={
        "nk": {
            "CD45": ("BUV395-A", "CD45 BUV395", 1.4),
            "Viability": ("Zombie NIR-A", "Zombie NIR", 0.9),
            "CD16": ("BB515-A", "CD16 BB515", 1.5),
            "CD3": ("BV510-A", "CD3 BV510", 0.8),
            "CD56": ("BV605-A", "CD56 BV605", 0.6),
            "CD19": ("PerCP-eFluor 710-A", "CD19 PerCP-eFluor 710", 0.9),
            "CD14": ("APC-A", "CD14 APC", 1.3),
        },
        "treg": {
            "CD4": ("BUV496-A", "CD4 BUV496", 1.3),
            "CD25": ("BV421-A", "CD25 BV421", 1.1),
            "CD8": ("BV711-A", "CD8 BV711", 1.7),
            "FoxP3": ("PE-A", "FoxP3 PE", 2.0),
            "CD127": ("PE-Cy7-A", "CD127 PE-Cy7", 1.2),
            "Ki-67": ("AF700-A", "Ki-67 AF700", 0.5),
            "CD3": ("BUV805-A", "CD3 BUV805", 0.8),
            "Viability": ("LIVE DEAD Blue-A", "Live/Dead Blue", 1.0),
        },
        # both stains in one tube: the nk tube's fluorochromes plus the treg tube's for the
        # markers only it has
        "combined": {
            "CD45": ("BUV395-A", "CD45 BUV395", 1.4),
            "CD4": ("BUV496-A", "CD4 BUV496", 1.3),
            "Viability": ("Zombie NIR-A", "Zombie NIR", 0.9),
            "CD16": ("BB515-A", "CD16 BB515", 1.5),
            "CD25": ("BV421-A", "CD25 BV421", 1.1),
            "CD3": ("BV510-A", "CD3 BV510", 0.8),
            "CD56": ("BV605-A", "CD56 BV605", 0.6),
            "CD8": ("BV711-A", "CD8 BV711", 1.7),
            "CD19": ("PerCP-eFluor 710-A", "CD19 PerCP-eFluor 710", 0.9),
            "FoxP3": ("PE-A", "FoxP3 PE", 2.0),
            "CD127": ("PE-Cy7-A", "CD127 PE-Cy7", 1.2),
            "CD14": ("APC-A", "CD14 APC", 1.3),
            "Ki-67": ("AF700-A", "Ki-67 AF700", 0.5),
        },
    },
    extra={"$CYTSN": "R0042", **_SRC, "CREATOR": "SpectroFlo 3.0.3"},
    note="unmixed; fluorochrome-A in $PnN, marker + fluorochrome in $PnS",
)

ATTUNE = Style(
    key="attune",
    cytometer="Attune NxT Acoustic Focusing Cytometer",
    range=2**20,
    spill_base=(0.18, 0.12, 0.05),
    spill_order="reversed",
    timestep=0.001,
    lymph_fsc=0.295,
    lymph_ssc=0.046,
    fsc_h_ratio=0.88,
    fluor={
        "nk": {
            "CD16": ("CD16 FITC-A", "", 0.8),
            "CD56": ("CD56 PE-A", "", 3.0),
            "CD19": ("CD19 PerCP-Cy5.5-A", "", 1.1),
            "CD14": ("CD14 APC-A", "", 1.5),
            "CD3": ("CD3 APC-Cy7-A", "", 0.5),
            "CD45": ("CD45 Pacific Orange-A", "", 0.8),
            "Viability": ("Viability eFluor 450-A", "", 1.2),
        },
        "treg": {
            "CD25": ("CD25 FITC-A", "", 0.7),
            "FoxP3": ("FoxP3 PE-A", "", 2.5),
            "CD127": ("CD127 PE-Cy7-A", "", 0.9),
            "Ki-67": ("Ki-67 APC-A", "", 1.4),
            "CD3": ("CD3 APC-Cy7-A", "", 0.5),
            "CD4": ("CD4 BV605-A", "", 1.2),
            "CD8": ("CD8 BV510-A", "", 0.8),
            "Viability": ("Viability eFluor 450-A", "", 1.2),
        },
    },
    extra={"$CYTSN": "2AFC3310", **_SRC, "CREATOR": "Attune NxT Software v3.2"},
    note="marker in $PnN (renamed parameters), $PnS empty",
)

# The validation cohort: instrument settings no gate was drawn on.
ACCURI = Style(
    key="accuri",
    cytometer="BD Accuri C6 Plus",
    version="FCS3.0",
    datatype="I",
    range=2**24,
    byteorder=">",
    spill_base=(0.25, 0.05, 0.02),
    spill_order="reversed",
    timestep=0.01,
    lymph_fsc=0.031,
    lymph_ssc=0.0042,
    fsc_h_ratio=0.78,
    fluor={
        "nk": {
            "CD16": ("FL1-A", "FITC-A CD16", 1.2),
            "CD56": ("FL2-A", "PE-A CD56", 0.5),
            "CD19": ("FL3-A", "PerCP-A CD19", 1.6),
            "CD14": ("FL4-A", "APC-A CD14", 0.6),
            "CD3": ("FL5-A", "BV421-A CD3", 2.4),
            "CD45": ("FL6-A", "BV510-A CD45", 1.8),
            "Viability": ("FL7-A", "APC-Cy7-A Viability", 0.7),
        },
        "treg": {
            "CD25": ("FL1-A", "FITC-A CD25", 1.5),
            "FoxP3": ("FL2-A", "PE-A FoxP3", 0.6),
            "CD127": ("FL3-A", "PE-Cy7-A CD127", 2.0),
            "Ki-67": ("FL4-A", "APC-A Ki-67", 0.8),
            "CD3": ("FL5-A", "BV421-A CD3", 2.4),
            "CD4": ("FL6-A", "BV510-A CD4", 0.6),
            "CD8": ("FL7-A", "BV605-A CD8", 1.4),
            "Viability": ("FL8-A", "APC-Cy7-A Viability", 0.7),
        },
    },
    extra={"$CYTSN": "C6P-2211", **_SRC, "CREATOR": "BD CSampler Plus 1.0"},
    note="detector FLn-A in $PnN, fluorochrome then marker in $PnS",
)

NAVIOS = Style(
    key="navios",
    cytometer="Navios EX",
    version="FCS3.0",
    range=2**20,
    byteorder=">",
    spill_keyword="SPILL",
    spill_base=(0.3, 0.14, 0.06),
    spill_order="sorted",
    timestep=0.1,
    lymph_fsc=0.205,
    lymph_ssc=0.052,
    fsc_h_ratio=0.9,
    scatter={"FSC-A": ("FS INT", ""), "FSC-H": ("FS PEAK", ""), "SSC-A": ("SS INT", "")},
    time_name="TIME",
    fluor={
        "nk": {
            "CD16": ("FL1 INT", "CD16 FITC", 1.1),
            "CD56": ("FL2 INT", "CD56 PE", 1.7),
            "CD19": ("FL3 INT", "CD19 ECD", 0.8),
            "CD14": ("FL4 INT", "CD14 PC5.5", 1.2),
            "CD3": ("FL5 INT", "CD3 PC7", 1.3),
            "CD45": ("FL10 INT", "CD45 KrO", 0.7),
            "Viability": ("FL6 INT", "7-AAD", 0.9),
        },
        "treg": {
            "CD25": ("FL1 INT", "CD25 FITC", 0.8),
            "FoxP3": ("FL2 INT", "FoxP3 PE", 1.4),
            "CD127": ("FL5 INT", "CD127 PC7", 1.1),
            "Ki-67": ("FL6 INT", "Ki-67 APC", 1.6),
            "CD3": ("FL8 INT", "CD3 APC-A750", 1.0),
            "CD4": ("FL9 INT", "CD4 PB", 1.3),
            "CD8": ("FL10 INT", "CD8 KrO", 0.6),
            "Viability": ("FL7 INT", "Zombie NIR", 1.0),
        },
    },
    extra={"$CYTSN": "AW40133", **_SRC, "CREATOR": "Navios EX 2.0"},
    note="detector 'FLn INT' in $PnN, marker + fluorochrome in $PnS",
)

AURORA_5L = Style(
    key="aurora_5l",
    cytometer="Aurora 5L",
    range=2**22,
    spill_base=(0.01, 0.02, 0.005),
    spill_order="reversed",
    timestep=0.0001,
    lymph_fsc=0.262,
    lymph_ssc=0.049,
    fsc_h_ratio=0.74,
    fluor={
        "nk": {
            "Viability": ("Zombie UV-A", "Zombie UV", 1.3),
            "CD3": ("BUV805-A", "CD3 BUV805", 1.9),
            "CD45": ("BV786-A", "CD45 BV786", 0.6),
            "CD56": ("PE-A", "CD56 PE", 2.6),
            "CD16": ("BUV737-A", "CD16 BUV737", 0.7),
            "CD14": ("BV650-A", "CD14 BV650", 1.1),
            "CD19": ("Spark NIR 685-A", "CD19 Spark NIR 685", 0.8),
        },
        "treg": {
            "Viability": ("Zombie UV-A", "Zombie UV", 1.3),
            "FoxP3": ("AF647-A", "FoxP3 AF647", 0.7),
            "CD25": ("PE-A", "CD25 PE", 1.9),
            "CD127": ("BV421-A", "CD127 BV421", 1.3),
            "Ki-67": ("BV711-A", "Ki-67 BV711", 1.1),
            "CD3": ("BUV805-A", "CD3 BUV805", 1.9),
            "CD4": ("cFluor YG584-A", "CD4 cFluor YG584", 0.8),
            "CD8": ("BUV563-A", "CD8 BUV563", 1.2),
        },
    },
    extra={"$CYTSN": "V0519", **_SRC, "CREATOR": "SpectroFlo 3.3.0"},
    note="unmixed; fluorochrome-A in $PnN, marker + fluorochrome in $PnS",
)

ATTUNE_INT = Style(
    key="attune_int",
    cytometer="Attune NxT Flow Cytometer",
    datatype="I",
    range=2**22,
    spill_base=(0.2, 0.06, 0.04),
    spill_order="data",
    timestep=0.01,
    lymph_fsc=0.142,
    lymph_ssc=0.067,
    fsc_h_ratio=0.85,
    fluor={
        "nk": {
            "CD3": ("CD3-A", "", 1.2),
            "CD16": ("CD16-A", "", 1.4),
            "CD56": ("CD56-A", "", 0.8),
            "CD45": ("CD45-A", "", 1.1),
            "CD14": ("CD14-A", "", 0.9),
            "CD19": ("CD19-A", "", 1.3),
            "Viability": ("Viability-A", "", 1.5),
        },
        "treg": {
            "CD3": ("CD3-A", "", 1.2),
            "CD4": ("CD4-A", "", 1.5),
            "CD8": ("CD8-A", "", 0.9),
            "CD25": ("CD25-A", "", 1.2),
            "CD127": ("CD127-A", "", 0.7),
            "FoxP3": ("FoxP3-A", "", 1.3),
            "Ki-67": ("Ki-67-A", "", 0.9),
            "Viability": ("Viability-A", "", 1.5),
        },
    },
    extra={"$CYTSN": "2AFC1207", **_SRC, "CREATOR": "Attune NxT Software v4.2"},
    note="marker in $PnN ('CD56-A'), $PnS empty",
)

STYLES = {s.key: s for s in (BD, CYTOFLEX, AURORA, ATTUNE)}
VALIDATION_STYLES = {s.key: s for s in (ACCURI, NAVIOS, AURORA_5L, ATTUNE_INT)}
LAB_STYLES = {s.key: s for s in (BD, AURORA)}  # the styles with a combined tube
ALL_STYLES = {**STYLES, **VALIDATION_STYLES}
STYLES_OF_VARIANT = {"default": STYLES, "validation": VALIDATION_STYLES, "lab": LAB_STYLES}
# The tubes of one blood draw: one FCS file each (a combined tube feeds both gate trees).
TUBES_OF_VARIANT = {"default": ("nk", "treg"), "validation": ("nk", "treg"), "lab": ("combined",)}

# Patient -> instrument style per variant: every style has a PASS and a FAIL or NOT_EVALUABLE.
ASSIGNMENT = {
    "default": {
        "P01": "bd_fortessa",
        "P03": "bd_fortessa",
        "P02": "cytoflex",
        "P06": "cytoflex",
        "P05": "aurora",
        "P08": "aurora",
        "P07": "attune",
        "P04": "attune",
    },
    "validation": {
        "P01": "accuri",
        "P08": "accuri",
        "P02": "navios",
        "P05": "navios",
        "P03": "aurora_5l",
        "P06": "aurora_5l",
        "P04": "attune_int",
        "P07": "attune_int",
    },
    "lab": {"L01": "aurora", "L04": "aurora", "L02": "bd_fortessa", "L03": "bd_fortessa"},
}
SEED_OF_VARIANT = {"default": DEFAULT_SEED, "validation": VALIDATION_SEED, "lab": LAB_SEED}


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


def _stained(base: tuple[str, dict[str, Level]], over: tuple[str, dict[str, Level]]):
    """A cell type stained with both panels: base's levels, over's where both stain a marker."""
    return base[0], {**base[1], **over[1]}


# The combined tube's cell types, from the two tubes' phenotypes: the nk tube's levels for NK
# cells, NKT-like cells, B cells and myeloid cells, the treg tube's for the T-cell subsets
# (CD3 included); each takes the other tube's levels for the markers only that tube stains.
# NKT-like cells (CD3+CD56+) are mostly CD8+: the treg tube's cd8 phenotype, which the treg
# tube's own T-cell mix already counts them in.
COMBINED_PHENO: dict[str, tuple[str, dict[str, Level]]] = {
    "nk_cd56bright": _stained(TREG_PHENO["nk"], NK_PHENO["nk_cd56bright"]),
    "nk_cd56dim": _stained(TREG_PHENO["nk"], NK_PHENO["nk_cd56dim"]),
    "nkt_like": _stained(TREG_PHENO["cd8"], NK_PHENO["nkt_like"]),
    "b": _stained(TREG_PHENO["b"], NK_PHENO["b"]),
    **{t: _stained(NK_PHENO["t"], TREG_PHENO[t]) for t in ("cd4_conv", "cd4_act", "treg")},
    **{t: _stained(NK_PHENO["t"], TREG_PHENO[t]) for t in ("cd8", "dn_t")},
    "mono": _stained(TREG_PHENO["mono"], NK_PHENO["mono"]),
    "gran": _stained(TREG_PHENO["gran"], NK_PHENO["gran"]),
}
PHENO = {"nk": NK_PHENO, "treg": TREG_PHENO, "combined": COMBINED_PHENO}


def pheno_with(
    tube: str, cell: str, levels: Mapping[str, Level]
) -> dict[str, tuple[str, dict[str, Level]]]:
    """``PHENO[tube]`` with ``cell``'s marker ``levels`` replaced (for ``make_tube(pheno=)``)."""
    cls, base = PHENO[tube][cell]
    return {**PHENO[tube], cell: (cls, {**base, **levels})}


KI67: Level = (3.8, 0.15)
KI67_FRAC = {"treg": 0.30, "cd4_conv": 0.05, "cd8": 0.05}  # Ki-67+ fraction (treg tube markers)
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


Block = tuple[np.ndarray, np.ndarray, np.ndarray]  # scatter, autofluorescence, positive part


def _cells(
    rng: np.random.Generator,
    n: int,
    pheno: tuple[str, dict[str, Level]],
    markers: tuple[str, ...],
) -> Block:
    """Scatter (n, 3), autofluorescence and positive fluorescence (n, len(markers))."""
    cls, levels = pheno
    sc = _scatter(rng, n, cls)
    af = np.empty((n, len(markers)))
    pos = np.zeros((n, len(markers)))
    for j, m in enumerate(markers):
        af[:, j] = _autofluor(rng, n, AUTOFLUOR[cls])
        lev = levels.get(m, NEG)
        if lev is not NEG:
            pos[:, j] = _level(rng, n, lev)
    return sc, af, pos


def _debris(rng: np.random.Generator, n: int, markers: tuple[str, ...]) -> Block:
    fsc_a = 2000.0 + rng.exponential(6000.0, n)
    fsc_h = fsc_a * rng.normal(0.8, 0.06, n)
    ssc_a = 5000.0 * np.exp(rng.normal(0.0, 0.6, n))
    af = np.column_stack([_autofluor(rng, n, AUTOFLUOR["debris"]) for _ in markers])
    pos = np.zeros_like(af)
    vi = markers.index("Viability")
    dead = rng.random(n) < 0.6
    pos[dead, vi] = _level(rng, int(dead.sum()), (3.6, 0.4))
    return np.column_stack([fsc_a, fsc_h, ssc_a]), af, pos


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
    n_nk: int = N_EVENTS
    n_treg: int = N_EVENTS
    junk: int = 0  # clog burst events in the nk tube


@dataclass(frozen=True)
class Patient:
    """One patient scenario."""

    pid: str
    first_infusion: date
    infusion_days: tuple[int, ...]
    weight_kg: float
    nk_donor: str
    hsct_donor: str
    alc_unit: str
    visits: tuple[Visit, ...]
    scenario: str
    dose_per_kg: float = 3e6  # NK cells per kg body weight, every infusion


PREFERRED_FRACTIONS = ("CD56", "PB")  # the truth assumes the config prefers CD56, then PB
WINDOW = (12, 16)  # day 14 +/- 2


def _cohort() -> tuple[Patient, ...]:
    """The scenario table (see truth/README.md for the story of each patient)."""
    v = Visit
    big = N_EVENTS_DAY14
    return (
        Patient(
            "P01",
            date(2025, 3, 3),
            (0, 2, 4),
            72.0,
            "D01N",
            "D01H",
            "10^3/uL",
            (
                v(0, 11.0, 0.55, 8.0, "0.45", {}),
                v(7, 14.0, 0.65, 3.5, "0.95", {"PB": 71.0, "CD56": 93.0}),
                v(14, 27.0, 0.40, 4.5, "1.80", {"PB": 88.0, "CD56": 98.0}, n_nk=big, n_treg=big),
                v(28, 19.0, 0.25, 5.5, "1.60", {"PB": 84.0, "CD56": 96.0}),
            ),
            "clear PASS (expander); day-7 Treg 3.5 % of CD4; 3 infusions",
        ),
        Patient(
            "P02",
            date(2025, 3, 10),
            (0,),
            81.5,
            "D02N",
            "D02H",
            "10^9/L",
            (
                v(0, 9.0, 0.60, 9.0, "0.38", {}),
                v(7, 6.0, 0.60, 9.5, "0.52", {"PB": 52.0}),
                v(14, 8.0, 0.50, 10.0, "0.60", {"PB": 85.0}, n_nk=big, n_treg=big),
                v(28, 6.5, 0.30, 9.0, "0.70", {"PB": 60.0}),
            ),
            "clear FAIL (~41 donor NK/uL)",
        ),
        Patient(
            "P03",
            date(2025, 3, 17),
            (0, 7),
            64.0,
            "D03N",
            "D03H",
            "cells/uL",
            (
                v(0, 12.0, 0.50, 7.0, "420", {}),
                v(7, 15.0, 0.60, 4.0, "880", {"PB": 74.0}),
                v(14, 20.0, 0.45, 5.0, "QNS", {"PB": 90.0}, n_nk=big, n_treg=big),
                v(28, 16.0, 0.30, 6.0, "1150", {"PB": 81.0}),
            ),
            "NOT_EVALUABLE: day-14 ALC reported as QNS (quantity not sufficient)",
        ),
        Patient(
            "P04",
            date(2025, 3, 24),
            (0,),
            77.0,
            "D04N",
            "D04H",
            "10^3/uL",
            (
                v(0, 10.5, 0.55, 8.5, "0.50", {}),
                v(7, 9.0, 0.60, 6.5, "0.70", {"PB": 60.0}),
                v(17, 12.0, 0.45, 6.0, "0.90", {"PB": 72.0}, n_nk=big, n_treg=big),
                v(28, 10.0, 0.30, 6.5, "1.00", {"PB": 70.0}),
            ),
            "NOT_EVALUABLE: no sample in the day-14 window (visit drawn on day 17)",
        ),
        Patient(
            "P05",
            date(2025, 4, 7),
            (0, 2),
            58.0,
            "D05N",
            "D05H",
            "cells/uL",
            (
                v(0, 9.5, 0.50, 7.5, "510", {}),
                v(7, 6.5, 0.60, 6.0, "1210", {"PB": 90.0}),
                v(14, 7.0, 0.45, 6.5, "1500", {"PB": 97.0}, n_nk=big, n_treg=big),
                v(28, 6.0, 0.35, 7.0, "1450", {"PB": 95.0}),
            ),
            "borderline PASS: ~102 donor NK/uL, 95 % interval contains 100",
        ),
        Patient(
            "P06",
            date(2025, 4, 14),
            (0, 7),
            69.0,
            "D06N",
            "D06H",
            "10^9/L",
            (
                v(0, 13.0, 0.60, 8.0, "0.41", {}),
                v(7, 12.0, 0.70, 4.5, "0.55", {"PB": 40.0, "CD56": 88.0}),
                v(13, 20.0, 0.50, 5.0, "0.70", {"PB": 55.0, "CD56": 92.0}, n_nk=big, n_treg=big),
                v(28, 15.0, 0.35, 5.5, "0.80", {"PB": 50.0, "CD56": 90.0}),
            ),
            "off-day day-14 sample (day 13) with PB and CD56 chimerism: PASS with CD56, "
            "FAIL with PB",
        ),
        Patient(
            "P07",
            date(2025, 4, 22),
            (0, 7),
            88.0,
            "D07",
            "D07",
            "10^9/L",
            (
                v(0, 12.5, 0.50, 7.0, "0.60", {}),
                v(7, 16.0, 0.60, 4.8, "0.90", {"PB": 97.0}),
                v(14, 24.0, 0.40, 5.0, "1.10", {"PB": 96.0}, n_nk=big, n_treg=big),
                v(28, 18.0, 0.30, 5.5, "1.20", {"PB": 97.0}),
            ),
            "NK donor is the HSCT donor: PASS, flagged (STR cannot separate infused NK cells)",
        ),
        Patient(
            "P08",
            date(2025, 5, 5),
            (0,),
            75.0,
            "D08N",
            "D08H",
            "cells/uL",
            (
                v(0, 10.0, 0.55, 8.0, "480", {}),
                v(7, 6.0, 0.60, 7.0, "900", {"PB": 80.0}),
                v(14, 7.0, 0.45, 7.5, "1200", {"PB": 90.0}, n_nk=big, n_treg=big, junk=1800),
                v(28, 6.5, 0.35, 7.0, "1250", {"PB": 88.0}),
            ),
            "flow-rate anomaly on the day-14 nk tube: clog then a junk burst; truth FAIL, "
            "PASS if the burst is not removed",
        ),
    )


def _lab_cohort() -> tuple[Patient, ...]:
    """The lab variant's patients: four scenarios of the default cohort, with their visits.

    Other dates, no donor ids (the lab export has none), and one patient at 2.5 x 10^6
    cells/kg; every dose is exact: total = per kg x weight in decimal and binary floating point.
    """
    by_pid = {p.pid: p for p in _cohort()}
    plan = (  # lab patient, default patient, first NK infusion, cells/kg, scenario
        (
            "L01",
            "P01",
            date(2024, 2, 6),
            3e6,
            "clear PASS (as P01); CD56-sorted and whole-blood chimerism; 3 infusions",
        ),
        ("L02", "P02", date(2024, 2, 13), 3e6, "clear FAIL (as P02, ~41 donor NK/uL)"),
        (
            "L03",
            "P06",
            date(2024, 2, 20),
            2.5e6,
            "day-14 draw on day 13 with CD56-sorted and whole-blood chimerism (as P06): PASS "
            "with CD56, FAIL with PB; 2.5 x 10^6 cells/kg",
        ),
        ("L04", "P03", date(2024, 3, 5), 3e6, "NOT_EVALUABLE: day-14 ALC reported as QNS (as P03)"),
    )
    return tuple(
        replace(
            by_pid[src],
            pid=pid,
            first_infusion=first,
            nk_donor="",
            hsct_donor="",
            dose_per_kg=per_kg,
            scenario=scenario,
        )
        for pid, src, first, per_kg, scenario in plan
    )


# looked up by name when called, so that a benchmark replacing ``_cohort`` (bench/cohort.py)
# changes what ``generate`` builds
COHORT_OF_VARIANT = {
    "default": lambda: _cohort(),
    "validation": lambda: _cohort(),
    "lab": lambda: _lab_cohort(),
}
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
    """Detector names ($PnN, data order) and the spillover matrix S (rows = dyes)."""
    names = [pnn for pnn, _, _ in style.fluor[tube].values()]
    k = len(names)
    # Fixed, instrument-specific pattern: neighbours in detector order spill the most.
    nxt, prev, two = style.spill_base
    i = np.arange(k - 1)  # row i spills into i + 1; row i + 1 into i
    s = (
        np.eye(k)
        + np.diag(nxt * (1.0 + 0.15 * (i % 3)), 1)
        + np.diag(prev * (1.0 + 0.2 * (i % 2)), -1)
    )
    s += two * (np.eye(k, k=2) + np.eye(k, k=-2))
    return names, np.round(s, 4)


def spill_listing(style: Style, names: list[str], s: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The detector order the file's spillover keyword lists (rows and columns permuted)."""
    idx = list(range(len(names)))
    if style.spill_order == "sorted":
        idx = sorted(idx, key=lambda i: names[i])
    elif style.spill_order == "reversed":
        idx = idx[::-1]
    return [names[i] for i in idx], s[np.ix_(idx, idx)]


def spill_text(names: list[str], s: np.ndarray) -> str:
    """A spillover matrix as an FCS keyword value: ``n,names...,values...`` (row-major)."""
    vals = ",".join(f"{x:.4f}".rstrip("0").rstrip(".") if x != 0 else "0" for x in s.ravel())
    return f"{len(names)},{','.join(names)},{vals}"


# ------------------------------------------------------------------------------------------
# Per-event labels
# ------------------------------------------------------------------------------------------
# code -> (label, populations.tsv rows of its tube the label counts toward). 'singlets'
# counts every label except doublet and junk; 'events_in_file' every label.
LABEL_CODES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("debris", "both", ()),
    ("doublet", "both", ()),
    ("dead", "both", ()),
    ("gran", "both", ()),
    ("mono", "both", ()),
    ("junk", "nk", ("junk",)),
    ("t", "nk", ("lymphocytes", "live", "cd3")),
    ("nkt_like", "nk", ("lymphocytes", "live", "cd3", "nkt_like")),
    ("b", "both", ("lymphocytes", "live")),
    ("nk_cd56bright", "nk", ("lymphocytes", "live", "nk", "nk_cd56bright")),
    ("nk_cd56dim", "nk", ("lymphocytes", "live", "nk", "nk_cd56dim")),
    ("cd4_conv", "treg", ("lymphocytes", "live", "cd3", "cd4")),
    ("cd4_act", "treg", ("lymphocytes", "live", "cd3", "cd4")),
    ("treg", "treg", ("lymphocytes", "live", "cd3", "cd4", "treg")),
    ("treg_ki67", "treg", ("lymphocytes", "live", "cd3", "cd4", "treg", "treg_ki67")),
    ("cd8", "treg", ("lymphocytes", "live", "cd3")),
    ("dn_t", "treg", ("lymphocytes", "live", "cd3")),
    ("nk", "treg", ("lymphocytes", "live")),
)
CODE_OF = {name: i for i, (name, _, _) in enumerate(LABEL_CODES)}


def label_codes_rows() -> list[list[object]]:
    """Rows of truth/label_codes.tsv: code, label, tube, the populations it belongs to."""
    return [[i, name, tube, ",".join(pops)] for i, (name, tube, pops) in enumerate(LABEL_CODES)]


# ------------------------------------------------------------------------------------------
# One tube
# ------------------------------------------------------------------------------------------
@dataclass
class TubeResult:
    """Events (file channel order), channel names, truth and per-event labels of one tube."""

    events: np.ndarray
    pnn: list[str]
    pns: list[str]
    truth: dict[str, int]
    labels: np.ndarray  # uint8 codes (LABEL_CODES), file order
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


def _lymph_shares(tube: str, visit: Visit) -> dict[str, float]:
    """Shares of a tube's live lymphocytes per cell type.

    The nk tube: NK (CD56bright and dim), B, NKT-like, other T cells. The treg tube: the T-cell
    mix (NKT-like cells among its cd8 and dn_t), B, NK. The combined tube: the nk tube's NK, B
    and NKT-like shares and the treg tube's T-cell mix, whose cd8 share gives up the NKT-like
    cells: both trees see the lymphocytes their own tube would.
    """
    nk = visit.nk_pct / 100.0
    nk_side = {
        "nk_cd56bright": nk * visit.bright_frac,
        "nk_cd56dim": nk * (1 - visit.bright_frac),
        "b": 0.08,
        "nkt_like": 0.04,
    }
    t_all = 1.0 - nk - 0.08
    cd4 = 0.55 * t_all
    tr = visit.treg_pct_cd4 / 100.0
    t_side = {
        "treg": cd4 * tr,
        "cd4_act": cd4 * 0.03,
        "cd4_conv": cd4 * (1 - tr - 0.03),
        "cd8": t_all * 0.40,
        "dn_t": t_all * 0.05,
    }
    if tube == "nk":
        return {**nk_side, "t": 1.0 - nk - 0.12}
    if tube == "treg":
        return {**t_side, "b": 0.08, "nk": nk}
    return {**nk_side, **t_side, "cd8": t_all * 0.40 - 0.04}


def make_tube(
    rng: np.random.Generator,
    style: Style,
    tube: str,
    visit: Visit,
    pheno: Mapping[str, tuple[str, dict[str, Level]]] | None = None,
) -> TubeResult:
    """Simulate one tube; returns events in file channel order and the truth counts.

    ``pheno``: cell type -> (scatter class, marker levels) instead of ``PHENO[tube]`` (the
    benchmarks' shifted phenotypes, e.g. CD56dim NK cells closer to the CD56- cells).
    """
    markers = MARKERS[tube]
    pheno = PHENO[tube] if pheno is None else pheno
    n = visit.n_treg if tube == "treg" else visit.n_nk
    top = _counts(n, {**MIX, "lymph": 1.0 - sum(MIX.values())})
    sub = _counts(top["lymph"], _lymph_shares(tube, visit))
    blocks: list[Block] = []
    labels: list[np.ndarray] = []

    def add(label: str | np.ndarray, block: Block) -> None:
        blocks.append(block)
        if isinstance(label, str):
            label = np.full(len(block[0]), CODE_OF[label], dtype=np.uint8)
        labels.append(label)

    vi = markers.index("Viability")
    for name in sorted(sub):
        sc, af, pos = _cells(rng, sub[name], pheno[name], markers)
        codes = np.full(sub[name], CODE_OF[name], dtype=np.uint8)
        if tube != "nk" and name in KI67_FRAC:
            k = int(round(sub[name] * KI67_FRAC[name]))
            pos[:k, markers.index("Ki-67")] += _level(rng, k, KI67)
            if name == "treg":  # the Ki-67+ Treg have a label (and a populations.tsv row)
                codes[:k] = CODE_OF["treg_ki67"]
        add(codes, (sc, af, pos))
    for name in ("mono", "gran"):
        add(name, _cells(rng, top[name], pheno[name], markers))
    # dead cells: lymphocyte phenotypes with dimmer staining, shrunken, viability bright
    lymph_types = sorted(sub)
    picks = rng.choice(len(lymph_types), top["dead"])
    for j, name in enumerate(lymph_types):
        m = int((picks == j).sum())
        if m == 0:
            continue
        cls, levels = pheno[name]
        dim = {k: (mu - 0.3, sd) for k, (mu, sd) in levels.items()}
        sc, af, pos = _cells(rng, m, ("dead", dim), markers)
        pos[:, vi] += _level(rng, m, VIAB_DEAD)
        add("dead", (sc, af, pos))
    add("debris", _debris(rng, top["debris"], markers))
    # doublets: two singlet events summed; FSC-H grows less than FSC-A
    nd = top["doublets"]
    pool_sc, pool_af, pool_pos = (np.vstack([b[i] for b in blocks]) for i in range(3))
    lab = np.concatenate(labels)
    ok = np.flatnonzero(np.isin(lab, [CODE_OF["debris"], CODE_OF["dead"]], invert=True))
    a = rng.choice(ok, nd)
    b = rng.choice(ok, nd)
    dsc = pool_sc[a] + pool_sc[b]
    dsc[:, 1] = np.maximum(pool_sc[a, 1], pool_sc[b, 1]) * rng.normal(1.12, 0.05, nd)
    add("doublet", (dsc, pool_af[a] + pool_af[b], pool_pos[a] + pool_pos[b]))
    if visit.junk and tube == "nk":  # the clog burst
        add("junk", _cells(rng, visit.junk, pheno["junk"], markers))
    scat, af, pos = (np.vstack([b[i] for b in blocks]) for i in range(3))
    lab = np.concatenate(labels)
    total = len(lab)

    # acquisition time: Poisson arrivals at a constant rate, one clog gap, one burst
    duration = 60.0
    is_junk = lab == CODE_OF["junk"]
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

    # the instrument: fluorescence scales with the range, positive levels carry the style's
    # per-marker multiplier; mix into detectors, add noise
    fl_map = style.fluor[tube]
    k_range = style.scale
    mult = np.array([fl_map[m][2] for m in markers])
    true_fl = k_range * (af + pos * mult)
    det_names, s = spillover(style, tube)
    true_det_order = np.column_stack(
        [true_fl[:, markers.index(m)] for m in fl_map]  # dye order == detector order
    )
    observed = true_det_order @ s
    observed += rng.normal(0.0, 35.0 * k_range, observed.shape)
    observed += rng.normal(0.0, 1.0, observed.shape) * np.sqrt(np.abs(observed) * k_range) * 2.6
    lymph = CELL_SCATTER["lymph"]
    gains = np.array(
        [
            style.lymph_fsc * style.range / lymph["fsc"][0],
            style.lymph_fsc * style.range / lymph["fsc"][0] * style.fsc_h_ratio / 0.82,
            style.lymph_ssc * style.range / lymph["ssc"][0],
        ]
    )
    scat_obs = scat * gains * rng.normal(1.0, 0.01, scat.shape)

    pnn = [style.scatter[m][0] for m in SCATTER] + det_names + [style.time_name]
    pns = [style.scatter[m][1] for m in SCATTER] + [p for _, p, _ in fl_map.values()] + [""]
    time_units = np.floor(t / style.timestep)
    ev = np.column_stack([scat_obs, observed, time_units])[order]
    top_value = style.range - 1.0
    if style.datatype == "I":
        # Integer files cannot hold negatives: like the instruments that write them, values
        # are rounded to whole channels and clipped to [0, $PnR - 1] (noise below zero piles
        # up at 0).
        ev = np.clip(np.rint(ev), 0.0, top_value).astype(np.uint32)
    else:
        ev[:, :-1] = np.clip(ev[:, :-1], -5000.0 * k_range, top_value)
        ev[:, :3] = np.clip(ev[:, :3], 0.0, top_value)
        ev = np.round(ev, 1).astype(np.float32)

    lab_o = lab[order]
    truth = _truth_counts(tube, lab_o)
    return TubeResult(ev, pnn, pns, truth, lab_o, int(is_junk.sum()), gap, burst, duration)


TREE_ROWS = {
    "nk": ("nk", "nk_cd56bright", "nk_cd56dim", "nkt_like", "cd3"),
    "treg": ("cd3", "cd4", "treg", "treg_ki67"),
}


def _truth_counts(tube: str, lab: np.ndarray) -> dict[str, int]:
    """populations.tsv rows of one tube from its per-event label codes.

    ``tube`` is a gate tree's tube (``nk``, ``treg``): a combined file is counted once per
    tree, on the same labels (``combined`` gives the rows of both).
    """
    rows = ["events_in_file", "junk", "singlets", "lymphocytes", "live"]
    for tree in TREES_OF_TUBE[tube]:
        rows += [r for r in TREE_ROWS[tree] if r not in rows]
    counts = np.bincount(lab, minlength=len(LABEL_CODES))
    out = dict.fromkeys(rows, 0)
    out["events_in_file"] = len(lab)
    for code, (name, _, pops) in enumerate(LABEL_CODES):
        if name not in ("doublet", "junk"):
            out["singlets"] += int(counts[code])
        for pop in pops:
            if pop in out:
                out[pop] += int(counts[code])
    return out


# ------------------------------------------------------------------------------------------
# FCS writer (FCS 3.0 / 3.1, float32 or uint32, either byte order)
# ------------------------------------------------------------------------------------------
def write_fcs(
    path: Path,
    events: np.ndarray,
    pnn: list[str],
    pns: list[str],
    keywords: dict[str, str],
    version: str,
    byteorder: str,
    datatype: str = "F",
    pnr: int = 262144,
) -> None:
    """Write a list-mode FCS file (``$DATATYPE`` F or I, 32 bits); deterministic bytes."""
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
        "$DATATYPE": datatype,
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(p),
        "$TOT": str(n),
    }
    for k, (name, label) in enumerate(zip(pnn, pns, strict=True), start=1):
        kw[f"$P{k}N"] = name
        if label.strip():
            kw[f"$P{k}S"] = label
        kw[f"$P{k}B"] = "32"
        kw[f"$P{k}E"] = "0,0"
        kw[f"$P{k}R"] = str(pnr)
        kw[f"$P{k}G"] = "1"
    kw.update(keywords)
    code = {"F": "f4", "I": "u4"}[datatype]
    data = events.astype(byteorder + code).tobytes()
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


def fcs32_keywords(style: Style, tube: str) -> dict[str, str]:
    """FCS 3.2 per-parameter descriptors of a generated tube, from what the generator knows.

    Columns are the scatter channels (SCATTER order), the detectors of ``style.fluor[tube]``
    and Time (as :func:`make_tube` writes them): ``$PnTYPE`` Forward_Scatter / Side_Scatter /
    Raw_Fluorescence / Time, ``$PnFEATURE`` Area or Height, ``$PnANALYTE`` the marker. Pass
    them with ``version='FCS3.2'`` to :func:`write_fcs`. No sample style uses them.
    """
    kw: dict[str, str] = {}
    cols: list[tuple[str, str, str]] = [
        ("Forward_Scatter" if m.startswith("FSC") else "Side_Scatter",
         "Height" if m.endswith("-H") else "Area", "")
        for m in SCATTER
    ]  # fmt: skip
    cols += [("Raw_Fluorescence", "Area", marker) for marker in style.fluor[tube]]
    cols.append(("Time", "", ""))
    for k, (kind, feature, analyte) in enumerate(cols, start=1):
        kw[f"$P{k}TYPE"] = kind
        if feature:
            kw[f"$P{k}FEATURE"] = feature
        if analyte:
            kw[f"$P{k}ANALYTE"] = analyte
    return kw


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def write_table(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """Write a TSV (``None`` as an empty cell)."""
    lines = ["\t".join(header)]
    for r in rows:
        lines.append("\t".join("" if v is None else str(v) for v in r))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_records(path: Path, rows: list[dict[str, object]]) -> None:
    """Write a TSV of rows that all have the same keys, in order: the header (``rows`` not empty)."""
    write_table(path, list(rows[0]), [list(r.values()) for r in rows])


def poisson_interval(value: float, n_num: int, n_den: int) -> tuple[float, float]:
    """Approximate 95 % interval of value = k * n_num / n_den (log-ratio of two Poisson counts)."""
    if n_num == 0:
        return 0.0, float("nan")
    se = math.sqrt(1.0 / n_num + 1.0 / n_den)
    return value * math.exp(-1.96 * se), value * math.exp(1.96 * se)


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def readme(
    cohort: tuple[Patient, ...],
    notes: dict,
    seed: int,
    variant: str,
    styles: dict[str, Style],
    assignment: dict[str, str],
) -> str:
    """truth/README.md: every scenario with the numbers the truth tables imply."""
    p05, p06, p08 = notes.get("P05", {}), notes.get("P06", {}), notes.get("P08", {})
    lines = [
        "# Truth of the synthetic sample cohort",
        "",
        f"Generated by `scripts/make_sample_data.py --seed {seed} --variant {variant}`.",
        "Re-running it gives byte-identical files (digests in `../MANIFEST.sha256`); nothing",
        "here carries a timestamp. The FCS files and `labels/` are not committed:",
        "`make_sample_data.py --out DIR --ensure` (run by `make run` and `make test`)",
        "regenerates them from the seed and checks them against the manifest.",
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
        "- `tubes.tsv`: per tube, instrument style, FCS version, `$DATATYPE`, `$PnR`, byte",
        "  order, spillover keyword, `$TIMESTEP`, event count, junk count, the clog gap / burst",
        "  windows in seconds and the label file.",
        "- `styles.tsv`: per instrument style and tube, every setting (names, gains,",
        "  multipliers, spillover order).",
        "- `labels/<sample_id>_<tube>.npy`: one uint8 code per event in file order",
        "  (`numpy.load`); `label_codes.tsv` names each code, the tube it occurs in and the",
        "  `populations.tsv` rows it counts toward (`singlets`: every code but doublet and junk;",
        "  `events_in_file`: every code). Counting the codes reproduces `populations.tsv`.",
        "",
        "Chimerism: the truth uses CD56-sorted chimerism when the patient has it, else PB",
        "(configure `endpoints.chimerism_preference` as CD56 then PB to match).",
        "ALC: `cells/uL` x 1, `10^3/uL` x 1000, `10^9/L` x 1000.",
        "",
        "## Instrument styles",
        "",
        "Each patient is acquired on one style (`styles.tsv` lists every setting). Integer",
        "files (`$DATATYPE` I) hold whole channels clipped to [0, `$PnR` - 1], as the",
        "instruments that write them do: compensated negatives cannot be stored, noise below",
        "zero piles up at 0. Float files keep negatives (clipped at -5000 x range / 2^18).",
        "Lymphocyte FSC-A / SSC-A medians are given as fractions of the range; the",
        "multipliers scale the positive levels (on top of scaling with the range).",
        "",
        "| style | patients | file | range | names | spillover | lymph FSC-A, SSC-A |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in styles.values():
        pids = ", ".join(p.pid for p in cohort if assignment[p.pid] == st.key)
        ex = st.fluor["nk"]["CD56"]
        lines.append(
            f"| `{st.key}` | {pids} | {st.version[:3]} {st.version[3:]}, "
            f"{'float32' if st.datatype == 'F' else 'uint32'} "
            f"{'little' if st.byteorder == '<' else 'big'}-endian, `$CYT` {st.cytometer}, "
            f"`$TIMESTEP` {st.timestep:g} | 2^{int(math.log2(st.range))} | "
            f"CD56 in `$PnN` `{ex[0]}`, `$PnS` {f'`{ex[1]}`' if ex[1] else 'empty'}; {st.note} | "
            f"`{st.spill_keyword}`, listed in {st.spill_order} order | "
            f"{st.lymph_fsc:g}, {st.lymph_ssc:g} |"
        )
    lines += [
        "",
        "Fluorescence is simulated as true intensities (log-normal positive levels plus",
        "autofluorescence), mixed by the file's spillover matrix (observed = true @ S) with",
        "electronic and photon noise: compensate with observed @ inv(S). Scatter is linear.",
        "",
        f"Events per tube: {N_EVENTS:,} (nk and treg), except both tubes of the visit the",
        f"endpoint is read from (the third visit: day 14, 13 or 17), which have "
        f"{N_EVENTS_DAY14:,}.",
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
        f"  (on top of the normal ~{_fmt(p08.get('rate'))} events/s). The junk has lymphocyte"
        " scatter, is live and",
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


def generate(out: Path, seed: int = DEFAULT_SEED, variant: str = "default") -> dict[str, str]:
    """Write the whole cohort under ``out``; return {relative path: sha256}.

    The manifest is not written here (see :func:`write_manifest`). The lab variant writes
    its canonical sheets to ``canonical/`` (FCS paths ``../fcs/...``), the same content as the
    lab's own export in ``lab_export/``, and a config for each (:func:`write_lab_sheets`).
    """
    styles = STYLES_OF_VARIANT[variant]
    assignment = ASSIGNMENT[variant]
    lab = variant == "lab"
    sheet_dir = "canonical/" if lab else ""
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("fcs", "truth", "truth/labels") + (("canonical", "lab_export") if lab else ()):
        (out / sub).mkdir(exist_ok=True)
    cohort = COHORT_OF_VARIANT[variant]()
    written: list[Path] = []
    samples: list[list[object]] = []
    infusions: list[list[object]] = []
    cbc: list[list[object]] = []
    chim: list[list[object]] = []
    pops: list[list[object]] = []
    visits_rows: list[dict[str, object]] = []
    endpoint_rows: list[list[object]] = []
    tubes_rows: list[dict[str, object]] = []
    notes: dict[str, dict[str, Any]] = {}
    for pi, pat in enumerate(cohort):
        style = styles[assignment[pat.pid]]
        for k, d in enumerate(pat.infusion_days, start=1):
            infusions.append(
                [
                    pat.pid,
                    k,
                    (pat.first_infusion + timedelta(days=d)).isoformat(),
                    f"{int(pat.weight_kg * pat.dose_per_kg):d}",
                    f"{pat.weight_kg:g}",
                    pat.nk_donor,
                    pat.hsct_donor,
                ]
            )
        day14: Any = None
        for vi, visit in enumerate(pat.visits):
            sid = f"{pat.pid}-D{visit.day:02d}"
            when = pat.first_infusion + timedelta(days=visit.day)
            cbc.append([pat.pid, when.isoformat(), visit.alc, pat.alc_unit])
            for frac in ("PB", "CD56"):
                if frac in visit.chimerism:
                    chim.append([pat.pid, when.isoformat(), frac, f"{visit.chimerism[frac]:g}"])
            truths: dict[str, dict[str, int]] = {}
            for tube in TUBES_OF_VARIANT[variant]:
                rng = np.random.default_rng([seed, pi, vi, TUBE_STREAM[tube]])
                res = make_tube(rng, style, tube, visit)
                stem = sid if tube == "combined" else f"{sid}_{tube}"
                fname = f"fcs/{stem}.fcs"
                names, s = spill_listing(style, *spillover(style, tube))
                t0 = 9 * 3600 + 5 * 60 * vi + (120 if tube == "treg" else 0)
                t1 = t0 + int(res.duration_s)
                kw = {
                    "$CYT": style.cytometer,
                    "$DATE": f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year}",
                    "$BTIM": f"{t0 // 3600:02d}:{t0 // 60 % 60:02d}:{t0 % 60:02d}",
                    "$ETIM": f"{t1 // 3600:02d}:{t1 // 60 % 60:02d}:{t1 % 60:02d}",
                    "$TIMESTEP": f"{style.timestep:g}",
                    "$FIL": f"{stem}.fcs",
                    "$SMNO": sid,
                    "TUBE NAME": TUBE_NAME[tube],
                    style.spill_keyword: spill_text(names, s),
                    **style.extra,
                }
                write_fcs(
                    out / fname,
                    res.events,
                    res.pnn,
                    res.pns,
                    kw,
                    style.version,
                    style.byteorder,
                    style.datatype,
                    style.range,
                )
                label_file = f"truth/labels/{stem}.npy"
                with open(out / label_file, "wb") as fh:
                    np.save(fh, res.labels, allow_pickle=False)
                written += [out / fname, out / label_file]
                # one row per gate tree the file feeds (a combined file: nk and treg), each
                # with the truth counted on the same labels
                for tree in TREES_OF_TUBE[tube]:
                    truth = _truth_counts(tree, res.labels)
                    truths[tree] = truth
                    samples.append(
                        [
                            sid,
                            pat.pid,
                            when.isoformat(),
                            tree,
                            PANEL_OF_TUBE[tree],
                            PANEL_OF_TUBE[tree],
                            ("../" if lab else "") + fname,
                        ]
                    )
                    for popname, cnt in truth.items():
                        pops.append([sid, tree, popname, cnt])
                    tubes_rows.append(
                        {
                            "sample_id": sid,
                            "tube": tree,
                            "fcs_file": fname,
                            "instrument_style": style.key,
                            "cytometer": style.cytometer,
                            "fcs_version": style.version,
                            "datatype": style.datatype,
                            "range": style.range,
                            "byte_order": "little" if style.byteorder == "<" else "big",
                            "spillover_keyword": style.spill_keyword,
                            "timestep_s": f"{style.timestep:g}",
                            "events_in_file": len(res.events),
                            "junk_events": res.n_junk,
                            "gap_start_s": _fmt(res.gap[0]) if res.gap else "",
                            "gap_end_s": _fmt(res.gap[1]) if res.gap else "",
                            "burst_start_s": _fmt(res.burst[0]) if res.burst else "",
                            "burst_end_s": _fmt(res.burst[1]) if res.burst else "",
                            "label_file": label_file,
                        }
                    )
            nk_truth, treg_truth = truths["nk"], truths["treg"]
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
                {
                    "sample_id": sid,
                    "patient_id": pat.pid,
                    "collection_date": when.isoformat(),
                    "study_day": visit.day,
                    "nk_pct_of_lymphocytes": _fmt(nk_pct),
                    "nk_events": nk_truth["nk"],
                    "lymphocyte_events": nk_truth["live"],
                    "alc_per_ul": _fmt(alc),
                    "alc_value": visit.alc,
                    "alc_unit": pat.alc_unit,
                    "chimerism_fraction": used or "",
                    "donor_chimerism_pct": _fmt(donor_pct),
                    "donor_nk_per_ul": _fmt(donor),
                    "treg_pct_of_cd4": _fmt(treg_pct),
                    "ki67_pct_of_treg": _fmt(ki_pct),
                }
            )
            if WINDOW[0] <= visit.day <= WINDOW[1] and day14 is None:
                day14 = (sid, visit, nk_truth, alc, donor, donor_pct)
        same_donor = pat.nk_donor != "" and pat.nk_donor == pat.hsct_donor
        flags = "nk_donor_is_hsct_donor" if same_donor else ""
        if day14 is None:
            endpoint_rows.append(
                [pat.pid, "", "", "", "", "", "NOT_EVALUABLE", "", "no_sample_in_window", flags]
            )
            continue
        sid, visit, nk_truth, alc, donor, donor_pct = day14
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
            frac = donor_pct / 100.0
            notes[pat.pid]["junk"] = j
            notes[pat.pid]["pct_with_junk"] = pct
            notes[pat.pid]["donor_with_junk"] = alc * pct / 100.0 * frac
            notes[pat.pid]["rate"] = round((nk_truth["events_in_file"] - j) / 52.0)
        if len(visit.chimerism) > 1:
            notes[pat.pid]["donor_pb"] = donor / donor_pct * visit.chimerism["PB"]
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

    canonical = out / sheet_dir
    write_table(canonical / "samples.tsv", SHEET_COLUMNS["samples"], samples)
    write_table(canonical / "infusions.tsv", SHEET_COLUMNS["infusions"], infusions)
    write_table(canonical / "cbc.tsv", SHEET_COLUMNS["cbc"], cbc)
    write_table(canonical / "chimerism.tsv", SHEET_COLUMNS["chimerism"], chim)
    write_table(out / "truth/populations.tsv", ["sample_id", "tube", "population", "events"], pops)
    write_records(out / "truth/visits.tsv", visits_rows)
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
    write_records(out / "truth/tubes.tsv", tubes_rows)
    write_records(
        out / "truth/styles.tsv", style_rows(styles, assignment, TUBES_OF_VARIANT[variant])
    )
    write_table(
        out / "truth/label_codes.tsv", ["code", "label", "tube", "populations"], label_codes_rows()
    )
    text = (
        lab_readme(cohort, notes, seed, styles, assignment)
        if lab
        else readme(cohort, notes, seed, variant, styles, assignment)
    )
    (out / "truth" / "README.md").write_text(text, encoding="utf-8")
    written += [out / sheet_dir / n for n in SHEETS]
    written += [out / n for n in TRUTH_FILES]
    if lab:
        written += write_lab_sheets(out, samples, infusions, cbc, chim)
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(written)}


SHEET_COLUMNS = {
    "samples": [
        "sample_id",
        "patient_id",
        "collection_date",
        "tube",
        "panel",
        "gating",
        "fcs_file",
    ],
    "infusions": [
        "patient_id",
        "infusion_number",
        "infusion_date",
        "cells_infused",
        "body_weight_kg",
        "nk_donor_id",
        "hsct_donor_id",
    ],
    "cbc": ["patient_id", "date", "alc_value", "alc_unit"],
    "chimerism": ["patient_id", "date", "fraction", "donor_pct"],
}
SHEETS = tuple(f"{key}.tsv" for key in SHEET_COLUMNS)
TRUTH_FILES = (
    "truth/populations.tsv",
    "truth/visits.tsv",
    "truth/endpoints.tsv",
    "truth/tubes.tsv",
    "truth/styles.tsv",
    "truth/label_codes.tsv",
    "truth/README.md",
)


def style_rows(
    styles: dict[str, Style], assignment: dict[str, str], tubes: tuple[str, ...] = ("nk", "treg")
) -> list[dict[str, object]]:
    """truth/styles.tsv: one row per style, tube and marker."""
    rows: list[dict[str, object]] = []
    for st in styles.values():
        pids = ",".join(sorted(p for p, k in assignment.items() if k == st.key))
        for tube in tubes:
            for marker, (pnn, pns, mult) in st.fluor[tube].items():
                rows.append(
                    {
                        "instrument_style": st.key,
                        "patients": pids,
                        "tube": tube,
                        "cytometer": st.cytometer,
                        "fcs_version": st.version,
                        "datatype": st.datatype,
                        "range": st.range,
                        "byte_order": "little" if st.byteorder == "<" else "big",
                        "spillover_keyword": st.spill_keyword,
                        "spillover_order": st.spill_order,
                        "timestep_s": f"{st.timestep:g}",
                        "lymph_fsc_a_median": f"{st.lymph_fsc * st.range:.0f}",
                        "lymph_ssc_a_median": f"{st.lymph_ssc * st.range:.0f}",
                        "lymph_fsc_a_frac": f"{st.lymph_fsc:g}",
                        "lymph_ssc_a_frac": f"{st.lymph_ssc:g}",
                        "fsc_h_ratio": f"{st.fsc_h_ratio:g}",
                        "scatter_pnn": ",".join(st.scatter[m][0] for m in SCATTER),
                        "marker": marker,
                        "pnn": pnn,
                        "pns": pns,
                        "positive_multiplier": f"{mult:g}",
                    }
                )
    return rows


# ------------------------------------------------------------------------------------------
# The lab variant: the same cohort as a lab exports it, and a config for each shape
# ------------------------------------------------------------------------------------------
LAB_DIR = "data/lab"  # where the lab variant's configs expect it, relative to the run directory
PROTOCOL_DAYS = (0, 7, 14, 28)  # the lab's visit labels ("Day 14" for a draw on day 13)
LAB_FRACTION = {"CD56": "CD56+", "PB": "whole blood"}  # aliases of config/vocab
# Per sheet: nkflow column -> the lab export's column (config_lab.yaml's sheet_format columns).
LAB_COLUMNS = {
    "samples": {
        "sample_id": "specimen_id",
        "patient_id": "patient",
        "collection_date": "sample_date",
        "tube": "tubes",
        "panel": "panels",
        "gating": "gate_trees",
        "fcs_file": "fcs",
    },
    "infusions": {
        "patient_id": "patient",
        "infusion_number": "dose_no",
        "infusion_date": "infusion_date",
        "cells_per_kg": "cells_per_kg",
        "body_weight_kg": "weight_kg",
    },
    "cbc": {
        "patient_id": "patient",
        "date": "sample_date",
        "alc_value": "alc",
        "alc_unit": "alc_unit",
    },
    "chimerism": {
        "patient_id": "patient",
        "date": "sample_date",
        "fraction": "cell_fraction",
        "donor_pct": "pct_donor",
    },
}
# Header of each export file; 'visit' is the lab's own column, not mapped (nkflow ignores it).
LAB_HEADER = {
    "samples": [
        "specimen_id",
        "patient",
        "visit",
        "sample_date",
        "tubes",
        "panels",
        "gate_trees",
        "fcs",
    ],
    "infusions": ["patient", "dose_no", "infusion_date", "weight_kg", "cells_per_kg"],
    "cbc": ["patient", "sample_date", "alc", "alc_unit"],
    "chimerism": ["patient", "sample_date", "cell_fraction", "pct_donor"],
}


def lab_date(iso: str) -> str:
    """``2024-02-06`` as the lab writes it: ``06-Feb-2024``."""
    d = date.fromisoformat(iso)
    return f"{d.day:02d}-{MONTHS[d.month - 1].title()}-{d.year}"


def lab_dose_per_kg(cells_infused: str, weight_kg: str) -> str:
    """Cells per kg as the lab writes it (``3.0E+06``), exactly total / weight."""
    per_kg = float(cells_infused) / float(weight_kg)
    text = f"{per_kg:.1E}"
    if float(text) != per_kg or float(text) * float(weight_kg) != float(cells_infused):
        raise ValueError(f"dose {cells_infused} / {weight_kg} kg is not exact as {text}")
    return text


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    r"""A comma-separated export (quoted only where a value needs it), ``\n`` line ends."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([r[c] for c in header])


def lab_export_rows(
    samples: list[list[object]],
    infusions: list[list[object]],
    cbc: list[list[object]],
    chim: list[list[object]],
) -> dict[str, list[dict[str, str]]]:
    """The canonical sheets' rows as the lab's export.

    One sample row per draw (its tubes, panels and gate trees joined with ';'), dd-Mon-YYYY dates,
    cells per kg with the weight and no donor ids, the lab's fraction names.
    """
    sheets = {"samples": samples, "infusions": infusions, "cbc": cbc, "chimerism": chim}
    canon = {
        key: [dict(zip(SHEET_COLUMNS[key], map(str, r), strict=True)) for r in rows]
        for key, rows in sheets.items()
    }
    first: dict[str, date] = {}
    out: dict[str, list[dict[str, str]]] = {key: [] for key in LAB_COLUMNS}
    for r in canon["infusions"]:
        if r["nk_donor_id"] or r["hsct_donor_id"]:
            raise ValueError(f"{r['patient_id']}: the lab export has no donor ids")
        d = date.fromisoformat(r["infusion_date"])
        first[r["patient_id"]] = min(first.get(r["patient_id"], d), d)
        out["infusions"].append(
            {
                "patient": r["patient_id"],
                "dose_no": r["infusion_number"],
                "infusion_date": lab_date(r["infusion_date"]),
                "weight_kg": r["body_weight_kg"],
                "cells_per_kg": lab_dose_per_kg(r["cells_infused"], r["body_weight_kg"]),
            }
        )
    draws: dict[str, list[dict[str, str]]] = {}
    for r in canon["samples"]:
        draws.setdefault(r["sample_id"], []).append(r)
    for sid, rows in draws.items():
        r = rows[0]
        if {x["fcs_file"] for x in rows} != {r["fcs_file"]}:
            raise ValueError(f"{sid}: the tubes of one draw are in different files")
        day = (date.fromisoformat(r["collection_date"]) - first[r["patient_id"]]).days
        out["samples"].append(
            {
                "specimen_id": sid,
                "patient": r["patient_id"],
                "visit": f"Day {min(PROTOCOL_DAYS, key=lambda d: abs(d - day))}",
                "sample_date": lab_date(r["collection_date"]),
                "tubes": ";".join(x["tube"] for x in rows),
                "panels": ";".join(x["panel"] for x in rows),
                "gate_trees": ";".join(x["gating"] for x in rows),
                "fcs": r["fcs_file"],
            }
        )
    for key in ("cbc", "chimerism"):
        for r in canon[key]:
            lab_r = {LAB_COLUMNS[key][k]: v for k, v in r.items()}
            lab_r["sample_date"] = lab_date(r["date"])
            if key == "chimerism":
                lab_r["cell_fraction"] = LAB_FRACTION[r["fraction"]]
            out[key].append(lab_r)
    return out


def _config_text(title: list[str], sheets: dict[str, str], results: str, extra: list[str]) -> str:
    lines = [f"# {t}" if t else "#" for t in title]
    lines += ["sheets:"] + [f"  {k}: {v}" for k, v in sheets.items()]
    lines += ["panels:"] + [f"  {p}: config/panels/{p}.yaml" for p in PANEL_OF_TUBE.values()]
    lines += ["gating:"] + [f"  {p}: config/gating/{p}.yaml" for p in PANEL_OF_TUBE.values()]
    lines += extra + [f"results: {results}", ""]
    return "\n".join(lines)


def lab_configs() -> dict[str, str]:
    """``config.yaml`` (the canonical sheets) and ``config_lab.yaml`` (the lab's export)."""
    run = [
        "Paths are relative to the run directory (the repository root), with this cohort in",
        f"{LAB_DIR}:",
        f"  scripts/make_sample_data.py --variant lab --out {LAB_DIR} --ensure",
        f"  snakemake --cores 2 --configfile {LAB_DIR}/CONFIG",
        "Keys not given here take the defaults of config/config.yaml.",
    ]
    canonical = _config_text(
        [
            "The lab-export cohort (scripts/make_sample_data.py --variant lab) in nkflow's own",
            "sheet format: TSV, ISO dates, one row per tube (each combined FCS file is listed",
            "twice, once per gate tree), total NK cells infused, canonical chimerism fractions,",
            "empty donor ids. config_lab.yaml reads the same data as the lab exported it.",
            *(t.replace("CONFIG", "config.yaml") for t in run),
        ],
        {key: f"{LAB_DIR}/canonical/{key}.tsv" for key in SHEET_COLUMNS},
        "results/lab_canonical",
        [],
    )
    fmt = ["sheet_format:"]
    for key, cols in LAB_COLUMNS.items():
        pairs = ", ".join(f"{k}: {v}" for k, v in cols.items())
        fmt += [f"  {key}:", f"    columns: {{{pairs}}}"]
    export = _config_text(
        [
            "The lab-export cohort (scripts/make_sample_data.py --variant lab) read as the lab",
            "exported it (lab_export/): CSV, dates as 06-Feb-2024, the lab's own column names",
            "(mapped below: nkflow column: the lab's column), one row per blood draw feeding",
            "both gate trees (tubes nk;treg), cells per kg with the body weight, no donor ids,",
            "fractions 'CD56+' and 'whole blood'. Same data as config.yaml's canonical sheets:",
            "the endpoint tables of the two runs are identical.",
            *(t.replace("CONFIG", "config_lab.yaml") for t in run),
        ],
        {key: f"{LAB_DIR}/lab_export/{key}.csv" for key in LAB_COLUMNS},
        "results/lab_export",
        fmt,
    )
    return {"config.yaml": canonical, "config_lab.yaml": export}


def write_lab_sheets(
    out: Path,
    samples: list[list[object]],
    infusions: list[list[object]],
    cbc: list[list[object]],
    chim: list[list[object]],
) -> list[Path]:
    """``lab_export/*.csv`` and both configs; returns the paths written."""
    written = []
    for key, rows in lab_export_rows(samples, infusions, cbc, chim).items():
        path = out / "lab_export" / f"{key}.csv"
        write_csv(path, LAB_HEADER[key], rows)
        written.append(path)
    for name, text in lab_configs().items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written


def lab_readme(
    cohort: tuple[Patient, ...],
    notes: dict,
    seed: int,
    styles: dict[str, Style],
    assignment: dict[str, str],
) -> str:
    """truth/README.md of the lab variant."""
    lines = [
        "# Truth of the lab-export cohort",
        "",
        f"Generated by `scripts/make_sample_data.py --seed {seed} --variant lab`; byte-identical",
        "on every run (digests in `../MANIFEST.sha256`). The FCS files and `labels/` are not",
        f"committed: `make_sample_data.py --variant lab --out {LAB_DIR} --ensure` regenerates",
        "them.",
        "",
        "## What it is for",
        "",
        "The same cohort in two shapes: nkflow's canonical sheets (`canonical/*.tsv`,",
        "`config.yaml`) and a lab's own export (`lab_export/*.csv`, `config_lab.yaml`):",
        "",
        "| | canonical | lab export |",
        "|---|---|---|",
        "| format | TSV | CSV |",
        "| dates | 2024-02-06 | 06-Feb-2024 |",
        "| samples | one row per tube: each combined file twice (tube nk, panel nk_v1; tube treg, "
        "panel treg_v1) | one row per draw: tubes `nk;treg`, panels `nk_v1;treg_v1`, gate trees "
        "`nk_v1;treg_v1` |",
        "| dose | `cells_infused` (total) and `body_weight_kg` | `cells_per_kg` and `weight_kg` |",
        "| donor ids | columns present, cells empty | no columns |",
        "| chimerism fractions | `CD56`, `PB` | `CD56+`, `whole blood` |",
        "| column names | nkflow's | the lab's (`patient`, `sample_date`, `alc`, ...), mapped "
        "in `config_lab.yaml` `sheet_format:` |",
        "",
        "Both describe the same FCS files (`fcs/<sample_id>.fcs`, `../fcs/...` from either sheet",
        "folder), so both runs give identical endpoint tables. Doses are exact: total = per kg x",
        "weight in decimal and in binary floating point. Without donor ids, whether the NK donor",
        "is the HSCT donor is unknown. The export's own `visit` column (`Day 14` for the",
        "day-13 draw) is not mapped: nkflow computes the study day from the dates.",
        "",
        "## The combined tube",
        "",
        "Every draw is ONE FCS file stained with both panels: the markers of nk_v1 and treg_v1,",
        f"one channel each (CD3 and viability once), {len(COMBINED_MARKERS)} fluorescence detectors"
        " with spillover",
        "across all of them. Every cell type carries a phenotype on every marker, from the two",
        "tubes' own phenotypes (`COMBINED_PHENO` in the generator): NK cells CD3- CD56+ CD4-",
        "CD8-, T-cell subsets CD45+ CD3+ with the treg tube's CD4/CD8/CD25/CD127/FoxP3 levels",
        "(Treg CD4+ CD25hi CD127lo FoxP3+, ~30 % Ki-67+), NKT-like cells CD3+ CD56+ CD8+, B",
        "cells CD19+, monocytes CD14+ CD4dim. Lymphocyte shares: NK, B (8 %) and NKT-like (4 %)",
        "as in the nk tube, the T-cell mix as in the treg tube (its CD8 share holding the",
        "NKT-like cells).",
        "Debris 7 %, doublets 4 %, dead cells 5 %, granulocytes 25 %, monocytes 7 %.",
        "",
        "`populations.tsv` and `tubes.tsv` have one row per (sample, gate tree): `nk` and `treg`",
        "rows of a draw count the same file's labels (`labels/<sample_id>.npy`; codes in",
        "`label_codes.tsv`, whose `tube` column names the separate tube a label occurs in; a",
        "combined file has the labels of both). Events per file: "
        f"{N_EVENTS:,}, {N_EVENTS_DAY14:,} for the",
        "day-14 draw.",
        "",
        "## Instrument styles",
        "",
        "| style | patients | combined tube detectors ($PnN: $PnS) |",
        "|---|---|---|",
    ]
    for st in styles.values():
        pids = ", ".join(p.pid for p in cohort if assignment[p.pid] == st.key)
        dets = ", ".join(f"`{n}`: `{s}`" for n, s, _ in st.fluor["combined"].values())
        lines.append(f"| `{st.key}` ({st.cytometer}) | {pids} | {dets} |")
    lines += [
        "",
        "## Scenarios",
        "",
        "| patient | infusions (study day) | cells/kg | scenario | donor NK/uL (truth) |",
        "|---|---|---|---|---|",
    ]
    for p in cohort:
        days = ", ".join(str(d) for d in p.infusion_days)
        donor = _fmt(notes.get(p.pid, {}).get("donor"))
        lines.append(f"| {p.pid} | {days} | {p.dose_per_kg:.1e} | {p.scenario} | {donor or '-'} |")
    lines += [
        "",
        "The files of `truth/` mean what they mean for data/sample (see its README).",
        "",
    ]
    return "\n".join(lines)


def manifest_text(digests: dict[str, str]) -> str:
    """The text of ``MANIFEST.sha256`` (``sha256sum -c`` format, sorted by path)."""
    return "".join(f"{h}  {name}\n" for name, h in sorted(digests.items()))


def write_manifest(out: Path, digests: dict[str, str]) -> None:
    """Write ``MANIFEST.sha256`` (:func:`manifest_text`)."""
    (out / MANIFEST).write_text(manifest_text(digests), encoding="utf-8")


def read_manifest(out: Path) -> dict[str, str]:
    """The sha256 of every generated file, by relative path, from ``out``'s manifest."""
    digests = {}
    for line in (out / MANIFEST).read_text(encoding="utf-8").splitlines():
        if line.strip():
            h, name = line.split(None, 1)
            digests[name.strip()] = h
    return digests


def stale_files(out: Path, digests: dict[str, str]) -> list[str]:
    """Files of the manifest that are missing under ``out`` or whose sha256 differs."""
    bad = []
    for name, h in sorted(digests.items()):
        p = out / name
        if not p.is_file() or sha256_file(p) != h:
            bad.append(name)
    return bad


def ensure(out: Path, seed: int, variant: str) -> int:
    """Regenerate ``out`` when a file of its manifest is missing or differs; 0 when in order."""
    if not (out / MANIFEST).is_file():
        print(
            f"error: {out / MANIFEST} not found; run without --ensure to write it", file=sys.stderr
        )
        return 1
    want = read_manifest(out)
    stale = stale_files(out, want)
    if not stale:
        print(f"{out}: all {len(want)} files match {MANIFEST}")
        return 0
    t0 = time.perf_counter()
    print(f"{out}: {len(stale)} of {len(want)} files missing or changed; generating ...")
    got = generate(out, seed, variant)
    differ = sorted({n for n in want if got.get(n) != want[n]} | {n for n in got if n not in want})
    if differ:
        print(
            f"error: regenerating {out} (seed {seed}, variant {variant}) does not reproduce "
            f"{MANIFEST}: {len(differ)} file(s) differ: {', '.join(differ[:8])}"
            + (" ..." if len(differ) > 8 else "")
            + ". If the generator changed on purpose, run "
            "`scripts/make_sample_data.py --out DIR` (without --ensure) and commit the sheets and "
            "the manifest.",
            file=sys.stderr,
        )
        return 1
    print(f"generated {len(got)} files in {time.perf_counter() - t0:.1f} s; manifest matches")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The generator's command (``scripts/make_sample_data.py``); returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="default: the variant's seed")
    ap.add_argument("--variant", choices=sorted(ASSIGNMENT), default="default")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"default: data/sample ({LAB_DIR} for --variant lab)",
    )
    ap.add_argument(
        "--ensure",
        action="store_true",
        help="generate only if a file of DIR/MANIFEST.sha256 is missing or differs; "
        "fail if the regeneration does not reproduce the manifest",
    )
    args = ap.parse_args(argv)
    seed = SEED_OF_VARIANT[args.variant] if args.seed is None else args.seed
    if args.out is None:
        root = Path(__file__).parents[1]
        args.out = root / (LAB_DIR if args.variant == "lab" else "data/sample")
    if args.ensure:
        return ensure(args.out, seed, args.variant)
    t0 = time.perf_counter()
    digests = generate(args.out, seed, args.variant)
    write_manifest(args.out, digests)
    size = sum((args.out / k).stat().st_size for k in digests)
    print(
        f"wrote {len(digests)} files, {size / 1e6:.2f} MB, to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
