"""Unit tests of nkflow.report, and the hand-built results directory they (and the browser
test, tests/browser/test_report_browser.py) render.

Four patients with known answers, written as the producing steps document them
(docs/DEVELOPING.md, config/README.md):

- P01 PASS: ALC 0.45 x10^3/uL -> 450/uL, NK 380/1000 live events = 38 %, donor 72 % (CD56,
  5 loci) -> 123.12/uL (DOMAIN.md worked example), interval 101.5-148, day 13.
- P02 FAIL, borderline: 95.5/uL, interval 80.2-112.9 (contains 100), day 14.
- P03 NOT_EVALUABLE: day-14 NK tube failed time QC (reason qc_fail:time_burst).
- P04 FAIL: 12.25/uL, interval 9.1-15.8, day 15, flag nk_donor_is_hsct_donor.

Only files are written; nothing is computed from them here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from nkflow.errors import ConfigError
from nkflow.report import run_report

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


ENDPOINT_COLUMNS = [
    "patient_id",
    "sample_id",
    "study_day",
    "alc_per_ul",
    "nk_pct_of_lymphocytes",
    "chimerism_fraction",
    "donor_chimerism_pct",
    "donor_nk_per_ul",
    "verdict",
    "reason",
    "donor_nk_per_ul_lo95",
    "donor_nk_per_ul_hi95",
    "borderline",
    "flags",
    "qc_status",
    "alc_source_value",
    "alc_source_unit",
    "alc_date",
    "alc_source_row",
    "nk_events",
    "lymphocyte_events",
    "nk_tube_fcs",
    "chimerism_date",
    "chimerism_n_loci",
    "chimerism_sd",
    "cells_per_kg_total",
    "n_infusions",
]

ENDPOINT_ROWS = [
    # fmt: off
    [
        "P01",
        "P01-D14",
        "13",
        "450",
        "38",
        "CD56",
        "72",
        "123.12",
        "PASS",
        "",
        "101.5",
        "148",
        "False",
        "",
        "PASS",
        "0.45",
        "10^3/uL",
        "2024-01-15",
        "3",
        "380",
        "1000",
        "P01_D14_nk.fcs",
        "2024-01-15",
        "5",
        "2.1",
        "9e+06",
        "3",
    ],
    [
        "P02",
        "P02-D14",
        "14",
        "500",
        "25",
        "PB",
        "76.4",
        "95.5",
        "FAIL",
        "",
        "80.2",
        "112.9",
        "True",
        "qc_warn:low_events",
        "WARN",
        "500",
        "cells/uL",
        "2024-02-16",
        "7",
        "250",
        "1000",
        "P02_D14_nk.fcs",
        "2024-02-16",
        "",
        "",
        "6e+06",
        "3",
    ],
    [
        "P03",
        "P03-D14",
        "14",
        "610",
        "",
        "CD56",
        "80",
        "",
        "NOT_EVALUABLE",
        "qc_fail:time_burst",
        "",
        "",
        "False",
        "",
        "FAIL",
        "0.61",
        "10^9/L",
        "2024-03-20",
        "11",
        "",
        "",
        "P03_D14_nk.fcs",
        "2024-03-20",
        "",
        "",
        "9e+06",
        "3",
    ],
    [
        "P04",
        "P04-D14",
        "15",
        "350",
        "5",
        "CD56",
        "70",
        "12.25",
        "FAIL",
        "",
        "9.1",
        "15.8",
        "False",
        "nk_donor_is_hsct_donor",
        "PASS",
        "350",
        "cells/uL",
        "2024-04-22",
        "15",
        "50",
        "1000",
        "P04_D14_nk.fcs",
        "2024-04-22",
        "4",
        "3.5",
        "1.2e+07",
        "3",
    ],
    # fmt: on
]

VISIT_COLUMNS = [
    "patient_id",
    "sample_id",
    "collection_date",
    "study_day",
    "alc_per_ul",
    "nk_pct_of_lymphocytes",
    "nk_per_ul",
    "nk_per_ul_lo95",
    "nk_per_ul_hi95",
    "donor_chimerism_pct",
    "donor_nk_per_ul",
    "donor_nk_per_ul_lo95",
    "donor_nk_per_ul_hi95",
    "treg_pct_of_cd4",
    "treg_ki67_pct_of_cd4",
    "treg_ki67_per_ul",
]


def _visit_rows() -> list[list[str]]:
    rows = []
    # donor NK/uL per patient per visit (D14 values match ENDPOINT_ROWS)
    donor = {
        "P01": ["", "40.5", "123.12", "310"],
        "P02": ["", "20", "95.5", "150"],
        "P03": ["", "35", "", "60"],
        "P04": ["", "3", "12.25", "8"],
    }
    for pid in PATIENTS:
        for i, (visit, day) in enumerate(DAYS.items()):
            d = donor[pid][i]
            shown_day = CHOSEN_DAY[pid] if visit == "D14" else str(day)
            rows.append(
                [
                    pid,
                    f"{pid}-{visit}",
                    f"2024-01-{1 + day:02d}",
                    shown_day,
                    "450",
                    "20",
                    "90" if d else "",
                    "80" if d else "",
                    "101" if d else "",
                    "70" if d else "",
                    d,
                    str(round(float(d) * 0.8, 2)) if d else "",
                    str(round(float(d) * 1.2, 2)) if d else "",
                    str(4.5 + i),
                    str(0.5 + i / 2),
                    str(1 + i),
                ]
            )
    return rows


QC_COLUMNS = [
    "sample_id",
    "tube",
    "tube_status",
    "check",
    "status",
    "reason_code",
    "value",
    "threshold",
    "message",
]


def build_fixture(root: Path) -> tuple[dict[str, Any], Path]:
    """Write the fixture under ``root``; returns (config, results_dir).

    Sheets live in ``root/sheets`` and config paths are relative to ``root`` (pass
    ``base_dir=root`` to ``run_report``).
    """
    results = root / "results"
    sheets = root / "sheets"
    _tsv(results / "cohort" / "endpoints.tsv", ENDPOINT_COLUMNS, ENDPOINT_ROWS)
    _tsv(results / "cohort" / "visits.tsv", VISIT_COLUMNS, _visit_rows())
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
                tdir = results / "tubes" / sid / tube
                tdir.mkdir(parents=True, exist_ok=True)
                colour = (200, 60, 60) if failed else (60, 120, 200)
                (tdir / "gating.png").write_bytes(tiny_png(48, 32, colour))
                prov = {
                    "fcs_path": f"data/{sid}_{tube}.fcs",
                    "sha256": f"{PATIENTS.index(pid):02d}{visit}{tube}".ljust(64, "0"),
                    "fcs_version": "FCS3.1",
                    "gate_tree_digest": "abc123",
                    "software": {"nkflow": "0.1.0", "flowkit": "1.3.2"},
                }
                (tdir / "provenance.json").write_text(json.dumps(prov), encoding="utf-8")
    _tsv(results / "qc" / "tubes.tsv", QC_COLUMNS, qc_rows)
    _tsv(
        results / "cohort" / "counts.tsv",
        ["sample_id", "tube", "population", "events"],
        [["P01-D14", "nk", "nk", "380"]],
    )
    for pid in PATIENTS:
        doc = {
            "patient_id": pid,
            "infusions": [
                {
                    "infusion_number": n,
                    "infusion_date": f"2024-01-0{n}",
                    "cells_infused": 100000000,
                    "body_weight_kg": 33.3,
                    "cells_per_kg": 3.0e6,
                }
                for n in (1, 2, 3)
            ],
            "response": [
                {"assessment_date": "2024-02-28", "criteria": "ELN 2017", "category": "CR"}
            ]
            if pid == "P01"
            else [],
            "adverse_events": [
                {"date": "2024-01-02", "term": "fever", "ctcae_grade": 1, "relation": "possible"}
            ]
            if pid in ("P01", "P02")
            else [],
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
        [["P01", "2024-01-15", "0.45", "10^3/uL"]],
    )
    gating = root / "gating" / "nk_v1.yaml"
    gating.parent.mkdir(parents=True, exist_ok=True)
    gating.write_text(
        "name: nk_v1\npanel: nk_v1\ngates:\n"
        "  - {id: singlets, parent: null, type: polygon}\n"
        "  - {id: nk, parent: singlets, type: rectangle}\n",
        encoding="utf-8",
    )
    config = {
        "sheets": {"samples": "sheets/samples.tsv", "cbc": "sheets/cbc.tsv"},
        "gating": {"nk_v1": "gating/nk_v1.yaml"},
        "panels": {},
        "endpoints": {"threshold": 100, "lymphocyte_population": "live"},
        "results": "results",
    }
    return config, results


# ----------------------------------------------------------------------------- tests

RUN_DATE = "2031-05-06T07:08:09Z"  # a date no table contains, so it can be located


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    config, results = build_fixture(root)
    out = root / "reports"
    paths = run_report(config, results, out, RUN_DATE, base_dir=root)
    pages = {p.stem: p.read_text(encoding="utf-8") for p in paths}
    return {"root": root, "config": config, "results": results, "out": out, "paths": paths, **pages}


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return page[start : page.index("</section>", start)]


def test_run_report_writes_index_then_one_page_per_patient_in_table_order(rendered):
    out = rendered["out"]
    assert rendered["paths"] == [out / "index.html", *(out / f"{p}.html" for p in PATIENTS)]


def test_banner_shows_verdict_word_value_interval_and_actual_day(rendered):
    banner = _section(rendered["P01"], "verdict")
    assert 'class="banner v-PASS"' in banner
    assert '<div class="verdict-word">PASS</div>' in banner
    assert "Donor NK cells at day 14: <b>123.12 /µL</b> (95 % interval 101.5 – 148)" in banner
    assert "Sample P01-D14, actual study day <b>13</b>" in banner
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
        "<td>450 cells/µL</td><td>original value 0.45 10^3/uL; date 2024-01-15; CBC row 3; "
        "table sheets/cbc.tsv</td>" in numbers
    )
    assert (
        "<td>38 %</td><td>380 NK events / 1000 live events; tube nk; FCS file P01_D14_nk.fcs</td>"
        in numbers
    )
    assert (
        "<td>72 %</td><td>fraction CD56; date 2024-01-15; 5 informative STR loci, SD 2.1</td>"
        in numbers
    )
    assert "450 × 38 % × 72 % = <b>123.12</b>" in numbers


def test_missing_source_fields_say_not_recorded_instead_of_guessing(rendered):
    numbers = _section(rendered["P03"], "numbers")
    assert "<td>NK (CD56+ CD3−) % of lymphocytes</td><td>not recorded</td>" in numbers
    assert "not recorded NK events / not recorded live events" in numbers


def test_kinetics_dose_response_and_adverse_events(rendered):
    kin = _section(rendered["P01"], "kinetics")
    assert kin.count('<img src="data:image/png;base64,') == 1
    assert '<td>P01-D28</td><td>2024-01-29</td><td class="num">28</td>' in kin
    dose = _section(rendered["P01"], "dose")
    assert "<th>infusion_number</th><th>infusion_date</th><th>cells_infused</th>" in dose
    assert '<td class="num">3</td><td>2024-01-03</td><td class="num">100000000</td>' in dose
    assert "<h3>Response assessments</h3>" in dose and "<td>ELN 2017</td><td>CR</td>" in dose
    assert '<td>fever</td><td class="num">1</td><td>possible</td>' in dose
    assert "<h3>Adverse events</h3>" in _section(rendered["P03"], "dose")
    assert "None recorded." in _section(rendered["P03"], "dose")


def test_qc_section_lists_statuses_reasons_and_time_qc_removals(rendered):
    qc = _section(rendered["P03"], "qc")
    assert (
        '<td>P03-D14</td><td>nk</td><td><span class="badge FAIL">FAIL</span></td>'
        "<td>time_qc: FAIL time_burst (removed 6200 events in 10.0-12.5 s)</td>" in qc
    )
    assert "<h3>Time-QC removals</h3>" in qc
    assert qc.count("<td>time_qc</td>") == 16  # 8 tubes in the table + 8 in the full list


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
    assert hashlib.sha256(canonical.encode()).hexdigest() in prov
    assert "Gate tree used: nk_v1 (gating/nk_v1.yaml)" in prov
    assert "<td>nk</td><td>singlets</td><td>rectangle</td>" in prov
    assert f"<td>report run date</td><td>{RUN_DATE}</td>" in prov


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
    index = rendered["index"]
    hrefs = re.findall(r'href="([^"#][^"]*)"', index)
    assert hrefs == [f"{p}.html" for p in PATIENTS]
    assert all((rendered["out"] / h).is_file() for h in hrefs)
    table = index[index.index('<table class="sortable" id="cohort">') :]
    assert '<td data-sort="1a"><span class="badge PASS">PASS</span></td>' in table
    assert (
        '<td data-sort="2b"><span class="badge FAIL">FAIL</span>'
        ' <span class="badge borderline">borderline</span></td>' in table
    )
    assert '<td data-sort="12.25">12.25</td><td>9.1 – 15.8</td><td data-sort="15">15</td>' in table
    assert '<span class="badge flag">nk_donor_is_hsct_donor</span>' in table
    assert "4 patients: " in index and "function sortBy(table, th, col)" in index


def test_index_qc_summary_counts_tubes_by_status(rendered):
    qc = _section(rendered["index"], "qc")
    # 4 patients x 4 visits = 16 tubes of each kind; only P03-D14 nk failed
    n = '<td class="num">{}</td>'
    assert "<td>nk</td>" + "".join(n.format(x) for x in (15, 0, 1, 16)) in qc
    assert "<td>treg</td>" + "".join(n.format(x) for x in (16, 0, 0, 16)) in qc
    assert "Time-QC rows across tubes (32)" in qc


def test_identical_inputs_and_run_date_give_identical_bytes(rendered, tmp_path):
    out2 = tmp_path / "again"
    paths = run_report(
        rendered["config"], rendered["results"], out2, RUN_DATE, base_dir=rendered["root"]
    )
    for p in paths:
        assert p.read_bytes() == (rendered["out"] / p.name).read_bytes(), p.name


def test_table_text_is_escaped(tmp_path):
    config, results = build_fixture(tmp_path)
    ep = results / "cohort" / "endpoints.tsv"
    ep.write_text(ep.read_text().replace("qc_warn:low_events", "<b>x</b>"), encoding="utf-8")
    run_report(config, results, tmp_path / "r", RUN_DATE, base_dir=tmp_path)
    page = (tmp_path / "r" / "P02.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_missing_optional_inputs_become_notes_not_crashes(tmp_path):
    config, results = build_fixture(tmp_path)
    (results / "cohort" / "visits.tsv").unlink()
    (results / "cohort" / "patients" / "P02.json").unlink()
    run_report(config, results, tmp_path / "r", RUN_DATE, base_dir=tmp_path)
    page = (tmp_path / "r" / "P02.html").read_text(encoding="utf-8")
    assert "No visits for this patient in visits.tsv." in page
    assert "No per-patient JSON (cohort/patients/P02.json) was found." in page
    assert f"visits table not found at {results / 'cohort' / 'visits.tsv'}" in page


def test_missing_endpoints_table_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"endpoints\.tsv: endpoints table not found; expected"):
        run_report({}, tmp_path / "results", tmp_path / "r", RUN_DATE, base_dir=tmp_path)


def test_unsafe_patient_id_is_refused_with_the_row(tmp_path):
    config, results = build_fixture(tmp_path)
    ep = results / "cohort" / "endpoints.tsv"
    ep.write_text(ep.read_text().replace("P03\tP03-D14", "../x\tP03-D14"), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"endpoints\.tsv row 3: patient_id '\.\./x' is not a safe"
    ):
        run_report(config, results, tmp_path / "r", RUN_DATE, base_dir=tmp_path)
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
