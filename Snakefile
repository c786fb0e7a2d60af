# nkflow: donor NK-cell expansion endpoints from raw FCS files.
#
#   snakemake --cores 2                                   # the sample cohort (config/config.yaml)
#   snakemake --cores 8 --configfile my/config.yaml       # your own data
#   snakemake --profile workflow/profiles/slurm           # on a SLURM cluster
#
# Rules orchestrate; every computation is one `nkflow <verb>` command (see nkflow --help).


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/tubes.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/endpoints.smk"
include: "workflow/rules/readout.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        VALIDATED,
        f"{RESULTS}/cohort/endpoints.tsv",
        f"{RESULTS}/cohort/visits.tsv",
        f"{RESULTS}/cohort/kinetics.tsv",
        f"{RESULTS}/cohort/kinetics_summary.tsv",
        EXPORTS,
        f"{RESULTS}/qc/tubes.tsv",
        f"{RESULTS}/reports/index.html",
