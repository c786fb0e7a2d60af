"""Tables a trial statistician loads without cleaning.

A tidy long table of every measurement, an SDTM-style cell phenotype (CP) dataset, and the data
dictionary of every exported table.

Contract
--------
* Every exported table is declared once as a :class:`nkflow.columns.Table`; its writer takes
  header, order and cell format from the declaration and :func:`data_dictionary` lists the same
  declarations, so the dictionary cannot drift from the files. ``visits.tsv`` and
  ``endpoints.tsv`` are written in the cell formats of :mod:`nkflow.clinical.visits`: their
  declarations (:data:`VISITS`, :data:`ENDPOINTS`) take the types from there, and names, order
  and definitions from the one list of each table's columns (``VISIT_DEFINITIONS`` there,
  :data:`nkflow.clinical.endpoints.ENDPOINT_DEFINITIONS`).
* :func:`build_measurements` and :func:`build_cp` are pure functions of the typed visits
  (:func:`nkflow.clinical.visits.read_visits`) and the settings. Every value is the visits.tsv value
  (or, for the CD56bright/dim counts, total NK/uL x subset % / 100): no new number is made.
* :func:`nkflow.stages.run_readout` (the ``readout`` rule) writes ``kinetics.tsv`` and the
  exports directory; bytes are unchanged for unchanged inputs.
* How closely the CP dataset follows SDTMIG v3.4: ``docs/exports.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nkflow import tables
from nkflow.clinical import endpoints as ep
from nkflow.clinical import visits as vis
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.clinical.kinetics import (
    KINETICS,
    KINETICS_SUMMARY,
    MEASURE_NAMES,
    SUBSET_PCT,
    measure_value,
)
from nkflow.columns import TYPES, Column, Table, declare_from_writer, table_text

logger = logging.getLogger(__name__)

#: the column types of visits.tsv and endpoints.tsv, from the kinds their writer formats by
_TYPES = {
    t: {c for c, k in vis.KINDS.items() if k == t} for t in ("integer", "number", "boolean", "date")
}


VISITS = declare_from_writer(
    "visits",
    "cohort/visits.tsv",
    "one per sample (visit), sorted by patient_id, collection_date, sample_id",
    vis.VISIT_COLUMNS,
    _TYPES,
    vis.VISIT_DEFINITIONS,
)
ENDPOINTS = declare_from_writer(
    "endpoints",
    "cohort/endpoints.tsv",
    "one per patient of the infusion sheet, sorted by patient_id",
    ep.ENDPOINT_COLUMNS,
    _TYPES,
    ep.ENDPOINT_DEFINITIONS,
)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Parameter:
    """A measurement of the long table (a visits.tsv column, or a product of two).

    ``cp`` is (CPTESTCD, CPTEST, CPSBMRKS, CPCELSTA, CPCSMRKS, CPMRKSTR) when the measurement is
    a cell-phenotype finding, else None.
    """

    name: str
    unit: str
    tube_role: str
    method: str
    cp: tuple[str, str, str, str, str, str] | None = None


_NK = "SSCloCD3-CD56+Viability-"
_BRIGHT = "SSCloCD3-CD56hiCD16-Viability-"
_DIM = "SSCloCD3-CD56loCD16+Viability-"
_CD4 = "SSCloCD3+CD4+Viability-"
_TREG = "SSCloCD3+CD4+CD25hiCD127loFoxP3+Viability-"
_TREGKI = "SSCloCD3+CD4+CD25hiCD127loFoxP3+Ki67+Viability-"
_KI = ("PROLIFERATING", "Ki67+")
#: the populations a CP test's name can start with, most specific first (the others are nk's)
_SUBSET_GATES = ("nk_cd56bright", "nk_cd56dim", "treg_ki67", "treg")

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("alc_per_ul", "cells/uL", "cbc", "CBC absolute lymphocyte count"),
    Parameter("lymphocyte_events", "events", "nk", "events in the lymphocyte denominator gate"),
    Parameter("nk_events", "events", "nk", "events in the nk gate"),
    Parameter(
        "nk_pct_of_lymphocytes",
        "%",
        "nk",
        "100 x nk events / lymphocyte events",
        ("NKLY", "NK Cells/Lymphocytes", "", "", "", f"{_NK}/SSCloViability-"),
    ),
    Parameter(
        "nk_cd56bright_pct_of_nk",
        "%",
        "nk",
        "100 x CD56bright events / nk events",
        ("NKBRTNK", "NK Cells Sub/NK Cells", "CD56hiCD16-", "", "", f"{_BRIGHT}/{_NK}"),
    ),
    Parameter(
        "nk_cd56dim_pct_of_nk",
        "%",
        "nk",
        "100 x CD56dim events / nk events",
        ("NKDIMNK", "NK Cells Sub/NK Cells", "CD56loCD16+", "", "", f"{_DIM}/{_NK}"),
    ),
    Parameter("bead_events", "events", "nk", "events in the counting-bead gate"),
    Parameter(
        "total_nk_per_ul",
        "cells/uL",
        "nk",
        "absolute count (count_method)",
        ("NK", "NK Cells", "", "", "", _NK),
    ),
    Parameter(
        "nk_cd56bright_per_ul",
        "cells/uL",
        "nk",
        "total_nk_per_ul x nk_cd56bright_pct_of_nk / 100",
        ("NKBRT", "NK Cells Sub", "CD56hiCD16-", "", "", _BRIGHT),
    ),
    Parameter(
        "nk_cd56dim_per_ul",
        "cells/uL",
        "nk",
        "total_nk_per_ul x nk_cd56dim_pct_of_nk / 100",
        ("NKDIM", "NK Cells Sub", "CD56loCD16+", "", "", _DIM),
    ),
    Parameter("donor_chimerism_pct", "%", "chimerism", "% donor by STR (chimerism_fraction)"),
    Parameter("donor_chimerism_sd", "%", "chimerism", "SD of % donor across STR loci"),
    Parameter(
        "donor_nk_per_ul",
        "cells/uL",
        "nk",
        "total_nk_per_ul x donor_chimerism_pct / 100",
        ("NKDON", "NK Cells, Donor-Derived", "", "", "", _NK),
    ),
    Parameter("cd4_events", "events", "treg", "events in the cd4 gate"),
    Parameter("treg_events", "events", "treg", "events in the treg gate"),
    Parameter("treg_ki67_events", "events", "treg", "events in the treg_ki67 gate"),
    Parameter(
        "treg_pct_of_cd4",
        "%",
        "treg",
        "100 x treg events / cd4 events",
        ("TREGCD4", "TLym Reg/TLym Help", "", "", "", f"{_TREG}/{_CD4}"),
    ),
    Parameter(
        "treg_ki67_pct_of_cd4",
        "%",
        "treg",
        "100 x treg_ki67 events / cd4 events",
        ("TREGKCD4", "TLym Reg Sub/TLym Help", "", *_KI, f"{_TREGKI}/{_CD4}"),
    ),
    Parameter(
        "treg_ki67_pct_of_treg",
        "%",
        "treg",
        "100 x treg_ki67 events / treg events",
        ("TREGKTRG", "TLym Reg Sub/TLym Reg", "", *_KI, f"{_TREGKI}/{_TREG}"),
    ),
    Parameter(
        "treg_per_ul",
        "cells/uL",
        "treg",
        "absolute count (count_method)",
        ("TREG", "TLym Reg", "", "", "", _TREG),
    ),
    Parameter(
        "treg_ki67_per_ul",
        "cells/uL",
        "treg",
        "absolute count (count_method)",
        ("TREGKI", "TLym Reg Sub", "", *_KI, _TREGKI),
    ),
)
#: the parameters measured with one count method only
_ONLY_WITH = {"bead_events": "single_platform_beads", "alc_per_ul": "dual_platform"}


def parameter_value(p: Parameter, visit: Mapping[str, Any]) -> Any:
    """The value of ``p`` at one visit (None when visits.tsv has none)."""
    if p.name in SUBSET_PCT:
        total, pct = visit.get("total_nk_per_ul"), visit.get(SUBSET_PCT[p.name])
        return None if total is None or pct is None else float(total) * float(pct) / 100.0
    return visit.get(p.name)


def applicable(p: Parameter, count_method: str) -> bool:
    """Whether ``p`` is measured at all with ``count_method`` (beads or the CBC)."""
    return _ONLY_WITH.get(p.name, count_method) == count_method


# --------------------------------------------------------------------------- planned visits


def planned_visits(
    visits: Sequence[Mapping[str, Any]], s: EndpointSettings
) -> dict[str, int | None]:
    """sample_id -> the planned study day it stands for (None: unscheduled).

    For each planned day in schedule order, the sample chosen as for the day-14 endpoint
    (within ``visit_schedule_tolerance_days``, closest, then ``tie_rule``, then sample_id) among
    the patient's samples not yet assigned. On the day alone, never the result.
    """
    tol = s.visit_schedule_tolerance_days
    out: dict[str, int | None] = {str(v["sample_id"]): None for v in visits}
    by_patient: dict[str, list[Mapping[str, Any]]] = {}
    for v in visits:
        by_patient.setdefault(str(v["patient_id"]), []).append(v)
    for rows in by_patient.values():
        pool = [dict(r) for r in rows]
        for day in sorted(int(d) for d in s.visit_schedule_days):
            chosen, _ = ep.choose_visit(pool, day, tol, tol, s.tie_rule)
            if chosen is not None:
                out[str(chosen["sample_id"])] = day
                pool = [r for r in pool if r["sample_id"] != chosen["sample_id"]]
    return out


def visit_names(
    visits: Sequence[Mapping[str, Any]], s: EndpointSettings
) -> dict[str, tuple[str, float, int | None]]:
    """sample_id -> (VISIT, VISITNUM, planned day) of every visit.

    A planned visit is named like ``DAY 14`` and numbered by its 1-based position in the
    schedule; an unscheduled sample is ``UNSCHEDULED``, numbered after the planned visit before
    it (``2.1``, ``2.2``; ``0.1`` before the first).
    """
    planned = planned_visits(visits, s)
    schedule = sorted(int(d) for d in s.visit_schedule_days)
    out: dict[str, tuple[str, float, int | None]] = {}
    rows = sorted(visits, key=lambda v: (str(v["patient_id"]), _day_key(v), str(v["sample_id"])))
    last_num: dict[str, float] = {}
    extra: dict[tuple[str, float], int] = {}
    for v in rows:
        sid, pid = str(v["sample_id"]), str(v["patient_id"])
        day = planned[sid]
        if day is not None:
            num = float(schedule.index(day) + 1)
            last_num[pid] = num
            out[sid] = (f"DAY {day}", num, day)
        else:
            base = last_num.get(pid, 0.0)
            k = extra[(pid, base)] = extra.get((pid, base), 0) + 1
            out[sid] = ("UNSCHEDULED", round(base + k / 10.0, 3), None)
    return out


def _day_key(v: Mapping[str, Any]) -> tuple[bool, int]:
    d = v.get("study_day")
    return (d is None, int(d) if d is not None else 0)


# --------------------------------------------------------------------------- long table

MEASUREMENTS = Table(
    "measurements",
    "cohort/exports/measurements.tsv",
    "one per visit and measurement (also .csv), sorted by patient_id, collection_date, "
    "sample_id, then parameter order",
    (
        Column("patient_id", "id", "", "patient"),
        Column("sample_id", "id", "", "visit (blood draw) id"),
        Column("collection_date", "date", "", "date of the draw"),
        Column("study_day", "integer", "day", "collection_date - date of the day-0 infusion"),
        Column(
            "visit",
            "text",
            "",
            "planned visit (endpoints.visit_schedule_days) the sample stands for, or UNSCHEDULED",
        ),
        Column(
            "parameter",
            "text",
            "",
            "what was measured (the visits.tsv column; nk_cd56bright_per_ul and "
            "nk_cd56dim_per_ul are total_nk_per_ul x subset % / 100)",
            tuple(p.name for p in PARAMETERS),
        ),
        Column("value", "number", "see unit", "the value, as in visits.tsv (empty: none)"),
        Column(
            "lower95", "number", "see unit", "lower bound of its 95 % interval, when it has one"
        ),
        Column(
            "upper95", "number", "see unit", "upper bound of its 95 % interval, when it has one"
        ),
        Column(
            "unit",
            "text",
            "",
            "unit of value, lower95 and upper95",
            tuple(sorted({p.unit for p in PARAMETERS})),
        ),
        Column("method", "text", "", "how the value was obtained"),
        Column(
            "source",
            "text",
            "",
            "the tube (nk, treg), the CBC or the chimerism result",
            ("nk", "treg", "cbc", "chimerism"),
        ),
        Column(
            "provenance",
            "text",
            "",
            "where the value can be checked: '<sample_id>/<tube> <FCS file>' for a tube, "
            "'cbc <patient_id> <date>' for the ALC, 'chimerism <patient_id> <date> <fraction> "
            "<source>' for % donor",
        ),
        Column("visit_status", "text", "", "status of the visit in visits.tsv", vis.STATUS),
        Column("visit_reason", "codes", "", "reason codes of the visit in visits.tsv"),
    ),
)


def _provenance(p: Parameter, v: Mapping[str, Any], s: EndpointSettings) -> tuple[str, str]:
    """(source, provenance key) of a value of ``p`` at visit ``v``."""
    sid, pid = v["sample_id"], v["patient_id"]
    if p.tube_role == "cbc":
        when = v.get("alc_date")
        return "cbc", f"cbc {pid} {when.isoformat() if when else 'none'}"
    if p.tube_role == "chimerism":
        when = v.get("chimerism_date")
        return "chimerism", (
            f"chimerism {pid} {when.isoformat() if when else 'none'} "
            f"{v.get('chimerism_fraction') or 'none'} {v.get('chimerism_source') or 'none'}"
        )
    tube = s.tubes[p.tube_role]
    fcs = v.get("nk_tube_fcs") if p.tube_role == "nk" else None
    return p.tube_role, f"{sid}/{tube}" + (f" {fcs}" if fcs else "")


def _method(p: Parameter, v: Mapping[str, Any]) -> str:
    if p.name == "alc_per_ul":
        src = f"{v.get('alc_source_value') or ''} {v.get('alc_source_unit') or ''}".strip()
        return f"{p.method} ({src or 'none'})"
    if p.method.startswith("absolute count"):
        return f"absolute count, {v.get('count_method')}"
    if p.name in ("lymphocyte_events",):
        return f"{p.method} ({v.get('lymphocyte_population')})"
    return p.method


def build_measurements(config: dict[str, Any], visits: Any) -> list[dict[str, Any]]:
    """One record per visit and applicable parameter (columns of :data:`MEASUREMENTS`)."""
    s = EndpointSettings.from_config(config)
    rows = vis.visit_records(visits)
    names = visit_names(rows, s)
    out = []
    for v in sorted(rows, key=lambda r: (r["patient_id"], r["collection_date"], r["sample_id"])):
        for p in PARAMETERS:
            if not applicable(p, str(v.get("count_method") or s.absolute_count_method)):
                continue
            source, prov = _provenance(p, v, s)
            out.append(
                {
                    "patient_id": v["patient_id"],
                    "sample_id": v["sample_id"],
                    "collection_date": v["collection_date"],
                    "study_day": v.get("study_day"),
                    "visit": names[str(v["sample_id"])][0],
                    "parameter": p.name,
                    "value": parameter_value(p, v),
                    "lower95": v.get(f"{p.name}_lo95"),
                    "upper95": v.get(f"{p.name}_hi95"),
                    "unit": p.unit,
                    "method": _method(p, v),
                    "source": source,
                    "provenance": prov,
                    "visit_status": v.get("status"),
                    "visit_reason": v.get("reason"),
                }
            )
    return out


# --------------------------------------------------------------------------- SDTM-style CP


def _cp(name: str, kind: str, label: str, allowed: tuple[str, ...] = ()) -> Column:
    return Column(name, kind, "", label, allowed)


CP = Table(
    "cp",
    "cohort/exports/cp.tsv",
    "one per visit and cell-phenotype test (also .csv), sorted by USUBJID, CPDTC, test order; "
    "modelled on the SDTMIG v3.4 CP domain (docs/exports.md)",
    (
        _cp("STUDYID", "id", "Study Identifier (endpoints.study_id)"),
        _cp("DOMAIN", "text", "Domain Abbreviation", ("CP",)),
        _cp("USUBJID", "text", "Unique Subject Identifier: '<STUDYID>-<patient_id>'"),
        _cp("CPSEQ", "integer", "Sequence Number, 1.. per subject"),
        _cp("CPREFID", "id", "Reference ID: the specimen, nkflow's sample_id"),
        _cp("CPSPID", "text", "Sponsor-Defined Identifier: the tube, '<sample_id>/<tube>'"),
        _cp(
            "CPTESTCD",
            "text",
            "Test Short Name (sponsor-defined, <= 8 characters)",
            tuple(p.cp[0] for p in PARAMETERS if p.cp),
        ),
        _cp("CPTEST", "text", "Name of Test: the cell population (CP naming style)"),
        _cp("CPSBMRKS", "text", "Sublineage Marker String"),
        _cp("CPCELSTA", "text", "Cell State", ("PROLIFERATING",)),
        _cp("CPCSMRKS", "text", "Cell State Marker String"),
        _cp("CPMRKSTR", "text", "Marker String: every marker defining the test, '/' = of"),
        _cp("CPGATE", "text", "Gate: nkflow's population id of the final gate"),
        _cp("CPSPTSTD", "text", "Sponsor Test Description: the nkflow parameter and formula"),
        _cp("CPCAT", "text", "Category", ("IMMUNOPHENOTYPING",)),
        _cp("CPORRES", "text", "Result in Original Units (as in visits.tsv)"),
        _cp("CPORRESU", "text", "Original Units", ("/uL", "%")),
        _cp("CPRESTYP", "text", "Result Type", ("NUMBER CONCENTRATION", "NUMBER FRACTION")),
        _cp("CPSTRESC", "text", "Result in Standard Format"),
        _cp("CPSTRESN", "number", "Numeric Result in Standard Units"),
        _cp("CPSTRESU", "text", "Standard Units (10^6/L = /uL)", ("10^6/L", "%")),
        _cp("CPSTAT", "text", "Completion Status: NOT DONE when there is no result", ("NOT DONE",)),
        _cp("CPREASND", "text", "Reason Not Done: nkflow reason codes"),
        _cp("CPSPEC", "text", "Specimen Type", ("BLOOD",)),
        _cp("CPMETHOD", "text", "Method of Test", ("FLOW CYTOMETRY",)),
        _cp("CPANMETH", "text", "Analysis Method: the absolute-count method"),
        _cp("CPBLFL", "text", "Baseline Flag: last result on or before day 0", ("Y",)),
        _cp("CPDRVFL", "text", "Derived Flag: combines a second assay (STR)", ("Y",)),
        _cp("VISITNUM", "number", "Visit Number (planned visit order; unscheduled: x.1)"),
        _cp("VISIT", "text", "Visit Name: DAY <planned study day> or UNSCHEDULED"),
        _cp("VISITDY", "integer", "Planned Study Day of Visit (SDTM days: no day 0)"),
        _cp("CPDTC", "date", "Date of Collection (ISO 8601)"),
        _cp("CPDY", "integer", "Study Day of Collection (SDTM days: infusion day = 1, no day 0)"),
    ),
)


def sdtm_day(day: int | None) -> int | None:
    """SDTM study day: day 1 is the reference date, the day before is -1 (there is no day 0)."""
    if day is None:
        return None
    return day + 1 if day >= 0 else day


def build_cp(config: dict[str, Any], visits: Any) -> list[dict[str, Any]]:
    """The CP records (columns of :data:`CP`) of every visit and cell-phenotype parameter."""
    s = EndpointSettings.from_config(config)
    rows = vis.visit_records(visits)
    names = visit_names(rows, s)
    dual = s.absolute_count_method == "dual_platform"
    study = s.study_id
    out: list[dict[str, Any]] = []
    baseline: dict[tuple[str, str], int] = {}
    ordered = sorted(rows, key=lambda r: (r["patient_id"], r["collection_date"], r["sample_id"]))
    for v in ordered:
        pid, sid = str(v["patient_id"]), str(v["sample_id"])
        vname, vnum, planned = names[sid]
        for p in PARAMETERS:
            if p.cp is None:
                continue
            code, test, sub, state, state_mk, mrk = p.cp
            value = parameter_value(p, v)
            reason = _not_done_reason(p, v, value, dual)
            unit_o, unit_s = ("%", "%") if p.unit == "%" else ("/uL", "10^6/L")
            text = None if value is None else tables.FLOAT_FORMAT % float(value)
            rec = {
                "STUDYID": study,
                "DOMAIN": "CP",
                "USUBJID": f"{study}-{pid}",
                "CPREFID": sid,
                "CPSPID": f"{sid}/{s.tubes[p.tube_role]}",
                "CPTESTCD": code,
                "CPTEST": test,
                "CPSBMRKS": sub or None,
                "CPCELSTA": state or None,
                "CPCSMRKS": state_mk or None,
                "CPMRKSTR": mrk,
                "CPGATE": _gate(p, s),
                "CPSPTSTD": f"{p.name} = {p.method}",
                "CPCAT": "IMMUNOPHENOTYPING",
                "CPORRES": text,
                "CPORRESU": unit_o if text is not None else None,
                "CPRESTYP": "NUMBER FRACTION" if p.unit == "%" else "NUMBER CONCENTRATION",
                "CPSTRESC": text,
                "CPSTRESN": None if value is None else float(value),
                "CPSTRESU": unit_s if text is not None else None,
                "CPSTAT": "NOT DONE" if text is None else None,
                "CPREASND": reason if text is None else None,
                "CPSPEC": "BLOOD",
                "CPMETHOD": "FLOW CYTOMETRY",
                "CPANMETH": _anmeth(p, v),
                "CPBLFL": None,
                "CPDRVFL": "Y" if p.name == "donor_nk_per_ul" else None,
                "VISITNUM": vnum,
                "VISIT": vname,
                "VISITDY": sdtm_day(planned),
                "CPDTC": v["collection_date"],
                "CPDY": sdtm_day(v.get("study_day")),
            }
            usable = _usable_for_baseline(p, v, value, dual)
            day = v.get("study_day")
            if usable and day is not None and day <= 0:
                baseline[(pid, code)] = len(out)
            out.append(rec)
    for idx in baseline.values():
        out[idx]["CPBLFL"] = "Y"
    seq: dict[str, int] = {}
    for rec in out:
        seq[rec["USUBJID"]] = seq.get(rec["USUBJID"], 0) + 1
        rec["CPSEQ"] = seq[rec["USUBJID"]]
    return out


def _usable_for_baseline(p: Parameter, v: Mapping[str, Any], value: Any, dual: bool) -> bool:
    """A baseline must be a usable result: for the kinetic measures, the kinetics' own rule."""
    if value is None:
        return False
    if p.name in MEASURE_NAMES:
        return measure_value(p.name, v, dual)[0] is not None
    return not [r for r in str(v.get("reason") or "").split(";") if r and r != "missing_chimerism"]


def _not_done_reason(p: Parameter, v: Mapping[str, Any], value: Any, dual: bool) -> str | None:
    if value is not None:
        return None
    if p.name in MEASURE_NAMES:
        return measure_value(p.name, v, dual)[1] or "not_computed"
    if p.tube_role == "treg":
        return measure_value("treg_per_ul", v, dual)[1] or "not_computed"
    return str(v.get("reason") or "") or "not_computed"


def _gate(p: Parameter, s: EndpointSettings) -> str:
    role = next((r for r in _SUBSET_GATES if p.name.startswith(r)), "nk")
    return str(s.populations[role])


def _anmeth(p: Parameter, v: Mapping[str, Any]) -> str | None:
    if p.unit == "%":
        return None
    method = str(v.get("count_method") or "").upper().replace("_", " ")
    if p.name == "donor_nk_per_ul":
        return f"{method}; STR CHIMERISM {v.get('chimerism_fraction') or ''}".strip()
    return method or None


# --------------------------------------------------------------------------- dictionary

DICTIONARY = Table(
    "data_dictionary",
    "cohort/exports/data_dictionary.tsv",
    "one per column of every exported table (also .csv), in table then column order",
    (
        Column("table", "text", "", "table name"),
        Column("file", "text", "", "file, relative to the results directory"),
        Column("column", "text", "", "column header"),
        Column(
            "type",
            "text",
            "",
            "kind of value: " + "; ".join(f"{k} = {v}" for k, v in TYPES.items()),
            tuple(TYPES),
        ),
        Column("unit", "text", "", "unit of the values (empty: none)"),
        Column("definition", "text", "", "what the value means"),
        Column("allowed_values", "text", "", "the allowed values, ' | '-joined (empty: any)"),
    ),
)
TABLES: tuple[Table, ...] = (
    VISITS,
    ENDPOINTS,
    KINETICS,
    KINETICS_SUMMARY,
    MEASUREMENTS,
    CP,
    DICTIONARY,
)


def data_dictionary() -> list[dict[str, Any]]:
    """One record per column of every table of :data:`TABLES` (columns of :data:`DICTIONARY`)."""
    return [
        {
            "table": t.name,
            "file": t.path,
            "column": c.name,
            "type": c.type,
            "unit": c.unit,
            "definition": c.definition,
            "allowed_values": " | ".join(c.allowed),
        }
        for t in TABLES
        for c in t.columns
    ]


def dictionary_markdown() -> str:
    """``docs/data-dictionary.md``: the dictionary as Markdown (a test keeps the file in step)."""
    lines = [
        "# Data dictionary of the exported tables",
        "",
        "Generated from the column declarations the writers use (`nkflow/clinical/exports.py`,",
        "`nkflow/clinical/kinetics.py`, `nkflow/columns.py`); do not edit by hand: run",
        "`python -c 'import nkflow.clinical.exports as e; print(e.dictionary_markdown(), end=\"\")' >",
        "docs/data-dictionary.md`. The same content is written with every run as",
        "`results/cohort/exports/data_dictionary.tsv` (and `.csv`).",
        "",
        "Types: " + "; ".join(f"`{k}` {v}" for k, v in TYPES.items()) + ". Missing = empty cell.",
    ]
    for t in TABLES:
        lines += ["", f"## {t.name}: `results/{t.path}`", "", f"One row {t.row}.", ""]
        lines += ["| column | type | unit | definition | allowed values |", "|---|---|---|---|---|"]
        for c in t.columns:
            allowed = ", ".join(f"`{a}`" for a in c.allowed)
            text = c.definition.replace("|", "\\|")
            lines.append(f"| `{c.name}` | {c.type} | {c.unit} | {text} | {allowed} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- writer


def write_exports(config: dict[str, Any], visits: Any, outdir: str | Path) -> list[Path]:
    """Write the long table, the CP dataset and the dictionary, each as .tsv and .csv."""
    out = Path(outdir)
    written = []
    for table, records in (
        (MEASUREMENTS, build_measurements(config, visits)),
        (CP, build_cp(config, visits)),
        (DICTIONARY, data_dictionary()),
    ):
        stem = Path(table.path).stem
        for suffix, sep in ((".tsv", "\t"), (".csv", ",")):
            path = out / f"{stem}{suffix}"
            tables.write_bytes(path, table_text(table, records, delimiter=sep).encode("utf-8"))
            written.append(path)
    return written
