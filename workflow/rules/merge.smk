rule merge:
    """Per visit: counts joined with ALC (cells/uL) and % donor chimerism, with study day."""
    input:
        validated=VALIDATED,
        counts=f"{RESULTS}/cohort/counts.tsv",
        qc=f"{RESULTS}/qc/tubes.tsv",
        sheets=list(NKCONFIG["sheets"].values()),
        fractions=NKCONFIG["endpoints"]["chimerism_fractions"],
    output:
        visits=report(
            f"{RESULTS}/cohort/visits.tsv",
            caption="../report/visits.rst",
            category="Cohort tables",
        ),
        warnings=f"{RESULTS}/cohort/sheet_warnings.tsv",
        # % donor from raw STR peaks: only when sheets.str_peaks and str_samples are given
        str_tables=STR_TABLES,
    log:
        f"{RESULTS}/logs/merge.log",
    benchmark:
        f"{RESULTS}/benchmarks/merge.tsv"
    localrule: True
    shell:
        "nkflow merge --validated {input.validated} --counts {input.counts}"
        " --qc {input.qc} --out {output.visits} 2> {log}"
