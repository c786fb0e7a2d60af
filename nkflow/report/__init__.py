"""HTML reports an analyst and an auditor can sign off: per-patient pages and a cohort index.

Contract
--------
The report stage (driver :func:`nkflow.stages.run_report`) reads the tables its rule names
(:class:`nkflow.report._inputs.ReportPaths`: endpoints, visits, tube QC, counts, kinetics, the
per-patient JSON directory and the tube index, whose figures and provenance it shows) plus the
sheets, panels and gate trees named in the config, and writes ``<out_dir>/index.html`` and
``<out_dir>/<patient_id>.html`` for every patient in ``endpoints.tsv``.

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
