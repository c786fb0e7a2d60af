"""Unit tests of nkflow.report, and the hand-built results directory they (and the browser
test, tests/browser/test_report_browser.py) render.

Four patients with known answers, in the formats the producers write (nkflow.clinical.endpoints:
ENDPOINT_COLUMNS / VISIT_COLUMNS, per-patient JSON {patient_id, endpoint, visits}; qc.tsv and
provenance.json per docs/DEVELOPING.md):

- P01 PASS: ALC 0.45 x10^3/uL -> 450/uL (cbc.tsv data row 3), NK 380/1000 live events = 38 %,
  donor 72 % (CD56, table) -> 123.12/uL (DOMAIN.md worked example), interval 101.5-148, day 13.
- P02 FAIL, borderline: 95.5/uL, interval 80.2-112.9 (contains 100), day 14, QC WARN flag.
- P03 NOT_EVALUABLE: day-14 NK tube failed time QC (reason qc_fail:time_burst).
- P04 FAIL: 12.25/uL, interval 9.1-15.8, day 15, % donor from STR peaks (4 loci).

Only files are written; nothing is computed from them here.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nkflow.clinical.endpoints import ENDPOINT_COLUMNS
from nkflow.clinical.visits import VISIT_COLUMNS
from nkflow.config import Study, tube_settings
from nkflow.errors import ConfigError
from nkflow.qc import QC_COLUMNS
from nkflow.report._inputs import ReportPaths
from nkflow.stages import run_report
from nkflow.tube import COUNT_COLUMNS
from tests.conftest import columns

PATIENTS = ("P01", "P02", "P03", "P04")
DAYS = {"D00": 0, "D07": 7, "D14": 14, "D28": 28}
CHOSEN_DAY = {"P01": "13", "P02": "14", "P03": "14", "P04": "15"}


def tiny_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid solid-colour PNG built by hand (no matplotlib needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _tsv(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _dict_rows(
    records: list[dict[str, str]], table: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of dict records, every key a column of the production ``table``."""
    cols: list[str] = []
    for r in records:
        cols.extend(k for k in r if k not in cols)
    return columns(table, *cols), [[r.get(c, "") for c in cols] for r in records]


_COMMON = {
    "window_days": "12-16",
    "count_method": "dual_platform",
    "n_infusions": "3",
    "day0_date": "2024-01-01",
}
ENDPOINTS: list[dict[str, str]] = [
    {
        "patient_id": "P01", "sample_id": "P01-D14", "study_day": "13", "alc_per_ul": "450",
        "nk_pct_of_lymphocytes": "38", "chimerism_fraction": "CD56",
        "donor_chimerism_pct": "72", "donor_nk_per_ul": "123.12", "verdict": "PASS",
        "reason": "", "donor_nk_per_ul_lo95": "101.5", "donor_nk_per_ul_hi95": "148",
        "borderline": "false", "verdict_basis": "donor_nk_per_ul 123.12 > 100 (95% 101.5-148)",
        "flags": "", "qc_status": "PASS", "n_samples_in_window": "1",
        "alc_source_value": "0.45", "alc_source_unit": "10^3/uL", "alc_date": "2024-01-14",
        "nk_events": "380", "lymphocyte_events": "1000", "lymphocyte_population": "live",
        "chimerism_date": "2024-01-14", "chimerism_source": "table", "donor_chimerism_sd": "",
        "nk_tube_fcs": "fcs/P01_D14_nk.fcs", "cells_per_kg_infusions": "3e+06,3e+06,3e+06",
        "cells_per_kg_total": "9e+06", "nk_donor_is_hsct_donor": "false",
        "response_summary": "2024-02-28 CR (ELN 2017)", "last_response": "CR",
        "n_adverse_events": "1", "max_ctcae_grade": "1", **_COMMON,
    },
    {
        "patient_id": "P02", "sample_id": "P02-D14", "study_day": "14", "alc_per_ul": "500",
        "nk_pct_of_lymphocytes": "25", "chimerism_fraction": "PB",
        "donor_chimerism_pct": "76.4", "donor_nk_per_ul": "95.5", "verdict": "FAIL",
        "reason": "", "donor_nk_per_ul_lo95": "80.2", "donor_nk_per_ul_hi95": "112.9",
        "borderline": "true", "flags": "qc_warn:low_events", "qc_status": "WARN",
        "alc_source_value": "500", "alc_source_unit": "cells/uL", "alc_date": "2024-01-15",
        "nk_events": "250", "lymphocyte_events": "1000", "lymphocyte_population": "live",
        "chimerism_date": "2024-01-15", "chimerism_source": "table",
        "nk_tube_fcs": "fcs/P02_D14_nk.fcs", "cells_per_kg_total": "6e+06", **_COMMON,
    },
    {
        "patient_id": "P03", "sample_id": "P03-D14", "study_day": "14", "alc_per_ul": "610",
        "nk_pct_of_lymphocytes": "", "chimerism_fraction": "CD56",
        "donor_chimerism_pct": "80", "donor_nk_per_ul": "", "verdict": "NOT_EVALUABLE",
        "reason": "qc_fail:time_burst", "borderline": "", "qc_status": "FAIL",
        "alc_source_value": "0.61", "alc_source_unit": "10^9/L", "alc_date": "2024-01-15",
        "chimerism_date": "2024-01-15", "chimerism_source": "table",
        "nk_tube_fcs": "fcs/P03_D14_nk.fcs", "cells_per_kg_total": "9e+06", **_COMMON,
    },
    {
        "patient_id": "P04", "sample_id": "P04-D14", "study_day": "15", "alc_per_ul": "350",
        "nk_pct_of_lymphocytes": "5", "chimerism_fraction": "PB",
        "donor_chimerism_pct": "70", "donor_nk_per_ul": "12.25", "verdict": "FAIL",
        "reason": "", "donor_nk_per_ul_lo95": "9.1", "donor_nk_per_ul_hi95": "15.8",
        "borderline": "false", "flags": "nk_donor_is_hsct_donor", "qc_status": "PASS",
        "alc_source_value": "350", "alc_source_unit": "cells/uL", "alc_date": "2024-01-16",
        "nk_events": "50", "lymphocyte_events": "1000", "lymphocyte_population": "live",
        "chimerism_date": "2024-01-16", "chimerism_source": "str_peaks",
        "donor_chimerism_sd": "3.5", "nk_tube_fcs": "fcs/P04_D14_nk.fcs",
        "cells_per_kg_total": "1.2e+07", "nk_donor_is_hsct_donor": "true", **_COMMON,
    },
]  # fmt: skip

# donor and total NK/uL per visit (D00, D07, D14, D28); D14 donor values match ENDPOINTS
DONOR = {
    "P01": ["", "40.5", "123.12", "310"],
    "P02": ["", "20", "95.5", "150"],
    "P03": ["", "35", "", "60"],
    "P04": ["", "3", "12.25", "8"],
}
TOTAL = {
    "P01": ["60", "57.9", "171", "443"],
    "P02": ["55", "26.2", "125", "196"],
    "P03": ["70", "43.8", "", "75"],
    "P04": ["30", "4.3", "17.5", "11.4"],
}


def _visits() -> list[dict[str, str]]:
    rows = []
    for pid in PATIENTS:
        for i, (visit, day) in enumerate(DAYS.items()):
            d = DONOR[pid][i]
            rows.append(
                {
                    "patient_id": pid,
                    "sample_id": f"{pid}-{visit}",
                    "collection_date": f"2024-01-{1 + day:02d}",
                    "study_day": CHOSEN_DAY[pid] if visit == "D14" else str(day),
                    "status": "not_evaluable" if pid == "P03" and visit == "D14" else "ok",
                    "alc_per_ul": "450",
                    "nk_pct_of_lymphocytes": "20",
                    "total_nk_per_ul": TOTAL[pid][i],
                    "donor_chimerism_pct": "70" if d else "",
                    "donor_nk_per_ul": d,
                    "donor_nk_per_ul_lo95": {"": "", "123.12": "101.5"}.get(d, d and "1"),
                    "donor_nk_per_ul_hi95": {"": "", "123.12": "148"}.get(d, d and "400"),
                    "treg_pct_of_cd4": ["4.5", "5.5", "6.5", "7.5"][i],
                    "treg_ki67_pct_of_cd4": ["0.5", "1", "1.5", "2"][i],
                    "treg_ki67_per_ul": ["1", "2", "3", "4"][i],
                    "flags": "",
                }
            )
    return rows


GATE_TREE = (
    "name: nk_v1\npanel: nk_v1\ngates:\n"
    "  - {id: singlets, parent: null, type: polygon}\n"
    "  - {id: nk, parent: singlets, type: rectangle}\n"
)
GATING_SHA = hashlib.sha256(GATE_TREE.encode()).hexdigest()


TUBE_FILES = ("gating.png", "provenance.json")


def build_fixture(root: Path) -> tuple[dict[str, Any], Path]:
    """Write the fixture under ``root``; returns (config, results_dir).

    Sheets live in ``root/sheets`` and config and tube index paths are relative to ``root``
    (run the report with ``Study(config, root)`` and :func:`report_paths`).
    """
    results = root / "results"
    sheets = root / "sheets"
    config = {
        "sheets": {
            "samples": "sheets/samples.tsv",
            "cbc": "sheets/cbc.tsv",
            "infusions": "sheets/infusions.tsv",
            "response": "sheets/response.tsv",
            "adverse_events": "sheets/adverse_events.tsv",
        },
        "gating": {"nk_v1": "gating/nk_v1.yaml"},
        "panels": {},
        "endpoints": {"threshold_per_ul": 100.0, "denominator_population": "live"},
        "results": "results",
    }
    # what nkflow.tube records: the digest of the settings a tube depends on
    canonical = json.dumps(tube_settings(config), sort_keys=True, separators=(",", ":"))
    config_sha = hashlib.sha256(canonical.encode()).hexdigest()
    _tsv(results / "cohort" / "endpoints.tsv", *_dict_rows(ENDPOINTS, ENDPOINT_COLUMNS))
    visits = _visits()
    _tsv(results / "cohort" / "visits.tsv", *_dict_rows(visits, VISIT_COLUMNS))
    qc_rows = []
    sample_rows = []
    for pid in PATIENTS:
        for visit in DAYS:
            sid = f"{pid}-{visit}"
            for tube in ("nk", "treg"):
                sample_rows.append(
                    [sid, pid, "2024-01-01", tube, f"{tube}_v1", f"{tube}_v1", f"{sid}_{tube}.fcs"]
                )
                failed = pid == "P03" and visit == "D14" and tube == "nk"
                status = "FAIL" if failed else "PASS"
                qc_rows.append(
                    [sid, tube, status, "total_events", "PASS", "", "20000", "5000", "20000 events"]
                )
                qc_rows.append(
                    [
                        sid,
                        tube,
                        status,
                        "time_qc",
                        "FAIL" if failed else "PASS",
                        "time_burst" if failed else "",
                        "0.31" if failed else "0.006",
                        "0.2",
                        "removed 6200 events in 10.0-12.5 s"
                        if failed
                        else "removed 120 events in 3.0-3.2 s",
                    ]
                )
                tdir = results / "tubes" / f"{tube}_v1.{tube}_v1.001" / sid / tube
                tdir.mkdir(parents=True, exist_ok=True)
                colour = (200, 60, 60) if failed else (60, 120, 200)
                (tdir / "gating.png").write_bytes(tiny_png(48, 32, colour))
                prov = {  # keys as nkflow.tube writes them
                    "sample_id": sid,
                    "tube": tube,
                    "fcs_file": f"data/{sid}_{tube}.fcs",
                    "fcs_sha256": f"{PATIENTS.index(pid):02d}{visit}{tube}".ljust(64, "0"),
                    "gating_file": str(root / "gating" / "nk_v1.yaml"),
                    "gating_sha256": "0" * 64 if failed else GATING_SHA,
                    "settings_sha256": config_sha,
                    "software": {"nkflow": "0.1.0", "flowkit": "1.3.2"},
                    "time_qc": {
                        "assessed": True,
                        "n_removed": 6200 if failed else 0,
                        "removed_ranges_s": [[10.0, 12.5]] if failed else [],
                    },
                }
                (tdir / "provenance.json").write_text(json.dumps(prov), encoding="utf-8")
    _tsv(results / "qc" / "tubes.tsv", list(QC_COLUMNS), qc_rows)
    tubes = sorted(p.parent for p in (results / "tubes").glob("*/*/*/provenance.json"))
    _tsv(  # the tube index as nkflow collect writes it, paths relative to the run directory
        results / "cohort" / "tubes.tsv",
        ["sample_id", "tube", "figure", "provenance"],
        [
            [d.parent.name, d.name, *(str((d / f).relative_to(root)) for f in TUBE_FILES)]
            for d in tubes
        ],
    )
    _tsv(
        results / "cohort" / "counts.tsv",
        columns(COUNT_COLUMNS, "sample_id", "tube", "population", "events"),
        [["P01-D14", "nk", "nk", "380"]],
    )
    _tsv(
        results / "cohort" / "str_results.tsv",
        ["patient_id", "date", "fraction", "donor_pct", "donor_pct_sd", "donor_pct_cv", "n_loci"]
        + ["n_loci_excluded_outlier", "status"],
        [["P04", "2024-01-16", "PB", "70", "3.5", "0.05", "4", "1", "ok"]],
    )
    _tsv(
        results / "cohort" / "str_loci.tsv",
        ["patient_id", "date", "fraction", "marker", "donor_pct", "status"],
        [
            ["P04", "2024-01-16", "PB", "D3S1358", "68", "ok"],
            ["P04", "2024-01-16", "PB", "vWA", "72", "ok"],
            ["P04", "2024-01-16", "PB", "TH01", "", "stutter_conflict"],
        ],
    )
    # kinetics (the readout rule's tables), a few rows written by hand
    _tsv(
        results / "cohort" / "kinetics_summary.tsv",
        ["grouping", "group", "measure", "parameter", "n_patients", "n", "median", "q1", "q3"],
        [
            [
                "all",
                "all patients",
                "donor_nk_per_ul",
                "cmax_per_ul",
                "4",
                "3",
                "150",
                "62.5",
                "230.05",
            ],
            ["verdict", "PASS", "donor_nk_per_ul", "cmax_per_ul", "1", "1", "310", "310", "310"],
            ["verdict", "NOT_EVALUABLE", "donor_nk_per_ul", "cmax_per_ul", "1", "0", "", "", ""],
            ["all", "all patients", "donor_nk_per_ul", "tmax_day", "4", "3", "28", "21", "28"],
            ["all", "all patients", "treg_per_ul", "cmax_per_ul", "4", "4", "12.25", "10", "14"],
        ],
    )
    _tsv(
        results / "cohort" / "kinetics.tsv",
        ["patient_id", "measure", "cmax_per_ul", "tmax_day"],
        [["P01", "donor_nk_per_ul", "310", "28"]],
    )
    endpoint_by = {e["patient_id"]: e for e in ENDPOINTS}
    for pid in PATIENTS:
        doc = {
            "patient_id": pid,
            "endpoint": endpoint_by[pid],
            "visits": [v for v in visits if v["patient_id"] == pid],
        }
        path = results / "cohort" / "patients" / f"{pid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc), encoding="utf-8")

    _tsv(
        sheets / "samples.tsv",
        ["sample_id", "patient_id", "collection_date", "tube", "panel", "gating", "fcs_file"],
        sample_rows,
    )
    _tsv(
        sheets / "cbc.tsv",
        ["patient_id", "date", "alc_value", "alc_unit"],
        [
            ["P01", "2024-01-01", "0.3", "10^3/uL"],
            ["P02", "2024-01-15", "500", "cells/uL"],
            ["P01", "2024-01-14", "0.45", "10^3/uL"],
        ],
    )
    _tsv(
        sheets / "infusions.tsv",
        ["patient_id", "infusion_number", "infusion_date", "cells_infused", "body_weight_kg"],
        [[pid, n, f"2024-01-0{n}", "100000000", "33.3"] for pid in PATIENTS for n in (3, 1, 2)],
    )
    _tsv(
        sheets / "response.tsv",
        ["patient_id", "assessment_date", "criteria", "category", "mrd_status"],
        [["P01", "2024-02-28", "ELN 2017", "CR", "negative"]],
    )
    _tsv(
        sheets / "adverse_events.tsv",
        ["patient_id", "date", "term", "ctcae_grade", "relation"],
        [["P01", "2024-01-02", "fever", "1", "possible"]],
    )
    gating = root / "gating" / "nk_v1.yaml"
    gating.parent.mkdir(parents=True, exist_ok=True)
    gating.write_bytes(GATE_TREE.encode())
    return config, results


def report_paths(results: Path) -> ReportPaths:
    """The report's inputs in the workflow's results layout (``results/cohort``, ...)."""
    cohort = results / "cohort"
    return ReportPaths(
        endpoints=cohort / "endpoints.tsv",
        visits=cohort / "visits.tsv",
        qc=results / "qc" / "tubes.tsv",
        counts=cohort / "counts.tsv",
        kinetics=cohort / "kinetics.tsv",
        kinetics_summary=cohort / "kinetics_summary.tsv",
        patients=cohort / "patients",
        tubes_index=cohort / "tubes.tsv",
        str_results=cohort / "str_results.tsv",
        str_loci=cohort / "str_loci.tsv",
    )


# ----------------------------------------------------------------------------- tests

RUN_DATE = "2031-05-06T07:08:09Z"  # a date no table contains, so it can be located


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    config, results = build_fixture(root)
    out = root / "reports"
    paths = run_report(Study(config, root), report_paths(results), out, RUN_DATE)
    pages = {p.stem: p.read_text(encoding="utf-8") for p in paths}
    return {"root": root, "config": config, "results": results, "out": out, "paths": paths, **pages}


def _plain(page: str) -> str:
    """Drop the cell alignment classes (num = right-aligned number, nw = no wrap)."""
    return re.sub(r' class="(num|nw)"', "", page)


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return _plain(page[start : page.index("</section>", start)])


def test_run_report_writes_index_then_one_page_per_patient_in_table_order(rendered):
    out = rendered["out"]
    assert rendered["paths"] == [out / "index.html", *(out / f"{p}.html" for p in PATIENTS)]


def test_banner_shows_verdict_word_value_interval_and_actual_day(rendered):
    banner = _section(rendered["P01"], "verdict")
    assert 'class="banner v-PASS"' in banner
    assert '<div class="verdict-word">PASS</div>' in banner
    # rounded as a lab reports it (endpoints.tsv: 123.12, 101.5-148)
    assert "Donor NK cells at day 14: <b>123.1 /µL</b> (95 % interval 101.5 – 148.0)" in banner
    assert (
        "Sample P01-D14, actual study day <b>13</b> (visit window 12-16, 1 sample(s) in it)"
        in banner
    )
    assert "strictly more than 100 donor NK cells/µL" in banner


def test_borderline_and_not_evaluable_are_words_not_only_colours(rendered):
    p02 = _section(rendered["P02"], "verdict")
    assert 'FAIL<br><span class="badge borderline">borderline</span>' in p02
    assert "the 95 % interval contains 100/µL" in p02
    p03 = _section(rendered["P03"], "verdict")
    assert '<div class="verdict-word">NOT_EVALUABLE</div>' in p03
    assert '<span class="badge flag">qc_fail:time_burst</span>' in p03
    assert "Donor NK cells at day 14: <b>not available</b>" in p03


def test_numbers_behind_the_verdict_carry_their_sources(rendered):
    numbers = _section(rendered["P01"], "numbers")
    assert (
        "<td>450 cells/µL</td><td>original value 0.45 10^3/uL; date 2024-01-14; "
        "sheets/cbc.tsv data row 3</td>" in numbers
    )
    assert (
        "<td>38.0 %</td><td>380 NK events / 1000 live events; tube nk; "
        "FCS file fcs/P01_D14_nk.fcs; absolute-count method dual_platform</td>" in numbers
    )
    assert "<td>72.0 %</td><td>fraction CD56; date 2024-01-14; source table</td>" in numbers
    assert "450 × 38.0 % × 72.0 % = <b>123.1</b>" in numbers


def test_chimerism_from_peaks_shows_loci_and_cbc_row_ambiguity(rendered):
    numbers = _section(rendered["P04"], "numbers")
    assert (
        "<td>70.0 %</td><td>fraction PB; date 2024-01-16; source str_peaks; SD 3.5; "
        "4 informative loci (CV 0.05, 1 excluded as outliers); "
        "loci D3S1358 68, vWA 72, TH01 - [stutter_conflict]</td>" in numbers
    )
    # P04's ALC row is not in the fixture's cbc.tsv: the page says so instead of guessing
    assert "sheets/cbc.tsv: 0 rows match patient, date and value" in numbers


def test_missing_source_fields_say_not_recorded_instead_of_guessing(rendered):
    numbers = _section(rendered["P03"], "numbers")
    assert "<td>NK (CD56+ CD3−) % of lymphocytes</td><td>not recorded</td>" in numbers
    assert "not recorded NK events / not recorded live events" in numbers


def test_kinetics_dose_response_and_adverse_events(rendered):
    kin = _section(rendered["P01"], "kinetics")
    assert kin.count('<img src="data:image/png;base64,') == 1
    assert "<td>P01-D28</td><td>2024-01-29</td><td>28</td>" in kin
    dose = _section(rendered["P01"], "dose")
    # infusion rows come sorted by number (the sheet lists 3, 1, 2), beside endpoints' cells/kg
    assert (
        "<th>infusion_number</th><th>infusion_date</th><th>cells_infused</th>"
        "<th>body_weight_kg</th><th>cells/kg (endpoints.tsv)</th>" in dose
    )
    assert re.findall(r"<tr><td>(\d)</td><td>2024-01-0\d</td>", dose) == ["1", "2", "3"]
    assert "<td>33.3</td><td>3.0 x 10^6 cells/kg</td></tr>" in dose
    assert "<td>cells_per_kg_total</td><td>9.0 x 10^6 cells/kg</td>" in dose
    assert "<h3>Response assessments</h3>" in dose and "<td>ELN 2017</td><td>CR</td>" in dose
    assert "<td>response_summary</td><td>2024-02-28 CR (ELN 2017)</td>" in dose
    assert "<td>fever</td><td>1</td><td>possible</td>" in dose
    p03 = _section(rendered["P03"], "dose")
    assert "<h3>Adverse events</h3>" in p03 and "None recorded." in p03


def test_qc_section_lists_statuses_reasons_and_time_qc_removals(rendered):
    qc = _section(rendered["P03"], "qc")
    assert (
        '<td>P03-D14</td><td>nk</td><td><span class="badge FAIL">FAIL</span></td>'
        "<td>time_qc: FAIL time_burst (removed 6200 events in 10.0-12.5 s)</td>" in qc
    )
    assert "<h3>Time-QC removals</h3>" in qc
    assert "<td>P03-D14</td><td>nk</td><td>yes</td><td>6200</td><td>10–12.5 s</td>" in qc
    assert "<td>P03-D14</td><td>treg</td><td>yes</td><td>0</td><td>none</td>" in qc
    not_pass = qc[qc.index("<h3>Time-QC checks not PASS</h3>") : qc.index("Time-QC checks (8)")]
    assert not_pass.count("<tr>") == 2  # header + the failed tube
    assert "<td>P03-D14</td><td>nk</td><td>FAIL</td><td>time_qc</td><td>FAIL</td>" in not_pass
    # 1 (not PASS) + 8 tubes in the time-QC details + 8 in the full list of checks
    assert qc.count("<td>time_qc</td>") == 17


def test_day14_gating_open_other_visits_collapsed(rendered):
    gating = _section(rendered["P01"], "gating")
    day14 = gating[: gating.index("<h3>Other visits</h3>")]
    assert "<h3>Day-14 sample P01-D14</h3>" in day14
    assert day14.count("<img ") == 2 and "<details" not in day14
    other = gating[gating.index("<h3>Other visits</h3>") :]
    assert other.count("<details><summary>") == 3
    assert "<summary>Sample P01-D07 (study day 7)</summary>" in other
    assert other.count("<img ") == 6


def test_provenance_hashes_versions_digest_gate_tree_and_run_date(rendered):
    from importlib import metadata

    prov = _section(rendered["P01"], "provenance")
    root = rendered["root"]
    samples_sha = hashlib.sha256((root / "sheets" / "samples.tsv").read_bytes()).hexdigest()
    assert f"<td>sheet: samples</td><td>sheets/samples.tsv</td><td>{samples_sha}</td>" in prov
    assert (
        f"<td>FCS P01-D14/nk</td><td>data/P01-D14_nk.fcs</td><td>{'00D14nk'.ljust(64, '0')}" in prov
    )
    for pkg in ("nkflow", "flowkit", "flowio", "numpy", "pandas", "snakemake"):
        assert f"<td>{pkg}</td><td>{metadata.version(pkg)}</td>" in prov
    canonical = json.dumps(rendered["config"], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert f"<td>config digest (sha256 of canonical JSON)</td><td>{digest}</td>" in prov
    tube_canonical = json.dumps(
        tube_settings(rendered["config"]), sort_keys=True, separators=(",", ":")
    )
    tube_digest = hashlib.sha256(tube_canonical.encode()).hexdigest()
    assert (
        f"<td>tube settings digest recorded by the tubes</td><td>{tube_digest} (same)</td>" in prov
    )
    assert "Gate tree used: nk_v1 (gating/nk_v1.yaml)" in prov
    assert f"sha256 recorded by the tubes: {GATING_SHA} (same file as now)" in prov
    # P03-D14/nk recorded another gate tree digest: the page says it differs
    p03 = _section(rendered["P03"], "provenance")
    assert f"{'0' * 64}, {GATING_SHA} — DIFFERS from the file now ({GATING_SHA})" in p03
    assert "<td>nk</td><td>singlets</td><td>rectangle</td>" in prov
    assert f"<td>report run date</td><td>{RUN_DATE}</td>" in prov


def test_a_config_changed_since_the_tubes_ran_is_pointed_out(tmp_path):
    config, results = build_fixture(tmp_path)
    # a setting the tubes do not depend on: they need not re-run, and the page says "same"
    config["endpoints"]["threshold_per_ul"] = 150.0
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    prov = _section((tmp_path / "r" / "P01.html").read_text(encoding="utf-8"), "provenance")
    assert "(same)</td>" in prov and "DIFFERS from this report" not in prov
    # one they do depend on (the lymphocyte denominator): pointed out
    config["endpoints"]["denominator_population"] = "lymphocytes"
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r2", RUN_DATE)
    prov = _section((tmp_path / "r2" / "P01.html").read_text(encoding="utf-8"), "provenance")
    assert "— DIFFERS from this report&#x27;s config</td>" in prov


def test_run_date_appears_only_in_the_provenance_section(rendered):
    for name in ("index", *PATIENTS):
        page = rendered[name]
        assert page.count(RUN_DATE) == 1, name
        assert RUN_DATE in _section(page, "provenance")


def test_pages_are_self_contained(rendered):
    for name in ("index", *PATIENTS):
        page = rendered[name]
        assert "http://" not in page and "https://" not in page and "//cdn" not in page
        srcs = re.findall(r'src="([^"]*)"', page)
        assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
        assert "<link" not in page and "<script src" not in page


def test_index_rows_links_flags_and_sort_keys(rendered):
    index = _plain(rendered["index"])
    hrefs = re.findall(r'href="([^"#][^"]*)"', index)
    assert hrefs == [f"{p}.html" for p in PATIENTS]
    assert all((rendered["out"] / h).is_file() for h in hrefs)
    table = index[index.index('<table class="sortable" id="cohort">') :]
    assert '<td data-sort="1a"><span class="badge PASS">PASS</span></td>' in table
    assert (
        '<td data-sort="2b"><span class="badge FAIL">FAIL</span>'
        ' <span class="badge borderline">borderline</span></td>' in table
    )
    assert '<td data-sort="12.25">12.3</td><td>9.1 – 15.8</td><td data-sort="15">15</td>' in table
    assert '<span class="badge flag">nk_donor_is_hsct_donor</span>' in table
    assert "4 patients: " in index and "function sortBy(table, th, col)" in index


def test_index_qc_summary_counts_tubes_by_status(rendered):
    qc = _section(rendered["index"], "qc")
    # 4 patients x 4 visits = 16 tubes of each kind; only P03-D14 nk failed
    n = "<td>{}</td>"
    assert "<td>nk</td>" + "".join(n.format(x) for x in (15, 0, 1, 16)) in qc
    assert "<td>treg</td>" + "".join(n.format(x) for x in (16, 0, 0, 16)) in qc
    assert "Time-QC rows across tubes (32)" in qc
    flagged = qc[qc.index("<h3>Tubes not PASS (1 of 32)</h3>") : qc.index("Every tube (32)")]
    assert flagged.count("<tr>") == 2  # header + the one failed tube
    assert "<td>P03</td><td>P03-D14</td><td>nk</td>" in flagged


def test_identical_inputs_and_run_date_give_identical_bytes(rendered, tmp_path):
    out2 = tmp_path / "again"
    paths = run_report(
        Study(rendered["config"], rendered["root"]),
        report_paths(rendered["results"]),
        out2,
        RUN_DATE,
    )
    assert paths, "run_report wrote no page"
    for p in paths:
        assert p.read_bytes() == (rendered["out"] / p.name).read_bytes(), p.name


def test_table_text_is_escaped(tmp_path):
    config, results = build_fixture(tmp_path)
    ep = results / "cohort" / "endpoints.tsv"
    ep.write_text(ep.read_text().replace("qc_warn:low_events", "<b>x</b>"), encoding="utf-8")
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    page = (tmp_path / "r" / "P02.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_missing_optional_inputs_become_notes_not_crashes(tmp_path):
    config, results = build_fixture(tmp_path)
    (results / "cohort" / "visits.tsv").unlink()
    (tmp_path / "sheets" / "infusions.tsv").unlink()
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    page = (tmp_path / "r" / "P02.html").read_text(encoding="utf-8")
    assert "No visits for this patient in visits.tsv." in page
    assert "No infusion rows for this patient in the infusion sheet." in page
    missing = f"sheet 'infusions' not found at {tmp_path / 'sheets' / 'infusions.tsv'}"
    assert html.escape(missing) in page
    assert f"visits table not found at {results / 'cohort' / 'visits.tsv'}" in page


def test_missing_endpoints_table_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"endpoints\.tsv: endpoints table not found; expected"):
        run_report(
            Study({}, tmp_path), report_paths(tmp_path / "results"), tmp_path / "r", RUN_DATE
        )


def test_unsafe_patient_id_is_refused_with_the_row(tmp_path):
    config, results = build_fixture(tmp_path)
    ep = results / "cohort" / "endpoints.tsv"
    ep.write_text(ep.read_text().replace("P03\tP03-D14", "../x\tP03-D14"), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"endpoints\.tsv row 3: patient_id '\.\./x' is not a safe"
    ):
        run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_kinetics_figure_is_a_deterministic_png_and_survives_no_data():
    from nkflow.report._figures import Series, kinetics_figure

    nk = [Series("donor", [0, 7, 14], [None, 0.0, 150.0], [None, None, 120.0], [None, None, 180.0])]
    a = kinetics_figure(nk, [], 100.0, 14.0, "PX")
    b = kinetics_figure(nk, [], 100.0, 14.0, "PX")
    assert a == b
    png = base64.b64decode(a.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    empty = kinetics_figure([Series("donor", [0.0], [None])], [], 100.0, None, "PY")
    assert empty.startswith("data:image/png;base64,")


def test_cohort_figure_accepts_patients_without_values():
    from nkflow.report._figures import CohortPoint, cohort_figure

    uri = cohort_figure(
        [
            CohortPoint("A", "PASS", 150.0, 120.0, 190.0),
            CohortPoint("B", "NOT_EVALUABLE", None, None, None),
        ],
        100.0,
    )
    assert base64.b64decode(uri.split(",", 1)[1])[:4] == b"\x89PNG"


def test_parallel_page_rendering_gives_identical_pages(rendered, tmp_path):
    """workers=2 (forked page writers) writes the same pages, byte for byte, in the same order."""
    paths = run_report(
        Study(rendered["config"], rendered["root"]),
        report_paths(rendered["results"]),
        tmp_path / "par",
        RUN_DATE,
        workers=2,
    )
    assert [p.name for p in paths] == [p.name for p in rendered["paths"]]
    for serial, parallel in zip(rendered["paths"], paths, strict=True):
        assert parallel.read_bytes() == serial.read_bytes(), parallel.name


def test_tube_index_wins_over_leftover_batch_directories(tmp_path):
    """With results/cohort/tubes.tsv present, the report reads the tubes it lists; a stale
    batch directory from an earlier batching (sorting after the current one) is ignored."""
    config, results = build_fixture(tmp_path)
    current = sorted((results / "tubes").glob("*/*/*/provenance.json"))
    rows = ["sample_id\ttube\tfigure\tprovenance"]
    for prov in current:
        d = prov.parent
        rows.append(f"{d.parent.name}\t{d.name}\t{d / 'gating.png'}\t{prov}")
    (results / "cohort" / "tubes.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    stale = results / "tubes" / "zz_old.batch.001" / "P01-D14" / "nk"
    stale.mkdir(parents=True)
    doc = json.loads(
        (results / "tubes" / "nk_v1.nk_v1.001" / "P01-D14" / "nk" / "provenance.json").read_text()
    )
    doc["fcs_sha256"] = "f" * 64
    (stale / "provenance.json").write_text(json.dumps(doc), encoding="utf-8")
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    prov = _section((tmp_path / "r" / "P01.html").read_text(encoding="utf-8"), "provenance")
    assert "00D14nk".ljust(64, "0") in prov
    assert "f" * 64 not in prov


def _with_low_second_dose(root: Path, config: dict[str, Any]) -> None:
    """P01's infusion 2 at 4e7 cells (1.2e6/kg for 33.3 kg), as endpoints.tsv then reports it."""
    import csv

    table = root / "results" / "cohort" / "endpoints.tsv"
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for r in rows:
        if r["patient_id"] == "P01":
            r["flags"] = "dose_out_of_range:2"
            r["cells_per_kg_infusions"] = "3e+06,1.2e+06,3e+06"
    _tsv(table, list(rows[0]), [list(r.values()) for r in rows])
    sheet = root / "sheets" / "infusions.tsv"
    lines = sheet.read_text(encoding="utf-8").splitlines()
    lines = [ln.replace("100000000", "40000000") if ln.startswith("P01\t2\t") else ln
             for ln in lines]  # fmt: skip
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_an_out_of_range_dose_is_stated_with_the_range_and_its_source(tmp_path):
    config, results = build_fixture(tmp_path)
    _with_low_second_dose(tmp_path, config)
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    page = (tmp_path / "r" / "P01.html").read_text(encoding="utf-8")
    said = (
        "Dose outside the configured range: infusion 2 (1.2 x 10^6 cells/kg); range "
        "2.0 x 10^6 – 5.0 x 10^6 NK cells/kg per infusion "
        "(endpoints.dose_range_per_kg, the default, from the protocol's "
        "dosing scheme of 2-5 x 10^6 NK cells/kg per infusion (DOMAIN.md section 1))."
    )
    banner = html.unescape(_section(page, "verdict"))
    assert '<span class="badge flag">dose_out_of_range:2</span>' in banner
    assert said in banner
    dose = html.unescape(_section(page, "dose"))
    assert (
        "<td>2</td><td>2024-01-02</td><td>40000000</td><td>33.3</td><td>1.2 x 10^6 cells/kg</td>"
        in dose
    )
    assert said in dose
    other = (tmp_path / "r" / "P02.html").read_text(encoding="utf-8")
    assert "Dose outside" not in other

    config["endpoints"]["dose_range_per_kg"] = [1.0e6, 2.5e6]
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r2", RUN_DATE)
    banner = html.unescape(_section((tmp_path / "r2" / "P01.html").read_text(), "verdict"))
    assert (
        "range 1.0 x 10^6 – 2.5 x 10^6 NK cells/kg per infusion (endpoints.dose_range_per_kg, "
        "as configured; the default 2.0 x 10^6 – 5.0 x 10^6 is from the protocol's dosing "
        "scheme" in banner
    )


def test_the_alc_formula_is_shown_for_dual_platform_counts_only(rendered, tmp_path):
    numbers = _section(rendered["P01"], "numbers")
    assert '<p class="formula">donor NK/µL = ALC × NK fraction × donor fraction = ' in numbers
    config, results = build_fixture(tmp_path)
    table = results / "cohort" / "endpoints.tsv"
    table.write_text(
        table.read_text(encoding="utf-8").replace("dual_platform", "single_platform_beads"),
        encoding="utf-8",
    )
    run_report(Study(config, tmp_path), report_paths(results), tmp_path / "r", RUN_DATE)
    numbers = _section((tmp_path / "r" / "P01.html").read_text(encoding="utf-8"), "numbers")
    assert "single_platform_beads" in numbers
    assert 'class="formula"' not in numbers


def test_cohort_view_summary_table_and_figures(rendered):
    index = rendered["index"]
    summary = _section(index, "kinetics-summary")
    # the readout rule's numbers, rounded as a lab reports them
    assert "<th>all patients (n=4)</th><th>PASS (n=1)</th><th>NOT_EVALUABLE (n=1)</th>" in summary
    assert "<td>Cmax /µL</td><td>150.0 (62.5–230.1) n=3</td><td>310.0 (310.0–310.0) n=1</td>" in (
        summary
    )
    assert "<td>– (n=0)</td>" in summary and "<td>Tmax (day)</td><td>28 (21–28) n=3</td>" in summary
    assert "<summary>Treg/µL</summary>" in summary  # the other measures fold away
    for anchor, alt in (
        ("spaghetti", "donor NK cells per µL against study day, every patient"),
        ("swimmer", "swimmer plot of every patient"),
        ("treg", "Treg and Ki-67+ Treg percent of CD4 against study day, every patient"),
    ):
        sec = _section(index, anchor)
        assert '<img src="data:image/png;base64,' in sec and f'alt="{alt}"' in sec, anchor
        assert f'<a href="#{anchor}">' in index
    swimmer = _section(index, "swimmer")
    assert "Not configured" not in swimmer and "not placed" not in swimmer
    assert "without a usable" not in swimmer


def test_cohort_view_says_what_is_missing(tmp_path):
    config, results = build_fixture(tmp_path)
    (results / "cohort" / "kinetics_summary.tsv").unlink()
    del config["sheets"]["adverse_events"]
    out = tmp_path / "reports"
    index = run_report(Study(config, tmp_path), report_paths(results), out, RUN_DATE)[0].read_text()
    assert "cohort/kinetics_summary.tsv not available (run the readout rule)" in index
    assert "Not configured: adverse events sheet." in _section(index, "swimmer")


def test_lab_rounding_and_words():
    from nkflow.report import _format as f

    assert (f.per_ul("75.2441"), f.per_ul("12.25"), f.per_ul("")) == ("75.2", "12.3", "")
    assert f.interval("64.3202", "88.0232") == "64.3 – 88.0" and f.interval("", "1") == ""
    assert (f.pct("38"), f.pct("0.4871"), f.pct("QNS")) == ("38.0", "0.49", "QNS")
    assert (f.count("380"), f.count("12.5"), f.count("-3")) == ("380", "13", "-3")
    assert f.dose("3e+06") == "3.0 x 10^6 cells/kg"
    assert (
        f.dose("9.96e+06") == "1.0 x 10^7 cells/kg" and f.dose("2.45e+08") == "2.5 x 10^8 cells/kg"
    )
    assert (f.yes_no("true"), f.yes_no("False"), f.yes_no("unknown")) == ("yes", "no", "unknown")


def test_visit_table_is_rounded_with_short_headers_and_wrapping_flags(rendered):
    kin = _section(rendered["P01"], "kinetics")
    table = kin[: kin.index("All visit columns")]
    assert "<th>donor NK /µL</th><th>95 % interval</th>" in table
    assert "donor_nk_per_ul_hi95" not in table
    assert "<td>123.1</td><td>101.5 – 148.0</td>" in table


def test_a_check_recorded_only_is_not_listed_as_not_pass():
    """NOT_ASSESSED with a PASS severity (no $LOST in the file) is recorded, not a QC issue;
    NOT_ASSESSED with a WARN severity (time QC not assessed) is listed."""
    from nkflow.report._pages import _tube_status_rows

    def row(check, status, code):
        return {"sample_id": "S1", "tube": "nk", "tube_status": "PASS", "check": check,
                "status": status, "reason_code": code, "message": "m"}  # fmt: skip

    rows = [row("acquisition", "NOT_ASSESSED", "events_lost_not_assessed"), row("x", "PASS", "ok")]
    assert _tube_status_rows(rows, {})[0][3] == (
        "all checks PASS; recorded only: events_lost_not_assessed"
    )
    rows.append(row("time_qc", "NOT_ASSESSED", "time_not_assessed"))
    assert _tube_status_rows(rows, {})[0][3] == "time_qc: NOT_ASSESSED time_not_assessed (m)"
    # a lab that makes it a WARN sees it listed
    cfg = {"qc": {"severity": {"events_lost_not_assessed": "WARN"}}}
    assert (
        "acquisition: NOT_ASSESSED events_lost_not_assessed" in _tube_status_rows(rows, cfg)[0][3]
    )


def test_spaghetti_end_labels_are_spread_apart_and_moved_as_little_as_possible():
    from nkflow.report._cohort import spread_labels

    anchors = [2.00, 1.01, 1.00, 1.02, 1.50]  # three ids ending on ~the same value
    placed = spread_labels(anchors, 0.1)
    assert placed[0] == 2.00 and placed[4] == 1.50  # far from the others: not moved
    stack = sorted(placed[1:4])
    assert stack == pytest.approx([0.91, 1.01, 1.11])  # 0.1 apart, centred on their mean 1.01
    assert sorted(range(5), key=lambda i: placed[i]) == sorted(range(5), key=lambda i: anchors[i])
    # a stack that grows into its neighbour takes it in: still 0.1 apart, centred
    merged = sorted(spread_labels([0.0, 0.02, 0.04, 0.2], 0.1))
    assert [b - a for a, b in zip(merged, merged[1:], strict=False)] == pytest.approx([0.1] * 3)
    assert sum(merged) / 4 == pytest.approx((0.0 + 0.02 + 0.04 + 0.2) / 4)


def test_source_date_epoch_fixes_the_run_date_so_pages_repeat(rendered, tmp_path, monkeypatch):
    """Without --run-date the page shows the wall clock; SOURCE_DATE_EPOCH (the reproducible-
    builds convention) pins it, so two runs give byte-identical pages; a bad value is refused."""
    from nkflow.errors import ConfigError
    from nkflow.stages import report_run_date

    assert report_run_date({"SOURCE_DATE_EPOCH": "1700000000"}) == "2023-11-14T22:13:20Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report_run_date({}))
    with pytest.raises(ConfigError, match=r"SOURCE_DATE_EPOCH is '17e8'; expected a whole"):
        report_run_date({"SOURCE_DATE_EPOCH": "17e8"})
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pages = []
    for name in ("a", "b"):
        study = Study(rendered["config"], rendered["root"])
        run_report(study, report_paths(rendered["results"]), tmp_path / name)
        pages.append((tmp_path / name / "P02.html").read_bytes())
    assert pages[0] == pages[1] and b"2023-11-14T22:13:20Z" in pages[0]
