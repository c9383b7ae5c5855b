# Every run's metrics.json -> summary.csv -> tables.  Reads only metrics files.


rule aggregate:
    input:
        [d + "/metrics.json" for d in run_dirs()],
    output:
        R + "/summary.csv",
    log:
        R + "/logs/aggregate.log",
    shell:
        "props aggregate {input} --out {output} > {log} 2>&1"


rule table1:
    input:
        R + "/summary.csv",
    output:
        R + "/table1.md",
    log:
        R + "/logs/table1.log",
    shell:
        "props table table1 --summary {input} --out {output} > {log} 2>&1"
