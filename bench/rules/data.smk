# Dataset splits, the base model and the private preference pool.


rule data:
    output:
        directory(R + "/data/{dataset}"),
    params:
        spec=spec("data"),
    log:
        R + "/logs/data/{dataset}.log",
    shell:
        "props data --spec {params.spec} --out {output} > {log} 2>&1"


rule base:
    input:
        data=R + "/data/{dataset}",
    output:
        directory(R + "/models/{model}/{dataset}/base"),
    params:
        spec=spec("base"),
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        R + "/logs/base/{model}/{dataset}.log",
    benchmark:
        R + "/benchmarks/base/{model}/{dataset}.tsv"
    shell:
        "props base --spec {params.spec} --data {input.data} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule pool:
    input:
        data=R + "/data/{dataset}",
        base=R + "/models/{model}/{dataset}/base",
        sft=R + "/models/{model}/{dataset}/sft",
    output:
        directory(R + "/pools/{model}/{dataset}"),
    params:
        spec=spec("pool"),
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        R + "/logs/pool/{model}/{dataset}.log",
    benchmark:
        R + "/benchmarks/pool/{model}/{dataset}.tsv"
    shell:
        "props pool --spec {params.spec} --data {input.data} --base {input.base} "
        "--sft {input.sft} --out {output} --threads {threads} > {log} 2>&1"


rule release:
    input:
        pool=R + "/pools/{model}/{dataset}",
    output:
        R + "/releases/{model}/{dataset}/eps{eps}/seed{seed}.jsonl",
    log:
        R + "/logs/release/{model}/{dataset}/eps{eps}/seed{seed}.log",
    shell:
        "props release --pool {input.pool} --eps {wildcards.eps} --seed {wildcards.seed} "
        "--dataset {wildcards.dataset} --out {output} > {log} 2>&1"
