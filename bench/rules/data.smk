# Dataset splits, the base model and the private preference pool.


rule data:
    conda:
        "../../envs/props.yaml"
    output:
        directory("results/data/{dataset}"),
    params:
        spec=spec("data"),
    log:
        "results/logs/data/{dataset}.log",
    shell:
        "props data --spec {params.spec} --out {output} > {log} 2>&1"


rule base:
    conda:
        "../../envs/props.yaml"
    input:
        data="results/data/{dataset}",
    output:
        directory("results/models/{model}/{dataset}/base"),
    params:
        spec=spec("base"),
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        "results/logs/base/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/base/{model}/{dataset}.tsv"
    shell:
        "props base --spec {params.spec} --data {input.data} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule pool:
    conda:
        "../../envs/props.yaml"
    input:
        data=data_dir,
        base=model_dir("base"),
        sft=model_dir("sft"),
    output:
        directory("results/pools/{model}/{dataset}"),
    params:
        spec=spec("pool"),
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        "results/logs/pool/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/pool/{model}/{dataset}.tsv"
    shell:
        "props pool --spec {params.spec} --data {input.data} --base {input.base} "
        "--sft {input.sft} --out {output} --threads {threads} > {log} 2>&1"


rule release:
    conda:
        "../../envs/props.yaml"
    input:
        pool="results/pools/{model}/{dataset}",
    output:
        "results/releases/{model}/{dataset}/eps{eps}/seed{seed}.jsonl",
    log:
        "results/logs/release/{model}/{dataset}/eps{eps}/seed{seed}.log",
    shell:
        "props release --pool {input.pool} --eps {wildcards.eps} --seed {wildcards.seed} "
        "--dataset {wildcards.dataset} --out {output} > {log} 2>&1"
