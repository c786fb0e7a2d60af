rule validate:
    """Validate the config and every sheet; record the resolved config and its digest."""
    input:
        sheets=list(NKCONFIG["sheets"].values()),
        panels=list(NKCONFIG["panels"].values()),
        gating=list(NKCONFIG["gating"].values()),
    output:
        f"{RESULTS}/validated/config.json",
    params:
        config=CONFIG_JSON,
    log:
        f"{RESULTS}/logs/validate.log",
    benchmark:
        f"{RESULTS}/benchmarks/validate.tsv"
    localrule: True
    shell:
        "nkflow validate --config-json {params.config:q} --write-resolved {output} 2> {log}"
