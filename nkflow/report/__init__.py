"""HTML reports an analyst and an auditor can sign off: per-patient pages and a cohort index.

Contract
--------
:func:`run_report` reads the workflow's results (``cohort/endpoints.tsv``, ``cohort/visits.tsv``,
``qc/tubes.tsv``, ``cohort/counts.tsv``, ``cohort/patients/<patient_id>.json`` and the per-tube
``tubes/<sample_id>/<tube>/{gating.png,provenance.json}``) plus the side tables named in the
config, and writes ``<out_dir>/index.html`` and ``<out_dir>/<patient_id>.html`` for every patient
in ``endpoints.tsv``.

- The report computes no number: every value is the text of a table cell, shown with its
  source (table, row, tube, FCS file). Figures plot those same values.
- Pages are self-contained: CSS inline, figures embedded as base64 PNG, one small inline sort
  script on the index, no network or CDN reference.
- The run date appears only in each page's provenance section; with a fixed ``run_date``
  identical inputs give identical pages.
- A missing endpoints table or an unsafe ``patient_id`` raises
  :class:`~nkflow.errors.ConfigError`; any other missing input becomes a note on the page.

Heavy libraries (pandas, matplotlib, yaml) are imported inside functions.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run_report"]

#: (inputs, run date, out dir) handed to forked page writers
_SHARED: Any = None


def _write_page(pid: str) -> Path:
    from nkflow.report._pages import render_patient_page

    inp, run_date, out = _SHARED
    path = out / f"{pid}.html"
    path.write_text(render_patient_page(inp, pid, run_date), encoding="utf-8")
    return path


def run_report(
    config: dict[str, Any],
    results_dir: Path,
    out_dir: Path,
    run_date: str | None = None,
    *,
    base_dir: Path | None = None,
    workers: int = 1,
) -> list[Path]:
    """Write the cohort index and one page per patient.

    Parameters
    ----------
    config
        Validated configuration dict (``sheets``, ``panels``, ``gating``, ``endpoints``).
    results_dir
        The workflow's results directory (contains ``cohort/``, ``qc/``, ``tubes/``).
    out_dir
        Where to write ``index.html`` and ``<patient_id>.html`` (created if needed).
    run_date
        Text shown as the report run date; default: the current UTC time (ISO 8601, seconds).
    base_dir
        Directory the config's sheet/panel/gating paths are relative to (default: the
        current directory, i.e. where snakemake runs).
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
        When ``cohort/endpoints.tsv`` is missing/unreadable or holds an unsafe ``patient_id``.
    """
    from nkflow.report._inputs import load_inputs
    from nkflow.report._pages import render_index, render_patient_page

    if run_date is None:
        run_date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    inp = load_inputs(config, Path(results_dir), base_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "index.html"]
    (out / "index.html").write_text(render_index(inp, run_date), encoding="utf-8")
    pids = [row["patient_id"] for row in inp.endpoints]
    if workers > 1 and len(pids) > 1:
        import multiprocessing

        global _SHARED
        _SHARED = (inp, run_date, out)
        # fork: the workers share the loaded inputs instead of re-reading every table
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(workers, len(pids))) as pool:
            written += pool.map(_write_page, pids, chunksize=1)
        _SHARED = None
    else:
        for pid in pids:
            path = out / f"{pid}.html"
            path.write_text(render_patient_page(inp, pid, run_date), encoding="utf-8")
            written.append(path)
    logger.info("report: wrote %d pages to %s", len(written), out)
    return written
