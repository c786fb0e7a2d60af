"""The acceptance limits the pack declares, each with its source.

Contract: constants only. Every limit a built-in check judges against is here, and the report
prints this table in full, so a reviewer sees what was required before what was found. The
lab's own limits (reference set, replicate CVs) come from its reference YAML instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """One declared limit: its value, what it bounds, and why this value."""

    id: str
    value: float
    unit: str
    applies_to: str
    source: str


LIMITS: tuple[Limit, ...] = (
    Limit(
        "gatingml_files",
        51,
        "truth files",
        "Gating-ML 2.0 compliance: truth files that must match nkflow per event, 0 events differing",
        "ISAC Gating-ML 2.0 compliance suite (all of it)",
    ),
    Limit(
        "truth_nk_pct_rel_err",
        0.02,
        "relative error (fraction)",
        "synthetic truth cohort: NK % of lymphocytes, worst visit of each instrument style",
        "issue #16; the end-to-end test's limit (tests/integration/test_workflow.py)",
    ),
    Limit(
        "truth_donor_nk_rel_err",
        0.03,
        "relative error (fraction)",
        "synthetic truth cohort: donor NK/uL, worst visit of each instrument style",
        "the end-to-end test's limit (tests/integration/test_workflow.py)",
    ),
    Limit(
        "truth_treg_pct_rel_err",
        0.05,
        "relative error (fraction)",
        "synthetic truth cohort: Treg % of CD4, worst visit of each instrument style",
        "the gate-fit test's limit (tests/unit/test_gating_fit.py): Treg are ~5 % of CD4, "
        "so their numerator holds few events",
    ),
    Limit(
        "validation_nk_pct_rel_err",
        0.03,
        "relative error (fraction)",
        "validation cohort (instrument settings the gates were not developed on): NK % and "
        "donor NK/uL of every visit that has a number",
        "the gate-fit test's limit for that cohort (tests/unit/test_gating_fit.py)",
    ),
    Limit(
        "numerator_floor_cv",
        0.10,
        "Poisson CV (fraction)",
        "a reported percentage at the configured numerator floor (qc.floors.min_numerator_events)",
        "reporting practice: ~100 events, CV 1/sqrt(100) = 10 % (shared docs DOMAIN.md section 5)",
    ),
    Limit(
        "lloq_cv",
        0.20,
        "Poisson CV (fraction)",
        "LLOQ of NK/uL: the lowest concentration whose counting CV is at most this",
        "the usual precision criterion at a lower limit of quantitation (20 %, as in "
        "bioanalytical method validation and CLSI EP17-style LoQ goals)",
    ),
    Limit(
        "lloq_typical_alc_per_ul",
        1000,
        "ALC cells/uL",
        "at this ALC and the configured lymphocyte floor (qc.floors.min_lymphocyte_events), "
        "the endpoint threshold must be at or above the LLOQ",
        "a typical day-14 ALC after allo-HSCT and NK infusion (data/sample: 300-2000 /uL)",
    ),
)

#: limit id -> value
LIMIT = {lim.id: lim.value for lim in LIMITS}

#: ALC values (cells/uL) at which the counting-precision check states the LLOQ
TYPICAL_ALC_PER_UL = (250, 500, 1000, 2000)
