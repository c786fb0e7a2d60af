rule tube:
    """Read, compensate, time-QC and gate one tube: counts, QC, gating figure, provenance."""
    input:
        unpack(tube_inputs),
    output:
        counts=f"{RESULTS}/tubes/{{sample}}/{{tube}}/counts.tsv",
        qc=f"{RESULTS}/tubes/{{sample}}/{{tube}}/qc.tsv",
        figure=report(
            f"{RESULTS}/tubes/{{sample}}/{{tube}}/gating.png",
            caption="../report/gating.rst",
            category="Gating",
            subcategory="{sample}",
            labels={"sample": "{sample}", "tube": "{tube}"},
        ),
        provenance=f"{RESULTS}/tubes/{{sample}}/{{tube}}/provenance.json",
    log:
        f"{RESULTS}/logs/tubes/{{sample}}.{{tube}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tubes/{{sample}}.{{tube}}.tsv"
    group:
        "tubes"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=tube_settings,
    shell:
        "nkflow tube --fcs {input.fcs:q} --panel {input.panel:q} --gating {input.gating:q}"
        " --sample-id {wildcards.sample} --tube {wildcards.tube} --settings {params.settings:q}"
        " --counts {output.counts} --qc {output.qc} --figure {output.figure}"
        " --provenance {output.provenance} 2> {log}"


rule collect_counts:
    """All tubes' population counts, in sample-sheet order."""
    input:
        per_tube("counts.tsv"),
    output:
        report(
            f"{RESULTS}/cohort/counts.tsv",
            caption="../report/counts.rst",
            category="Cohort tables",
        ),
    log:
        f"{RESULTS}/logs/collect_counts.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect_counts.tsv"
    localrule: True
    shell:
        "nkflow collect {input:q} --out {output} 2> {log}"


rule collect_qc:
    """All tubes' QC checks (one row per tube and check), in sample-sheet order."""
    input:
        per_tube("qc.tsv"),
    output:
        report(
            f"{RESULTS}/qc/tubes.tsv",
            caption="../report/qc.rst",
            category="Quality control",
        ),
    log:
        f"{RESULTS}/logs/collect_qc.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect_qc.tsv"
    localrule: True
    shell:
        "nkflow collect {input:q} --out {output} 2> {log}"
