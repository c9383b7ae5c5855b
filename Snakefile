# PROPS benchmark suite.  Includes and targets only; the rules live in bench/rules/.
#   snakemake --cores 8 all                                   (default tier)
#   snakemake --cores 2 all --configfile bench/config/smoke.yaml
include: "bench/rules/common.smk"
include: "bench/rules/data.smk"
include: "bench/rules/sft.smk"
include: "bench/rules/train.smk"
include: "bench/rules/generate.smk"
include: "bench/rules/judge.smk"
include: "bench/rules/aggregate.smk"


rule all:
    input:
        # every run's metrics.json is a target of its own: Snakemake does not rebuild a
        # missing intermediate file while the files built from it are up to date, so
        # without this a deleted run directory would not be rerun
        run_metrics(),
        "results/summary.csv",
        rules.table1.output,
        rules.table2.output,
        rules.table3.output,
        rules.figures.output,
    default_target: True
