rule validate:
    """Validate the config and every sheet; record the resolved config and its digest."""
    input:
        sheets=list(NKCONFIG["sheets"].values()),
        fractions=NKCONFIG["endpoints"]["chimerism_fractions"],
        panels=list(NKCONFIG["panels"].values()),
        gating=list(NKCONFIG["gating"].values()),
    output:
        VALIDATED,
    log:
        f"{RESULTS}/logs/validate.log",
    benchmark:
        f"{RESULTS}/benchmarks/validate.tsv"
    localrule: True
    params:
        config=CONFIG_JSON,
    shell:
        "nkflow validate --config-json {params.config:q} --write-resolved {output} 2> {log}"
