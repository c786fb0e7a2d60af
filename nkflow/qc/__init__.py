"""Per-tube quality control: checks -> a status (PASS / WARN / FAIL) with reasons.

Contract. QC in nkflow is a result, not a log line: every function returns :class:`Check` records
(``check, status, reason_code, value, threshold, message``) that become the rows of
``results/tubes/{sample_id}/{tube}/qc.tsv`` (columns in docs/DEVELOPING.md) and travel to the
endpoint table and the report. Functions are pure (arrays and tables in, records out, no file
I/O); bad data never raises, it becomes a check. Thresholds and the severity of each reason code
come from :class:`QcConfig` (the ``qc:`` block of config/config.yaml, schema
workflow/schemas/qc.schema.yaml).

The per-tube pipeline calls, in order::

    cfg = QcConfig.from_dict(config.get("qc", {}))
    t = time_qc(time, signals, timestep, cfg)            # before gating; t.keep drops bad bins
    m = margin_events(events, channels, cfg, indices)    # m.keep when qc.margins.remove
    compensation_sanity(comp_subset, names, cfg)
    event_floor_checks(counts_df, cfg, endpoint_pops)    # after gating
    viability_check(n_dead, n_singlets, cfg)
    gate_flag_checks(res.flags, cfg)
    status, reasons = tube_status(all_checks, cfg)
    checks_table(sample_id, tube, all_checks, cfg)       # -> qc.tsv

``nkflow collect`` then adds, per tube, the check that needs the sample sheet::

    add_checks(qc_table, sample_id, tube, [acquisition_date_check($DATE, collection_date, cfg,
               fcs_name)], cfg)                          # -> results/qc/tubes.tsv
"""

from nkflow.qc._checks import (
    CHECK_STATUSES,
    QC_COLUMNS,
    Check,
    MarginCount,
    MarginResult,
    acquisition_date_check,
    add_checks,
    checks_table,
    compensation_sanity,
    effective_severity,
    event_floor_checks,
    events_lost_check,
    gate_fit_checks,
    gate_flag_checks,
    make_check,
    margin_events,
    poisson_cv,
    raw_ceiling,
    tube_status,
    viability_check,
)
from nkflow.qc._config import (
    SEVERITIES,
    AcquisitionConfig,
    CompensationQcConfig,
    DateQcConfig,
    FloorConfig,
    MarginConfig,
    QcConfig,
    TimeQcConfig,
    ViabilityConfig,
)
from nkflow.qc._time import TimeQcResult, time_in_seconds, time_qc

__all__ = [
    "CHECK_STATUSES",
    "QC_COLUMNS",
    "SEVERITIES",
    "AcquisitionConfig",
    "Check",
    "CompensationQcConfig",
    "DateQcConfig",
    "FloorConfig",
    "MarginConfig",
    "MarginCount",
    "MarginResult",
    "QcConfig",
    "TimeQcConfig",
    "TimeQcResult",
    "ViabilityConfig",
    "acquisition_date_check",
    "add_checks",
    "checks_table",
    "compensation_sanity",
    "effective_severity",
    "event_floor_checks",
    "events_lost_check",
    "gate_fit_checks",
    "gate_flag_checks",
    "make_check",
    "margin_events",
    "poisson_cv",
    "raw_ceiling",
    "time_in_seconds",
    "time_qc",
    "tube_status",
    "viability_check",
]
