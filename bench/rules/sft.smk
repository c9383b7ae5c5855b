# SFT on the public demonstrations: one model per model x dataset, shared by every
# method, eps and seed; it is also the fixed reference model of every run.


rule sft:
    conda:
        "../../envs/props.yaml"
    input:
        data="results/data/{dataset}",
        base="results/models/{model}/{dataset}/base",
    output:
        directory("results/models/{model}/{dataset}/sft"),
    params:
        spec=spec("sft"),
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        "results/logs/sft/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/sft/{model}/{dataset}.tsv"
    shell:
        "props sft --spec {params.spec} --data {input.data} --base {input.base} "
        "--out {output} --threads {threads} > {log} 2>&1"
