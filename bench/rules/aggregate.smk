# Every run's metrics.json -> summary.csv -> tables.  Reads only metrics files.


rule aggregate:
    conda:
        "../../envs/props.yaml"
    input:
        run_metrics(),
    output:
        "results/summary.csv",
    log:
        "results/logs/aggregate.log",
    shell:
        "props aggregate {input} --out {output} > {log} 2>&1"


rule table1:
    conda:
        "../../envs/props.yaml"
    input:
        "results/summary.csv",
    output:
        "results/table1.md",
    log:
        "results/logs/table1.log",
    shell:
        "props table table1 --summary {input} --out {output} > {log} 2>&1"
