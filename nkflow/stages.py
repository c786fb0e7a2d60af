"""Stage drivers: the CLI adapts them; the rules call the CLI.

Each reads the paths its workflow rule declares, calls the pure functions and writes its outputs.

One driver per rule: :func:`run_batch` (a batch of tubes), :func:`collect_batches` (the cohort
tables of the tubes), :func:`run_merge` (visits), :func:`run_endpoints` (day-14 endpoints),
:func:`run_readout` (kinetics and exports) and :func:`run_report` (the HTML pages).

Contract: a driver is the one place a stage reads and writes; it sits above the computing
modules (:mod:`nkflow.tube`, :mod:`nkflow.clinical`, :mod:`nkflow.report`,
:mod:`nkflow.review.status`), which never import it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow import tables
from nkflow.clinical import chimerism as chim
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.clinical.endpoints import ENDPOINT_COLUMNS, build_endpoints
from nkflow.clinical.exports import write_exports
from nkflow.clinical.kinetics import KINETICS, KINETICS_SUMMARY, build_kinetics, summarize
from nkflow.clinical.visits import (
    KINDS,
    VISIT_COLUMNS,
    build_visits,
    read_visits,
    table_bytes,
    write_visits,
)
from nkflow.columns import table_text
from nkflow.config import Study
from nkflow.errors import ConfigError, NkflowError
from nkflow.review.status import review_columns
from nkflow.tube import TubeOutputs, date_check, run_tube

if TYPE_CHECKING:
    import pandas as pd

    from nkflow.report._inputs import ReportPaths

logger = logging.getLogger(__name__)


def run_batch(
    *,
    tubes: list[tuple[str, str, Path]],
    panel: Path,
    gating: Path,
    settings: dict[str, Any],
    outdir: Path,
    fmo: dict[tuple[str, str], dict[str, Path]] | None = None,
    overrides: dict[tuple[str, str], list[Path]] | None = None,
) -> dict[tuple[str, str], str]:
    """Process several tubes that share a panel and gate tree, in one process.

    Batching pays Python start-up and imports once per batch instead of once per tube (a
    cluster job start costs 5-7 s; a local process about 1 s). Each tube still gets its own
    four files under ``outdir/<sample_id>/<tube>/`` and its own QC status; one bad tube does not
    affect the others.

    Parameters
    ----------
    tubes
        ``(sample_id, tube, fcs_path)`` triples, in sample-sheet order.
    panel, gating, settings
        As for :func:`run_tube`.
    fmo, overrides
        ``(sample_id, tube)`` -> that tube's FMO controls / override files (see :func:`run_tube`).
    outdir
        The batch directory.

    Returns
    -------
    dict
        ``(sample_id, tube) -> QC status``.
    """
    import time

    statuses = {}
    for sample_id, tube, fcs in tubes:
        d = outdir / sample_id / tube
        t0 = time.process_time()
        status = statuses[(sample_id, tube)] = run_tube(
            fcs=Path(fcs),
            panel=panel,
            gating=gating,
            sample_id=sample_id,
            tube=tube,
            settings=settings,
            outputs=TubeOutputs(
                counts=d / "counts.tsv",
                qc=d / "qc.tsv",
                figure=d / "gating.png",
                provenance=d / "provenance.json",
                gatingml=d / "gates.xml",
                perturbation=d / "perturbation.tsv",
            ),
            fmo=(fmo or {}).get((sample_id, tube)),
            overrides=(overrides or {}).get((sample_id, tube)),
        )
        cpu = time.process_time() - t0
        logger.info("tube %s/%s: QC %s, %.3f s CPU", sample_id, tube, status, cpu)
    return statuses


def collect_batches(
    batch_dirs: list[Path],
    order: list[tuple[str, str]],
    *,
    out_counts: Path,
    out_qc: Path,
    out_index: Path,
    collection_dates: dict[tuple[str, str], Any] | None = None,
    qc_settings: dict[str, Any] | None = None,
    out_perturbation: Path | None = None,
) -> None:
    """Concatenate the per-tube tables of every batch, in sample-sheet order.

    Parameters
    ----------
    batch_dirs
        Batch output directories.
    order
        ``(sample_id, tube)`` pairs in sample-sheet order; every pair must be found exactly once.
    out_counts, out_qc, out_index
        The cohort counts table, the cohort QC table and the tube index (sample_id, tube,
        batch, fcs file and sha256, QC status, paths of the tube's figure and provenance).
    collection_dates
        ``(sample_id, tube)`` -> the sample sheet's ``collection_date``: each tube's ``$DATE``
        (recorded in its provenance) is checked against it (``acquisition_date`` in the cohort
        QC table, :func:`nkflow.qc.acquisition_date_check`) and the tube status in the QC table
        and the index follows. Done here, not in the tube job, so that correcting a date or
        ``qc.dates`` re-gates no tube.
    qc_settings
        The ``qc`` block of the configuration (``qc.dates`` and the severities).
    out_perturbation
        The cohort table of every tube's re-gatings (``perturbation.tsv``, NK tubes only; only
        the leading columns when no tube wrote one).
    """
    import pandas as pd

    from nkflow import qc

    qc_cfg = qc.QcConfig.from_dict(qc_settings or {})

    found: dict[tuple[str, str], Path] = {}
    for bdir in batch_dirs:
        for prov_path in sorted(Path(bdir).glob("*/*/provenance.json")):
            key = (prov_path.parent.parent.name, prov_path.parent.name)
            if key in found:
                raise NkflowError(
                    f"collect: tube {key[0]}/{key[1]} appears in two batches "
                    f"({found[key].parent.parent.parent} and {bdir})"
                )
            found[key] = prov_path.parent
    missing = [f"{s}/{t}" for s, t in order if (s, t) not in found]
    if missing:
        raise NkflowError(f"collect: no outputs for tube(s) {', '.join(missing)}")
    counts, qcs, index, perturbations = [], [], [], []
    for key in order:
        d = found[key]
        counts.append(tables.read_tsv(d / "counts.tsv"))
        table = tables.read_tsv(d / "qc.tsv")
        if out_perturbation is not None and (d / "perturbation.tsv").is_file():
            perturbations.append(tables.read_tsv(d / "perturbation.tsv"))
        prov = json.loads((d / "provenance.json").read_text(encoding="utf-8"))
        status = prov.get("qc_status", "FAIL")
        if collection_dates is not None and key in collection_dates:
            check = date_check(prov, collection_dates[key], qc_cfg)
            table = qc.add_checks(table, key[0], key[1], [check], qc_cfg)
            status = str(table["tube_status"].iloc[0])
        qcs.append(table)
        index.append(
            {
                "sample_id": key[0],
                "tube": key[1],
                "batch": d.parent.parent.name,
                "fcs_file": prov.get("fcs_file", ""),
                "fcs_sha256": prov.get("fcs_sha256", ""),
                "qc_status": status,
                "figure": str(d / "gating.png"),
                "provenance": str(d / "provenance.json"),
            }
        )
    tables.write_tsv(pd.concat(counts, ignore_index=True), out_counts)
    tables.write_tsv(pd.concat(qcs, ignore_index=True), out_qc)
    tables.write_tsv(pd.DataFrame(index), out_index)
    if out_perturbation is not None:
        from nkflow.gating.perturb import COLUMNS

        perturbation_table = (
            pd.concat(perturbations, ignore_index=True)
            if perturbations
            else pd.DataFrame(columns=["sample_id", "tube", *COLUMNS])
        )
        tables.write_tsv(perturbation_table, out_perturbation)


def run_collect(
    study: Study,
    batch_dirs: list[Path],
    *,
    out_counts: Path,
    out_qc: Path,
    out_index: Path,
    out_perturbation: Path | None = None,
) -> None:
    """The ``collect`` rule: :func:`collect_batches` in the study's sample-sheet order.

    Each tube's ``$DATE`` is checked against its ``collection_date`` under the study's ``qc``.
    """
    samples = study.samples
    keys = list(zip(samples["sample_id"], samples["tube"], strict=True))
    collect_batches(
        batch_dirs,
        keys,
        out_counts=out_counts,
        out_qc=out_qc,
        out_index=out_index,
        collection_dates=dict(zip(keys, samples["collection_date"], strict=True)),
        qc_settings=study.config.get("qc", {}),
        out_perturbation=out_perturbation,
    )


def run_merge(
    study: Study,
    counts_path: str | Path,
    qc_path: str | Path,
    out_visits: str | Path,
) -> pd.DataFrame:
    """Build and write visits.tsv from the cohort counts and QC and the study's sheets.

    Beside it: ``sheet_warnings.tsv`` (one ``message`` per kept-but-flagged or ignored row)
    and, when raw STR peaks are configured, ``str_results.tsv`` and ``str_loci.tsv``.
    """
    import pandas as pd

    out = Path(out_visits)
    inp = study.visit_inputs
    if inp.str_results is not None and inp.str_loci is not None:
        tables.write_bytes(
            out.parent / "str_results.tsv", table_bytes(inp.str_results, chim.RESULT_COLUMNS)
        )
        tables.write_bytes(
            out.parent / "str_loci.tsv", table_bytes(inp.str_loci, chim.LOCUS_COLUMNS)
        )
    visits = build_visits(
        study.config,
        inp.samples,
        tables.read_tsv(counts_path, text=True),
        tables.read_tsv(qc_path, text=True),
        inp.infusions,
        inp.cbc,
        inp.chimerism,
        inp.str_results,
    )
    write_visits(visits, out)
    for msg in inp.warnings:
        logger.warning(msg)
    messages = pd.DataFrame({"message": inp.warnings}, dtype=object)
    tables.write_bytes(out.parent / "sheet_warnings.tsv", table_bytes(messages, ["message"]))
    return visits


def write_outputs(
    visits: pd.DataFrame,
    endpoints: pd.DataFrame,
    outdir: str | Path,
    reviews: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write ``endpoints.tsv``, ``endpoints.xlsx`` and ``patients/<id>.json``.

    ``visits`` (the merge step's visits.tsv, this step's input) is read, never rewritten. Files
    whose bytes would not change are left untouched.
    """
    out = Path(outdir)
    tables.write_bytes(out / "endpoints.tsv", table_bytes(endpoints, ENDPOINT_COLUMNS))
    tables.write_xlsx(
        out / "endpoints.xlsx",
        [("endpoints", endpoints, ENDPOINT_COLUMNS), ("visits", visits, VISIT_COLUMNS)],
        KINDS,
    )
    vis = visits.to_dict(orient="records")
    distributions = endpoints.attrs.get("distributions", {})
    for rec in endpoints.to_dict(orient="records"):
        pid = str(rec["patient_id"])
        doc: dict[str, Any] = {
            "patient_id": pid,
            "endpoint": {
                c: tables.json_value(rec.get(c), KINDS.get(c, "")) for c in ENDPOINT_COLUMNS
            },
            # the signatures on this row and whether they still hold (nkflow.review)
            "review": (reviews or {}).get(pid),
            "visits": [
                {c: tables.json_value(v.get(c), KINDS.get(c, "")) for c in VISIT_COLUMNS}
                for v in vis
                if str(v["patient_id"]) == pid
            ],
        }
        if pid in distributions:
            # the day-14 donor NK/uL draws (docs/uncertainty.md), as a histogram
            doc["donor_nk_per_ul_distribution"] = distributions[pid]
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        tables.write_bytes(out / "patients" / f"{pid}.json", data)


def run_endpoints(
    study: Study,
    visits_path: str | Path,
    outdir: str | Path,
    perturbation_path: str | Path | None = None,
    *,
    tubes_index: str | Path | None = None,
    audit_log: str | Path | None = None,
    base_dir: Path | None = None,
) -> pd.DataFrame:
    """Read visits.tsv and the cohort's sheets; write every cohort output.

    The sheets are the infusion, response and AE sheets, and the cohort perturbation.tsv when given.

    With ``audit_log`` (the review trail, :mod:`nkflow.review.audit`) and ``tubes_index``
    (``cohort/tubes.tsv``), each patient's ``review_status`` and ``review_note`` say whether
    the signatures in the log still rest on the current results (:func:`review_columns`);
    without them every patient is ``not_reviewed``. The log is read, never written.
    """
    from nkflow.clinical import sheets

    config = study.config
    s = EndpointSettings.from_config(config)
    visits = read_visits(visits_path)
    infusions = study.infusions[0]
    patients = study.patients
    response = adverse = None
    rp = sheets.sheet(config, "response")
    if rp is not None:
        response, _ = sheets.load_response(rp, Path(s.response_vocab), patients)
    ap = sheets.sheet(config, "adverse_events")
    if ap is not None:
        adverse, _ = sheets.load_adverse_events(ap, patients)
    perturbation = None if perturbation_path is None else tables.read_tsv(Path(perturbation_path))
    endpoints = build_endpoints(config, visits, infusions, response, adverse, perturbation)
    reviews = review_columns(
        endpoints,
        visits,
        tubes_index=tubes_index,
        audit_log=audit_log,
        base_dir=Path.cwd() if base_dir is None else Path(base_dir),
    )
    write_outputs(visits, endpoints, outdir, reviews=reviews)
    return endpoints


def run_readout(
    study: Study,
    visits_path: str | Path,
    endpoints_path: str | Path,
    kinetics: str | Path,
    exports: str | Path,
    summary_path: str | Path | None = None,
) -> None:
    """The ``readout`` rule: kinetics, its summary and the exports directory, from visits.tsv.

    The outputs are ``kinetics.tsv``, ``summary_path`` (groups from endpoints.tsv; default
    ``kinetics_summary.tsv`` beside kinetics.tsv) and the exports directory.
    """
    config = study.config
    visits = read_visits(visits_path)
    records = build_kinetics(config, visits)
    tables.write_bytes(Path(kinetics), table_text(KINETICS, records).encode("utf-8"))
    endpoint_rows = tables.read_tsv(endpoints_path, text=True).to_dict(orient="records")
    summary = summarize(records, endpoint_rows)
    tables.write_bytes(
        Path(kinetics).with_name("kinetics_summary.tsv")
        if summary_path is None
        else Path(summary_path),
        table_text(KINETICS_SUMMARY, summary).encode("utf-8"),
    )
    paths = write_exports(config, visits, exports)
    logger.info(
        "readout: %d kinetic records to %s; exports %s",
        len(records),
        kinetics,
        ", ".join(p.name for p in paths),
    )


#: (inputs, run date, out dir) of the pages :func:`run_report` is writing (read by forked writers)
_SHARED: Any = None


def _write_page(pid: str) -> Path:
    from nkflow.report._pages import render_patient_page

    inp, run_date, out = _SHARED
    path = out / f"{pid}.html"
    path.write_text(render_patient_page(inp, pid, run_date), encoding="utf-8")
    return path


def report_run_date(environ: Mapping[str, str]) -> str:
    """The report run date: ``SOURCE_DATE_EPOCH`` if set, else now (UTC, ISO 8601 seconds).

    ``SOURCE_DATE_EPOCH`` (seconds since 1970, the reproducible-builds convention) makes two runs
    of the same inputs give byte-identical pages, not only tables.

    Raises
    ------
    ConfigError
        ``SOURCE_DATE_EPOCH`` is set but is not a non-negative whole number of seconds.
    """
    raw = environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not raw.strip().isdigit():
        raise ConfigError(
            f"environment variable SOURCE_DATE_EPOCH is {raw!r}; expected a whole number of "
            "seconds since 1970-01-01 UTC (e.g. $(git log -1 --format=%ct)); fix or unset it"
        )
    return datetime.fromtimestamp(int(raw), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_report(
    study: Study,
    paths: ReportPaths,
    out_dir: Path,
    run_date: str | None = None,
    *,
    workers: int = 1,
) -> list[Path]:
    """Write the cohort index and one page per patient.

    Parameters
    ----------
    study
        The run's settings (``sheets``, ``panels``, ``gating``, ``endpoints``); their paths,
        and those in the tube index, are relative to ``study.base_dir``.
    paths
        The tables and directories the report rule names as its inputs.
    out_dir
        Where to write ``index.html`` and ``<patient_id>.html`` (created if needed).
    run_date
        Text shown as the report run date; default: :func:`report_run_date` of the environment.
    workers
        Processes rendering patient pages (each page's figures take ~0.3 s of matplotlib);
        pages are identical whatever the number.

    Returns
    -------
    list[Path]
        ``index.html`` first, then the patient pages in ``endpoints.tsv`` order.

    Raises
    ------
    ConfigError
        When the endpoints table is missing/unreadable or holds an unsafe ``patient_id``.
    """
    from nkflow.report._inputs import load_inputs
    from nkflow.report._pages import render_index

    if run_date is None:
        run_date = report_run_date(os.environ)
    inp = load_inputs(study.config, paths, study.base_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "index.html"]
    (out / "index.html").write_text(render_index(inp, run_date), encoding="utf-8")
    pids = [row["patient_id"] for row in inp.endpoints]
    global _SHARED
    _SHARED = (inp, run_date, out)
    if workers > 1 and len(pids) > 1:
        import multiprocessing

        # fork: the workers share the loaded inputs instead of re-reading every table
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(workers, len(pids))) as pool:
            written += pool.map(_write_page, pids, chunksize=1)
    else:
        written += [_write_page(pid) for pid in pids]
    _SHARED = None
    logger.info("report: wrote %d pages to %s", len(written), out)
    return written
