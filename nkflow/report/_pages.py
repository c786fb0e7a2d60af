"""Rendering the per-patient pages and the cohort index from a :class:`ReportInputs` bundle.

Contract: pure functions from already-loaded inputs to HTML text. No number is computed here:
every value shown is the cell text of a cohort table (or a per-tube sidecar), and the figures
plot those same values. Column names are looked up by the names documented in
``config/README.md``; when a column is absent the page says "not recorded" rather than
guessing. The run date appears only in the provenance section.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nkflow.clinical.endpoint_settings import DOSE_RANGE_SOURCE, EndpointSettings
from nkflow.qc import QC_COLUMNS
from nkflow.reasons import Reason
from nkflow.report import _format as fmt
from nkflow.report import _html as h
from nkflow.report._figures import (
    CohortPoint,
    Series,
    cohort_figure,
    distribution_figure,
    kinetics_figure,
)
from nkflow.report._inputs import ReportInputs, Row

logger = logging.getLogger(__name__)

VERDICTS = ("PASS", "FAIL", "NOT_EVALUABLE")
VERDICT_RANK = {"PASS": "1", "FAIL": "2", "NOT_EVALUABLE": "3"}
NOT_RECORDED = "not recorded"
#: versions the issue asks for, in display order (others tracked by provenance follow)
KEY_PACKAGES = ("nkflow", "flowkit", "flowio", "numpy", "pandas", "snakemake")


# ----------------------------------------------------------------------------- small helpers


def truthy(text: str) -> bool:
    """Table booleans: ``True``/``true``/``1``/``yes`` are true."""
    return text.strip().lower() in {"true", "1", "yes", "y"}


def split_codes(text: str) -> list[str]:
    """Split a ``;``-joined code list (flags, reasons), dropping empties."""
    return [c.strip() for c in text.replace(",", ";").split(";") if c.strip()]


def verdict_badges(row: Row) -> str:
    """Verdict word badge plus a 'borderline' badge when marked."""
    v = row.get("verdict", "") or "NOT_EVALUABLE"
    out = h.badge(v, v if v in VERDICTS else "flag")
    if truthy(row.get("borderline", "")):
        out += " " + h.badge("borderline", "borderline")
    return out


def interval_text(row: Row, prefix: str = "donor_nk_per_ul") -> str:
    """``'lo – hi'`` from the ``_lo95``/``_hi95`` columns (1 decimal), or ``''``."""
    return fmt.interval(row.get(f"{prefix}_lo95", ""), row.get(f"{prefix}_hi95", ""))


def png_uri(path: Path) -> str:
    """A ``data:`` URI for a PNG file (gating figures are embedded, never linked)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def flatten(doc: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested dicts/lists into ``(dotted.key, text)`` pairs for display."""
    out: list[tuple[str, str]] = []
    if isinstance(doc, dict):
        for k in sorted(doc):
            out.extend(flatten(doc[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(doc, list) and doc and all(isinstance(x, dict | list) for x in doc):
        for i, x in enumerate(doc):
            out.extend(flatten(x, f"{prefix}[{i}]"))
    elif isinstance(doc, bool):
        out.append((prefix, "yes" if doc else "no"))
    else:
        text = json.dumps(doc) if isinstance(doc, list) else ("" if doc is None else str(doc))
        out.append((prefix, text))
    return out


def rows_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """Table of text rows with the given columns."""
    return h.table(list(columns), [[r.get(c, "") for c in columns] for r in rows])


def fcs_of(prov: dict[str, Any]) -> tuple[str, str]:
    """(path, sha256) of the FCS file recorded in a tube ``provenance.json``."""
    return str(prov.get("fcs_file") or ""), str(prov.get("fcs_sha256") or "")


def time_qc_rows(inp: ReportInputs, tube_keys: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Per tube: assessed, events removed and removed ranges, from ``provenance.json``."""
    out = []
    for key in tube_keys:
        t = inp.tube_provenance.get(key, {}).get("time_qc")
        if not isinstance(t, dict):
            continue
        text = ", ".join(
            f"{float(r[0]):g}–{float(r[1]):g} s"
            if isinstance(r, list | tuple) and len(r) == 2
            else str(r)
            for r in t.get("removed_ranges_s") or []
        )
        assessed = fmt.yes_no(str(t.get("assessed", "")))
        out.append([key[0], key[1], assessed, str(t.get("n_removed", "")), text or "none"])
    return out


TIME_QC_HEADER = ["sample", "tube", "assessed", "events removed", "removed time ranges"]


# ----------------------------------------------------------------------------- patient page


def patient_samples(inp: ReportInputs, pid: str) -> list[str]:
    """The patient's sample ids: visits order (by study day), then sheet order, deduplicated."""
    seen: list[str] = []
    visits = sorted(
        (r for r in inp.visits if r.get("patient_id") == pid),
        key=lambda r: (
            fmt.number(r.get("study_day", "")) is None,
            fmt.number(r.get("study_day", "")) or 0.0,
        ),
    )
    for r in [*visits, *(r for r in inp.samples if r.get("patient_id") == pid)]:
        sid = r.get("sample_id", "")
        if sid and sid not in seen:
            seen.append(sid)
    ep = next((r for r in inp.endpoints if r["patient_id"] == pid), {})
    if ep.get("sample_id") and ep["sample_id"] not in seen:
        seen.append(ep["sample_id"])
    return seen


def _infusions(pid: str, ep: Row, inp: ReportInputs) -> tuple[list[Row], list[str]]:
    """The patient's infusion-sheet rows by infusion number, and each infusion's cells/kg.

    The cells/kg come from endpoints.tsv.
    """
    rows = sorted(
        _patient_rows(inp.sheets.get("infusions", []), pid),
        key=lambda r: fmt.number(r.get("infusion_number", "")) or 0.0,
    )
    return rows, [x.strip() for x in ep.get("cells_per_kg_infusions", "").split(",") if x.strip()]


def _dose_range(lo: float, hi: float) -> str:
    """``2.0 x 10^6 – 5.0 x 10^6`` (the unit said once, by the caller)."""
    return " – ".join(fmt.dose(f"{v:g}").removesuffix(" cells/kg") for v in (lo, hi))


def dose_range_text(pid: str, ep: Row, inp: ReportInputs) -> str:
    """What the flag ``dose_out_of_range:<n>`` says; ``""`` without the flag.

    Which infusions, their cells/kg (from endpoints.tsv) and the configured range with its source.
    """
    flags = [Reason.parse(f) for f in ep.get("flags", "").split(";") if f]
    flagged = [f.detail for f in flags if f.code == "dose_out_of_range"]
    if not flagged:
        return ""
    infusions, per_kg = _infusions(pid, ep, inp)
    by_number = (
        {
            f"{fmt.number(r.get('infusion_number', ''))}": k
            for r, k in zip(infusions, per_kg, strict=True)
        }
        if len(infusions) == len(per_kg)
        else {}
    )
    doses = ", ".join(
        f"infusion {n} ({fmt.dose(by_number[key]) if key in by_number else NOT_RECORDED})"
        for n in flagged[0].split(",")
        if n
        for key in [f"{fmt.number(n)}"]
    )
    lo, hi = (float(x) for x in inp.endpoint_settings.dose_range_per_kg)
    d_lo, d_hi = (float(x) for x in EndpointSettings.from_config(None).dose_range_per_kg)
    source = (
        f"the default, from {DOSE_RANGE_SOURCE}"
        if (lo, hi) == (d_lo, d_hi)
        else f"as configured; the default {_dose_range(d_lo, d_hi)} is from {DOSE_RANGE_SOURCE}"
    )
    return (
        f"Dose outside the configured range: {doses}; range {_dose_range(lo, hi)} NK cells/kg "
        f"per infusion (endpoints.dose_range_per_kg, {source})."
    )


def _banner(ep: Row, threshold: float, dose_note: str = "") -> str:
    verdict = ep.get("verdict", "") or "NOT_EVALUABLE"
    cls = verdict if verdict in VERDICTS else "NOT_EVALUABLE"
    value = ep.get("donor_nk_per_ul", "")
    ci = interval_text(ep)
    if value:
        headline = f"Donor NK cells at day 14: <b>{h.esc(fmt.per_ul(value))} /µL</b>"
        headline += f" (95 % interval {h.esc(ci)})" if ci else " (95 % interval not recorded)"
        ci_all = interval_text(ep, "donor_nk_per_ul_all")
        if ci_all:
            headline += f"; with gate placement and chimerism {h.esc(ci_all)}"
    else:
        headline = "Donor NK cells at day 14: <b>not available</b>"
    day = ep.get("study_day", "")
    sample = ep.get("sample_id", "")
    where = (
        f"Sample {h.esc(sample)}, actual study day <b>{h.esc(day)}</b>"
        if sample
        else "No day-14 sample was chosen"
    )
    if ep.get("window_days"):
        where += f" (visit window {h.esc(ep['window_days'])}"
        if ep.get("n_samples_in_window"):
            where += f", {h.esc(ep['n_samples_in_window'])} sample(s) in it"
        where += ")"
    lines = [
        f'<div class="headline">{headline}</div>',
        f"<div>{where}. Success means strictly more than {threshold:g} donor NK cells/µL.</div>",
    ]
    if truthy(ep.get("borderline", "")):
        badge = h.badge("borderline", "borderline")
        lines.append(f"<div>{badge} {_borderline_text(ep, threshold)}</div>")
    for label, col in (("Reason", "reason"), ("Flags", "flags")):
        if codes := split_codes(ep.get(col, "")):
            lines.append(f"<div>{label}: " + "".join(h.badge(c, "flag") for c in codes) + "</div>")
    if dose_note:
        lines.append(f"<div>{h.esc(dose_note)}</div>")
    word = h.esc(verdict)
    if truthy(ep.get("borderline", "")):
        word += '<br><span class="badge borderline">borderline</span>'
    return (
        f'<section id="verdict" class="banner v-{h.esc(cls)}">'
        f'<div class="verdict-word">{word}</div><div>{"".join(lines)}</div></section>'
    )


def _borderline_text(ep: Row, threshold: float) -> str:
    """Why the verdict is marked borderline, in the terms of its ``borderline_basis``."""
    if ep.get("borderline_basis", "") != "all_sources":
        text = (
            f"the 95 % interval contains {threshold:g}/µL: the verdict could change with "
            "counting error alone."
        )
        if ep.get("borderline_basis", "") == "counting":
            status = h.esc(ep.get("uncertainty_status", "") or NOT_RECORDED)
            text += f" Gate placement and chimerism were not assessed ({status})."
        return text
    parts = []
    lo, hi = ep.get("donor_nk_per_ul_all_lo95", ""), ep.get("donor_nk_per_ul_all_hi95", "")
    if lo and hi and (fmt.number(lo) or 0.0) <= threshold <= (fmt.number(hi) or 0.0):
        parts.append(
            f"the 95 % interval of gate placement, counting and chimerism "
            f"({h.esc(fmt.interval(lo, hi))}) contains {threshold:g}/µL"
        )
    if truthy(ep.get("verdict_unstable", "")):
        parts.append("a plausible re-gating gives the other verdict (see How sure)")
    p = ep.get("p_above_threshold", "")
    return "; ".join(parts) + (f"; P(> {threshold:g}/µL) = {h.esc(fmt.fixed(p, 2))}." if p else ".")


def _uncertainty(pid: str, ep: Row, inp: ReportInputs, threshold: float) -> str:
    """How sure the verdict is: the donor NK/uL draws, p above the threshold, the sources."""
    status = ep.get("uncertainty_status", "")
    if ep.get("verdict", "") not in ("PASS", "FAIL"):
        text = "No verdict to assess (NOT_EVALUABLE)."
    elif not status:
        text = "Not assessed (uncertainty_status not recorded)."
    elif status != "computed":
        text = (
            f"Gate placement, counting and chimerism error were not combined ({status}); "
            "borderline uses the counting interval alone. docs/uncertainty.md."
        )
    else:
        text = ""
    if text:
        return h.section("uncertainty", "How sure is the verdict", h.note(text))
    body = ""
    dist = inp.distributions.get(pid)
    if dist:
        uri = distribution_figure(
            dist.get("bin_edges", []),
            dist.get("counts", []),
            threshold,
            fmt.number(ep.get("donor_nk_per_ul", "")),
            (
                fmt.number(ep.get("donor_nk_per_ul_all_lo95", "")),
                fmt.number(ep.get("donor_nk_per_ul_all_hi95", "")),
            ),
            pid,
        )
        body += h.img(
            uri,
            f"distribution of day-14 donor NK cells per µL for {pid}",
            f"{dist.get('draws', '')} draws of donor NK/µL: each fitted gate boundary moved within "
            "its plausible range, counting error of the gated events, and the chimerism SD "
            f"(shaded: 95 % interval; dashed: {threshold:g}/µL; solid: the reported value; green "
            "bins above the threshold, red at or below).",
        )
    else:
        body += h.note("The distribution's histogram (patients/<id>.json) was not found.")
    flags = [Reason.parse(f) for f in ep.get("flags", "").split(";") if f]
    unstable = [str(f) for f in flags if f.code == "verdict_unstable"]
    rows = [
        ["P(donor NK/µL > threshold)", fmt.fixed(ep.get("p_above_threshold", ""), 3)],
        [
            "95 % interval, all sources",
            interval_text(ep, "donor_nk_per_ul_all") or NOT_RECORDED,
        ],
        ["95 % interval, counting only", interval_text(ep) or NOT_RECORDED],
        ["dominant source of spread", ep.get("dominant_spread_source", "") or NOT_RECORDED],
        [
            "variance share: gate / counting / chimerism",
            " / ".join(
                fmt.fixed(ep.get(f"{src}_variance_frac", ""), 2) or "-"
                for src in ("gate", "counting", "chimerism")
            ),
        ],
        ["verdict unstable", fmt.yes_no(ep.get("verdict_unstable", ""))],
        ["boundaries that flip it (gate units)", "; ".join(unstable) or "none"],
        ["borderline basis", ep.get("borderline_basis", "")],
    ]
    body += h.table(["quantity", "value"], rows)
    nk_tube = str(inp.endpoint_settings.tubes["nk"])
    key = (ep.get("sample_id", ""), nk_tube)
    record = inp.tube_provenance.get(key, {}).get("perturbation")
    if isinstance(record, dict) and record.get("boundaries"):
        ranges = [
            [
                str(b.get("id", "")),
                str(b.get("method", "")),
                f"{float(b.get('fitted', 0.0)):.4g}",
                f"{float(b.get('low', 0.0)):.4g} – {float(b.get('high', 0.0)):.4g}",
            ]
            for b in record["boundaries"]
        ]
        body += h.details(
            f"Plausible boundary ranges of tube {key[0]}/{key[1]} (provenance.json)",
            h.table(["boundary", "fitted by", "fitted", "plausible range"], ranges),
        )
    return h.section("uncertainty", "How sure is the verdict", body)


def _numbers(ep: Row, inp: ReportInputs) -> str:
    nr = NOT_RECORDED
    alc = ep.get("alc_per_ul", "")
    src_val, src_unit = ep.get("alc_source_value", ""), ep.get("alc_source_unit", "")
    alc_src = [
        f"original value {src_val} {src_unit}" if src_val or src_unit else f"original value {nr}",
        f"date {ep.get('alc_date', '') or nr}",
        cbc_source_row(ep, inp),
    ]

    nk_pct = ep.get("nk_pct_of_lymphocytes", "")
    num, den = ep.get("nk_events", ""), ep.get("lymphocyte_events", "")
    denom_pop = ep.get("lymphocyte_population", "") or str(
        inp.endpoint_settings.denominator_population
    )
    nk_src = [
        f"{num or nr} NK events / {den or nr} {denom_pop} events",
        "tube nk",
        f"FCS file {ep.get('nk_tube_fcs', '') or nr}",
    ]
    method = ep.get("count_method", "")
    if method:
        nk_src.append(f"absolute-count method {method}")

    donor = ep.get("donor_chimerism_pct", "")
    chim_src = [
        f"fraction {ep.get('chimerism_fraction', '') or nr}",
        f"date {ep.get('chimerism_date', '') or nr}",
        f"source {ep.get('chimerism_source', '') or nr}",
    ]
    sd = ep.get("donor_chimerism_sd", "")
    if sd:
        chim_src.append(f"SD {sd}")
    chim_src.extend(str_loci_text(ep, inp))

    result = ep.get("donor_nk_per_ul", "")
    # shown as a lab reports them; endpoints.tsv keeps full precision
    alc, nk_pct, donor = fmt.count(alc), fmt.pct(nk_pct), fmt.pct(donor)
    result = fmt.per_ul(result)
    rows = [
        ["ALC (absolute lymphocyte count)", f"{alc} cells/µL" if alc else nr, "; ".join(alc_src)],
        ["NK (CD56+ CD3−) % of lymphocytes", f"{nk_pct} %" if nk_pct else nr, "; ".join(nk_src)],
        ["Donor chimerism", f"{donor} %" if donor else nr, "; ".join(chim_src)],
        [
            "Donor NK cells/µL",
            f"{result} /µL" if result else nr,
            f"95 % interval {interval_text(ep) or nr}; endpoints.tsv",
        ],
    ]
    formula = ""
    # the ALC x fraction x donor equation holds for dual-platform counts only; with beads the
    # count comes from the bead ratio
    if alc and nk_pct and donor and result and method in ("", "dual_platform"):
        formula = (
            '<p class="formula">donor NK/µL = ALC × NK fraction × donor fraction = '
            f"{h.esc(alc)} × {h.esc(nk_pct)} % × {h.esc(donor)} % = <b>{h.esc(result)}</b>"
            ' <span class="note">(rounded; full precision in endpoints.tsv)</span></p>'
        )
    full = h.details(
        "Full endpoint row (every column of endpoints.tsv)",
        h.table(["column", "value"], [[c, ep.get(c, "")] for c in inp.endpoints_columns]),
    )
    return h.section(
        "numbers",
        "The numbers behind it",
        h.table(["quantity", "value", "source"], rows) + formula + full,
    )


def cbc_source_row(ep: Row, inp: ReportInputs) -> str:
    """Where the ALC came from: the CBC sheet's matching data row.

    The CBC sheet's 1-based data row with the same patient, date and original value (found, not
    computed).
    """
    sheet = (inp.config.get("sheets") or {}).get("cbc", "")
    rows = inp.sheets.get("cbc", [])
    if not sheet or not rows or not ep.get("alc_date"):
        return f"CBC row {NOT_RECORDED}"
    hits = [
        i
        for i, r in enumerate(rows, start=1)
        if r.get("patient_id") == ep.get("patient_id")
        and r.get("date") == ep.get("alc_date")
        and r.get("alc_value") == ep.get("alc_source_value")
    ]
    if len(hits) == 1:
        return f"{sheet} data row {hits[0]}"
    return f"{sheet}: {len(hits)} rows match patient, date and value"


def str_loci_text(ep: Row, inp: ReportInputs) -> list[str]:
    """Loci detail when % donor was computed from STR peaks (str_results/str_loci tables)."""
    if ep.get("chimerism_source") != "str_peaks":
        return []
    key = (ep.get("patient_id"), ep.get("chimerism_date"), ep.get("chimerism_fraction"))

    def match(r: Row) -> bool:
        return (r.get("patient_id"), r.get("date"), r.get("fraction")) == key

    out = []
    res = next((r for r in inp.str_results if match(r)), None)
    if res is not None:
        out.append(
            f"{res.get('n_loci', '') or NOT_RECORDED} informative loci"
            f" (CV {res.get('donor_pct_cv', '') or NOT_RECORDED},"
            f" {res.get('n_loci_excluded_outlier', '') or '0'} excluded as outliers)"
        )
    loci = [r for r in inp.str_loci if match(r)]
    if loci:
        out.append(
            "loci "
            + ", ".join(
                f"{r.get('marker', '')} {r.get('donor_pct', '') or '-'}"
                + ("" if r.get("status", "ok") == "ok" else f" [{r.get('status')}]")
                for r in loci
            )
        )
    if not out:
        out.append("STR loci: str_results.tsv / str_loci.tsv not found")
    return out


def _series(rows: Sequence[Row], label: str, col: str, ci: bool = False) -> Series:
    days = [fmt.number(r.get("study_day", "")) for r in rows]
    vals = [fmt.number(r.get(col, "")) for r in rows]
    lo = [fmt.number(r.get(f"{col}_lo95", "")) for r in rows] if ci else None
    hi = [fmt.number(r.get(f"{col}_hi95", "")) for r in rows] if ci else None
    return Series(label, days, vals, lo, hi)  # type: ignore[arg-type]


def _kinetics(pid: str, ep: Row, inp: ReportInputs, threshold: float) -> str:
    rows = [r for r in inp.visits if r.get("patient_id") == pid]
    rows.sort(key=lambda r: fmt.number(r.get("study_day", "")) or 0.0)
    if not rows:
        return h.section(
            "kinetics", "Kinetics over visits", h.note("No visits for this patient in visits.tsv.")
        )
    uri = kinetics_figure(
        [
            _series(rows, "donor NK/µL", "donor_nk_per_ul", ci=True),
            _series(rows, "total NK/µL", "total_nk_per_ul", ci=True),
        ],
        [
            _series(rows, "Treg % of CD4", "treg_pct_of_cd4"),
            _series(rows, "Ki-67+ Treg % of CD4", "treg_ki67_pct_of_cd4"),
        ],
        threshold,
        fmt.number(ep.get("study_day", "")),
        pid,
    )
    wanted = [
        "sample_id",
        "collection_date",
        "study_day",
        "status",
        "alc_per_ul",
        "nk_pct_of_lymphocytes",
        "total_nk_per_ul",
        "donor_chimerism_pct",
        "donor_nk_per_ul",
        "donor_nk_per_ul_lo95",
        "donor_nk_per_ul_hi95",
        "treg_pct_of_cd4",
        "treg_ki67_pct_of_cd4",
        "treg_ki67_per_ul",
        "flags",
    ]
    cols = [c for c in wanted if c in inp.visits_columns]
    body = h.img(
        uri,
        f"NK and Treg kinetics for {pid}",
        "Left: donor and total NK cells/µL per visit (log axis; bars = 95 % interval; dashed = "
        f"{threshold:g}/µL; dotted = day-14 sample). Right: Treg and Ki-67+ Treg % of CD4. "
        "Missing or zero values are not drawn on the log axis; the table lists every visit.",
    )
    body += visit_display_table(rows, cols)
    body += h.details("All visit columns (visits.tsv)", rows_table(rows, inp.visits_columns))
    return h.section("kinetics", "Kinetics over visits", body)


#: short headers of the visit table (the full column names are in the details below it)
VISIT_HEADERS = {
    "sample_id": "sample",
    "collection_date": "date",
    "study_day": "day",
    "alc_per_ul": "ALC /µL",
    "nk_pct_of_lymphocytes": "NK % of lymph.",
    "total_nk_per_ul": "total NK /µL",
    "donor_chimerism_pct": "% donor",
    "donor_nk_per_ul": "donor NK /µL",
    "donor_nk_per_ul_lo95": "95 % interval",
    "treg_pct_of_cd4": "Treg % of CD4",
    "treg_ki67_pct_of_cd4": "Ki-67+ Treg % of CD4",
    "treg_ki67_per_ul": "Ki-67+ Treg /µL",
}


def visit_display_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """The visit table as a lab reports it.

    Rounded cells, short headers, the interval in one column, flags as badges that wrap; the raw
    cells are in the 'All visit columns' table.
    """
    cols = [c for c in columns if c != "donor_nk_per_ul_hi95"]
    body = []
    for r in rows:
        cells = []
        for c in cols:
            text = r.get(c, "")
            if c == "donor_nk_per_ul_lo95":
                cells.append(interval_text(r))
            elif c in ("flags", "reason"):
                cells.append("".join(h.badge(f, "flag") for f in split_codes(text)))
            else:
                f = fmt.formatter_for(c)
                cells.append(f(text) if f else text)
        body.append(cells)
    return h.table(
        [VISIT_HEADERS.get(c, c) for c in cols],
        body,
        raw_columns=[i for i, c in enumerate(cols) if c in ("flags", "reason")],
        css_class="visits",
    )


def _patient_rows(rows: Sequence[Row], pid: str) -> list[Row]:
    return [r for r in rows if r.get("patient_id") == pid]


def _dose(pid: str, ep: Row, inp: ReportInputs) -> str:
    sheets = inp.config.get("sheets") or {}
    parts = ["<h3>NK-cell infusions</h3>"]
    inf, per_kg = _infusions(pid, ep, inp)
    if inf:
        cols = [c for c in inf[0] if c != "patient_id"]
        body = [[r.get(c, "") for c in cols] for r in inf]
        if len(per_kg) == len(inf):
            cols = [*cols, "cells/kg (endpoints.tsv)"]
            body = [[*row, fmt.dose(k)] for row, k in zip(body, per_kg, strict=True)]
        parts.append(h.table(cols, body))
        parts.append(h.note(f"Source: {sheets.get('infusions', 'infusion sheet')}."))
        dose_note = dose_range_text(pid, ep, inp)
        if dose_note:
            parts.append(f"<p>{h.esc(dose_note)}</p>")
    else:
        parts.append(h.note("No infusion rows for this patient in the infusion sheet."))
    totals = [
        (c, (fmt.formatter_for(c) or str)(ep[c]))
        for c in ("n_infusions", "cells_per_kg_total", "nk_donor_is_hsct_donor")
        if ep.get(c, "")
    ]
    if totals:
        parts.append(h.key_value_table(totals))
    for role, title, summary_cols in (
        (
            "response",
            "Response assessments",
            ("response_summary", "last_response", "last_mrd_status"),
        ),
        (
            "adverse_events",
            "Adverse events",
            (
                "n_adverse_events",
                "max_ctcae_grade",
                "n_related_adverse_events",
                "adverse_event_summary",
            ),
        ),
    ):
        if role not in sheets and not any(ep.get(c) for c in summary_cols):
            continue
        parts.append(f"<h3>{h.esc(title)}</h3>")
        rows = _patient_rows(inp.sheets.get(role, []), pid)
        if rows:
            parts.append(rows_table(rows, [c for c in rows[0] if c != "patient_id"]))
            parts.append(h.note(f"Source: {sheets.get(role, role)}."))
        else:
            parts.append(h.note("None recorded."))
        summary = [(c, ep[c]) for c in summary_cols if ep.get(c, "")]
        if summary:
            parts.append(h.key_value_table(summary))
    return h.section("dose", "Dose, response and adverse events", "\n".join(parts))


def _recorded_only(config: dict[str, Any]) -> Any:
    """Whether a qc.tsv row is recorded only: NOT_ASSESSED with a configured severity of PASS.

    Such as a file without ``$LOST`` or a panel marker no gate reads; the row stays in "Every QC
    check".
    """
    from nkflow.qc import QcConfig

    severity = QcConfig.from_dict((config or {}).get("qc", {})).severity

    def test(r: Row) -> bool:
        code = r.get("reason_code", "")
        return r.get("status", "") == "NOT_ASSESSED" and severity.get(code) == "PASS"

    return test


def _all_pass(rows: Sequence[Row], recorded_only: Any) -> str:
    kept = sorted({r.get("reason_code", "") for r in rows if recorded_only(r)})
    return "all checks PASS" + (f"; recorded only: {', '.join(kept)}" if kept else "")


def _tube_status_rows(qc_rows: Iterable[Row], config: dict[str, Any]) -> list[list[str]]:
    recorded_only = _recorded_only(config)
    by_tube: dict[tuple[str, str], list[Row]] = {}
    for r in qc_rows:
        by_tube.setdefault((r.get("sample_id", ""), r.get("tube", "")), []).append(r)
    out = []
    for (sid, tube), rs in by_tube.items():
        status = rs[0].get("tube_status", "")
        issues = [
            f"{r.get('check', '')}: {r.get('status', '')} {r.get('reason_code', '')}".strip()
            + (f" ({r['message']})" if r.get("message") else "")
            for r in rs
            if r.get("status", "") not in ("PASS", "") and not recorded_only(r)
        ]
        out.append(
            [
                sid,
                tube,
                h.badge(status, status or "flag"),
                h.esc("; ".join(issues) or _all_pass(rs, recorded_only)),
            ]
        )
    return out


def _is_time_check(r: Row) -> bool:
    return "time" in r.get("check", "").lower() or "time" in r.get("reason_code", "").lower()


def _qc(samples: Sequence[str], inp: ReportInputs) -> str:
    rows = [r for r in inp.qc if r.get("sample_id") in samples]
    if not rows:
        return h.section(
            "qc", "Quality control", h.note("No QC rows for this patient in qc/tubes.tsv.")
        )
    body = "<h3>Tube status</h3>" + h.table(
        ["sample", "tube", "tube status", "checks not PASS (reason)"],
        _tube_status_rows(rows, inp.config),
        raw_columns=(2, 3),
    )
    time_rows = [r for r in rows if _is_time_check(r)]
    body += "<h3>Time-QC removals</h3>"
    removed = time_qc_rows(inp, sorted({(r["sample_id"], r["tube"]) for r in rows}))
    if removed:
        body += h.table(TIME_QC_HEADER, removed)
        body += h.note("From each tube's provenance.json.")
    flagged = [r for r in time_rows if r.get("status", "") not in ("PASS", "")]
    if flagged:
        body += "<h3>Time-QC checks not PASS</h3>" + rows_table(flagged, QC_COLUMNS)
    body += (
        h.details(f"Time-QC checks ({len(time_rows)})", rows_table(time_rows, QC_COLUMNS))
        if time_rows
        else h.note("No time-QC rows recorded.")
    )
    body += h.details("Every QC check (qc/tubes.tsv rows)", rows_table(rows, QC_COLUMNS))
    return h.section("qc", "Quality control", body)


def _gating(pid: str, ep: Row, samples: Sequence[str], inp: ReportInputs) -> str:
    day14 = ep.get("sample_id", "")

    def figs(sid: str) -> str:
        keys = sorted(k for k in inp.gating_png if k[0] == sid)
        if not keys:
            return h.note(f"No gating figure found for sample {sid}.")
        out = []
        for key in keys:
            prov = inp.tube_provenance.get(key, {})
            path, _ = fcs_of(prov)
            out.append(
                h.img(
                    png_uri(inp.gating_png[key]),
                    f"gating for {key[0]} tube {key[1]}",
                    f"Sample {key[0]}, tube {key[1]}" + (f", FCS file {path}" if path else ""),
                )
            )
            out.append(_overrides_table(key, prov))
        return "\n".join(out)

    body = ""
    if day14:
        body += f"<h3>Day-14 sample {h.esc(day14)}</h3>" + figs(day14)
    else:
        body += h.note("No day-14 sample was chosen for this patient.")
    others = [s for s in samples if s != day14]
    if others:
        body += "<h3>Other visits</h3>"
        day_of = {r.get("sample_id"): r.get("study_day", "") for r in inp.visits}
        for sid in others:
            day = day_of.get(sid, "")
            body += h.details(f"Sample {sid}" + (f" (study day {day})" if day else ""), figs(sid))
    return h.section("gating", "Gating figures", body)


def _overrides_table(key: tuple[str, str], prov: dict[str, Any]) -> str:
    """The reviewers' corrections applied to one tube: old and new boundary, who, when, why."""
    recs = prov.get("overrides") or []
    if not recs:
        return ""
    rows = []
    for r in recs:
        if r.get("bounds"):
            change = "; ".join(
                f"{b['marker']} {b['side']}: "
                f"{'none (fit failed)' if b.get('old') is None else format(b['old'], '.4g')}"
                f" → {b['new']:.4g}"
                for b in r["bounds"]
            )
        else:
            change = f"vertices → {r.get('vertices', {}).get('new')}"
        rows.append(
            [
                r.get("gate", ""),
                change,
                r.get("author", ""),
                r.get("time_utc", ""),
                r.get("reason", ""),
                str(r.get("sha256", ""))[:16],
            ]
        )
    return (
        f'<div class="overrides"><b>Gate overrides applied to {h.esc(key[0])}/{h.esc(key[1])}'
        "</b>"
        + h.table(
            ["gate", "boundary (old → new)", "by", "when (UTC)", "reason", "file sha256"], rows
        )
        + "</div>"
    )


def _gate_tree_table(doc: Any) -> str:
    gates = doc.get("gates") if isinstance(doc, dict) else None
    if not isinstance(gates, list):
        return h.note("Gate tree file could not be parsed into gates.")
    rows = []
    for g in gates:
        if not isinstance(g, dict):
            continue
        params = {k: v for k, v in g.items() if k not in ("id", "parent", "type")}
        rows.append(
            [
                str(g.get("id", "")),
                str(g.get("parent", "")),
                str(g.get("type", "")),
                json.dumps(params, sort_keys=True, default=str),
            ]
        )
    return h.table(["gate", "parent", "type", "definition"], rows)


def _recorded(
    inp: ReportInputs, tube_keys: Sequence[tuple[str, str]], key: str, gate_file: str | None = None
) -> list[str]:
    """The distinct values of ``key`` in the tubes' provenance.json (sorted, empty dropped).

    With ``gate_file``, only the tubes gated with a gate tree of that file name.
    """
    provs = [inp.tube_provenance[k] for k in tube_keys if k in inp.tube_provenance]
    if gate_file is not None:
        name = Path(gate_file).name
        provs = [p for p in provs if Path(str(p.get("gating_file", ""))).name == name]
    return sorted({str(p.get(key, "")) for p in provs} - {""})


def _provenance(
    inp: ReportInputs,
    run_date: str,
    tube_keys: Sequence[tuple[str, str]],
    gate_names: Sequence[str] | None,
    *,
    cohort: bool = False,
) -> str:
    """Provenance section; ``cohort=True`` (index) folds the FCS list and omits per-tube files."""
    from nkflow.config import config_digest, tube_settings
    from nkflow.provenance import software_versions

    files = [[role, path, sha] for role, path, sha in inp.input_hashes]
    fcs = []
    for key in tube_keys:
        prov = inp.tube_provenance.get(key)
        if prov is None:
            fcs.append([f"FCS {key[0]}/{key[1]}", "provenance.json not found", ""])
            continue
        path, sha = fcs_of(prov)
        fcs.append([f"FCS {key[0]}/{key[1]}", path or NOT_RECORDED, sha or NOT_RECORDED])
    columns = ["role", "path", "sha256"]
    if cohort:
        body = "<h3>Input files (sha256)</h3>" + h.table(columns, files)
        body += h.details(f"FCS files ({len(fcs)})", h.table(columns, fcs))
    else:
        body = "<h3>Input files (sha256)</h3>" + h.table(columns, files + fcs)
    versions = software_versions()
    order = [*KEY_PACKAGES, *(k for k in versions if k not in KEY_PACKAGES)]
    body += "<h3>Software versions (report build)</h3>" + h.table(
        ["package", "version"], [[k, versions[k]] for k in order if k in versions]
    )
    digest = config_digest(inp.config)
    config_rows = [("config digest (sha256 of canonical JSON)", digest)]
    # tubes record the digest of the settings they depend on (nkflow.config.tube_settings)
    expected = {config_digest(tube_settings(inp.config))} | {
        config_digest(tube_settings(inp.config, p, g))
        for p in inp.config.get("panels", {})
        for g in (None, *inp.config.get("gating", {}))
    }
    recorded = _recorded(inp, tube_keys, "settings_sha256")
    if recorded:
        same = set(recorded) <= expected
        config_rows.append(
            (
                "tube settings digest recorded by the tubes",
                ", ".join(recorded)
                + (" (same)" if same else " — DIFFERS from this report's config"),
            )
        )
    body += "<h3>Configuration</h3>" + h.key_value_table(config_rows)
    names = sorted(inp.gate_trees) if gate_names is None else [g for g in gate_names if g]
    for name in names:
        path, doc = inp.gate_trees.get(name, ("", None))
        recorded = _recorded(inp, tube_keys, "gating_sha256", gate_file=path)
        now = next((sha for role, p, sha in inp.input_hashes if p == path), "")
        title = f"Gate tree used: {name}" + (f" ({path})" if path else "")
        content = ""
        if recorded:
            same = recorded == [now]
            content = h.note(
                "sha256 recorded by the tubes: "
                + ", ".join(recorded)
                + (" (same file as now)" if same else f" — DIFFERS from the file now ({now})")
            )
        content += (
            _gate_tree_table(doc) if doc is not None else h.note("gate tree file not available")
        )
        body += h.details(title, content)
    per_tube = [
        h.details(
            f"provenance.json of {k[0]}/{k[1]}", h.key_value_table(flatten(inp.tube_provenance[k]))
        )
        for k in tube_keys
        if k in inp.tube_provenance and not cohort
    ]
    if per_tube:
        body += "<h3>Per-tube provenance</h3>" + "\n".join(per_tube)
    if inp.missing:
        body += h.details(
            f"Inputs missing or unreadable ({len(inp.missing)})",
            "<ul>" + "".join(f"<li>{h.esc(m)}</li>" for m in inp.missing) + "</ul>",
        )
    body += "<h3>Run</h3>" + h.key_value_table([("report run date", run_date)])
    return h.section("provenance", "Provenance", body)


REVIEW_WORDS = {
    "approved": "approved",
    "reviewed": "reviewed, not approved",
    "void": "approval VOID",
    "not_reviewed": "not reviewed",
}


def _review(pid: str, ep: Row, inp: ReportInputs) -> str:
    """Review and approval state, with each signature's manifestation (name, time, meaning)."""
    status = ep.get("review_status", "") or "not recorded"
    rec = inp.review.get(pid, {})
    body = f"<p>Review status: {h.badge(REVIEW_WORDS.get(status, status), 'review-' + status)}</p>"
    if ep.get("review_note"):
        body += f"<p>{h.esc(ep['review_note'])}</p>"
    sigs = rec.get("signatures") or []
    if sigs:
        rows = [
            [
                h.esc(s.get("name", "")),
                h.esc(s.get("user", "")),
                h.esc(s.get("meaning", "")),
                h.esc(s.get("time_utc", "")),
                h.esc(s.get("time_local", "")),
                "VOID: " + h.esc("; ".join(s.get("changed") or [])) if s.get("void") else "holds",
                h.esc(str(s.get("seq", ""))),
            ]
            for s in sigs
        ]
        body += "<h3>Signatures</h3>" + h.table(
            ["printed name", "user id", "meaning", "signed (UTC)", "signed (local)", "standing",
             "audit seq"],
            rows,
            raw_columns=range(7),
        )  # fmt: skip
        body += h.note(
            "Each signature rests on the endpoint row above and the sha256 of every input and "
            "output of this patient's tubes (audit log, review.audit_log); a change to any of "
            "them voids it. Check the log with 'nkflow audit verify'."
        )
    else:
        body += h.note("No signature on this patient's results.")
    return h.section("review", "Review and sign-off", body)


def _nav(items: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="{h.esc(href)}">{h.esc(text)}</a>' for href, text in items)
    return f'<nav class="sections">{links}</nav>'


def render_patient_page(inp: ReportInputs, patient_id: str, run_date: str) -> str:
    """The self-contained HTML page of one patient (see the package docstring)."""
    ep = next((r for r in inp.endpoints if r["patient_id"] == patient_id), None)
    if ep is None:
        raise KeyError(f"patient {patient_id!r} is not in endpoints.tsv")
    threshold = inp.endpoint_settings.threshold_per_ul
    samples = patient_samples(inp, patient_id)
    sheet_rows = _patient_rows(inp.samples, patient_id)
    tube_keys = sorted(
        {k for k in [*inp.gating_png, *inp.tube_provenance] if k[0] in samples}
        | {(r.get("sample_id", ""), r.get("tube", "")) for r in sheet_rows}
    )
    gate_names = sorted({r.get("gating", "") for r in sheet_rows})
    body = "\n".join(
        [
            _banner(ep, threshold, dose_range_text(patient_id, ep, inp)),
            _review(patient_id, ep, inp),
            _numbers(ep, inp),
            _uncertainty(patient_id, ep, inp, threshold),
            _kinetics(patient_id, ep, inp, threshold),
            _dose(patient_id, ep, inp),
            _qc(samples, inp),
            _gating(patient_id, ep, samples, inp),
            _provenance(inp, run_date, tube_keys, gate_names or None),
        ]
    )
    nav = _nav(
        [
            ("index.html", "← cohort index"),
            ("#review", "review"),
            ("#numbers", "numbers"),
            ("#uncertainty", "how sure"),
            ("#kinetics", "kinetics"),
            ("#dose", "dose"),
            ("#qc", "QC"),
            ("#gating", "gating"),
            ("#provenance", "provenance"),
        ]
    )
    verdict = ep.get("verdict", "") or "NOT_EVALUABLE"
    return h.page(
        f"{patient_id}: {verdict} — nkflow",
        f"nkflow · patient {h.esc(patient_id)}",
        nav,
        body,
    )


# ----------------------------------------------------------------------------- cohort index


def _cohort_table(inp: ReportInputs) -> str:
    cols = [
        "patient",
        "verdict",
        "donor NK/µL",
        "95 % interval",
        "study day",
        "sample",
        "flags",
        "reason",
        "QC",
        "review",
    ]
    rows, verdict_keys, value_keys, day_keys = [], [], [], []
    for ep in inp.endpoints:
        pid = ep["patient_id"]
        verdict = ep.get("verdict", "") or "NOT_EVALUABLE"
        flags = "".join(h.badge(f, "flag") for f in split_codes(ep.get("flags", "")))
        rows.append(
            [
                f'<a href="{h.esc(pid)}.html">{h.esc(pid)}</a>',
                verdict_badges(ep),
                h.esc(fmt.per_ul(ep.get("donor_nk_per_ul", ""))),
                h.esc(interval_text(ep)),
                h.esc(ep.get("study_day", "")),
                h.esc(ep.get("sample_id", "")),
                flags,
                "".join(h.badge(c, "flag") for c in split_codes(ep.get("reason", ""))),
                h.esc(ep.get("qc_status", "")),
                h.badge(
                    REVIEW_WORDS.get(ep.get("review_status", ""), ep.get("review_status", "")),
                    "review-" + (ep.get("review_status", "") or "none"),
                )
                if ep.get("review_status")
                else "",
            ]
        )
        verdict_keys.append(
            VERDICT_RANK.get(verdict, "4") + ("b" if truthy(ep.get("borderline", "")) else "a")
        )
        value_keys.append(ep.get("donor_nk_per_ul", ""))
        day_keys.append(ep.get("study_day", ""))
    return h.table(
        cols,
        rows,
        raw_columns=range(len(cols)),
        css_class="sortable",
        table_id="cohort",
        sort_keys={1: verdict_keys, 2: value_keys, 4: day_keys},
        numeric_columns=(2, 4),
    )


def _qc_summary(inp: ReportInputs) -> str:
    if not inp.qc:
        return h.section("qc", "QC summary across tubes", h.note("qc/tubes.tsv not available."))
    tubes: dict[tuple[str, str], str] = {}
    for r in inp.qc:
        tubes.setdefault((r.get("sample_id", ""), r.get("tube", "")), r.get("tube_status", ""))
    statuses = ["PASS", "WARN", "FAIL"]
    n_of = Counter((k[1], s) for k, s in tubes.items())
    n_tubes = Counter(k[1] for k in tubes)
    counts = [
        [kind, *[str(n_of[kind, st]) for st in statuses], str(n_tubes[kind])]
        for kind in sorted(n_tubes)
    ]
    body = h.table(["tube", *statuses, "tubes"], counts)
    patient_of = {
        r.get("sample_id", ""): r.get("patient_id", "") for r in [*inp.samples, *inp.visits]
    }
    status_rows = _tube_status_rows(inp.qc, inp.config)
    flagged = [r for r in status_rows if 'class="badge PASS"' not in r[2]]
    body += f"<h3>Tubes not PASS ({len(flagged)} of {len(status_rows)})</h3>"

    def tubes_table(rows: list[list[str]], **kw: Any) -> str:
        return h.table(
            ["patient", "sample", "tube", "tube status", "checks not PASS (reason)"],
            [[h.esc(patient_of.get(r[0], "")), h.esc(r[0]), h.esc(r[1]), r[2], r[3]] for r in rows],
            raw_columns=range(5),
            **kw,
        )

    body += tubes_table(flagged) if flagged else h.note("Every tube passed QC.")
    body += h.details(
        f"Every tube ({len(status_rows)})",
        tubes_table(status_rows, css_class="sortable", table_id="qc-tubes"),
    )
    removed = time_qc_rows(inp, sorted(tubes))
    if removed:
        body += h.details(
            f"Time-QC removals per tube ({len(removed)})", h.table(TIME_QC_HEADER, removed)
        )
    time_rows = [r for r in inp.qc if _is_time_check(r)]
    body += h.details(
        f"Time-QC rows across tubes ({len(time_rows)})",
        rows_table(time_rows, QC_COLUMNS) if time_rows else h.note("No time-QC rows recorded."),
    )
    checks = sorted({r.get("check", "") for r in inp.qc})
    values: dict[tuple[str, str], dict[str, str]] = {}
    for r in inp.qc:
        values.setdefault((r.get("sample_id", ""), r.get("tube", "")), {})[r.get("check", "")] = (
            r.get("value", "")
        )
    body += h.details(
        "QC check values per tube (events, removed fractions, ...)",
        h.table(
            ["sample", "tube", *checks],
            [[k[0], k[1], *[v.get(c, "") for c in checks]] for k, v in values.items()],
        ),
    )
    return h.section("qc", "QC summary across tubes", body)


def render_index(inp: ReportInputs, run_date: str) -> str:
    """The cohort index page (see the package docstring)."""
    from nkflow.report import _html

    threshold = inp.endpoint_settings.threshold_per_ul
    n = {
        v: sum(1 for e in inp.endpoints if (e.get("verdict") or "NOT_EVALUABLE") == v)
        for v in VERDICTS
    }
    n_border = sum(1 for e in inp.endpoints if truthy(e.get("borderline", "")))
    summary = (
        f"<p>{len(inp.endpoints)} patients: "
        + ", ".join(f"{h.badge(v, v)} {n[v]}" for v in VERDICTS)
        + f", of which {h.badge('borderline', 'borderline')} {n_border}. "
        f"Success = strictly more than {threshold:g} donor NK cells/µL at day 14. "
        "Click a column header to sort; click a patient for the full page.</p>"
    )
    points = [
        CohortPoint(
            e["patient_id"],
            e.get("verdict", "") or "NOT_EVALUABLE",
            fmt.number(e.get("donor_nk_per_ul", "")),
            fmt.number(e.get("donor_nk_per_ul_lo95", "")),
            fmt.number(e.get("donor_nk_per_ul_hi95", "")),
        )
        for e in inp.endpoints
    ]
    plot = h.img(
        cohort_figure(points, threshold),
        "day-14 donor NK cells per µL for every patient",
        "Day-14 donor NK cells/µL per patient (log axis; bars = 95 % interval; dashed line = "
        f"{threshold:g}/µL). Colours: green PASS, red FAIL, grey NOT_EVALUABLE.",
    )
    from nkflow.report._cohort import cohort_sections

    cohort = cohort_sections(inp, threshold)
    body = "\n".join(
        [
            h.section("patients", "Patients", summary + _cohort_table(inp)),
            h.section("plot", "Cohort plot", plot),
            *(html for _, _, html in cohort),
            _qc_summary(inp),
            _provenance(inp, run_date, sorted(set(inp.tube_provenance)), None, cohort=True),
        ]
    )
    nav = _nav(
        [
            ("#patients", "patients"),
            ("#plot", "plot"),
            *((f"#{anchor}", label) for anchor, label, _ in cohort),
            ("#qc", "QC"),
            ("#provenance", "provenance"),
        ]
    )
    return h.page(
        "nkflow cohort report",
        "nkflow · cohort report",
        nav,
        body,
        script=_html.template("sort.js"),
    )
