# Seeded answers to the held-out prompts: the SFT reference's (once per seed) and each run's.


rule generate_reference:
    conda:
        "../../envs/props.yaml"
    input:
        data=data_dir,
        sft=model_dir("sft"),
    output:
        "results/reference/{model}/{dataset}/seed{seed}/generations.jsonl",
    params:
        spec=spec("generate"),
    threads: CFG["threads"]
    log:
        "results/logs/generate_reference/{model}/{dataset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/generate_reference/{model}/{dataset}/seed{seed}.tsv"
    shell:
        "props generate --spec {params.spec} --data {input.data} --policy {input.sft} "
        "--ref {input.sft} --seed {wildcards.seed} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule generate:
    conda:
        "../../envs/props.yaml"
    input:
        data=data_dir,
        policy="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/policy",
        sft=model_dir("sft"),
    output:
        "results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/generations.jsonl",
    params:
        spec=spec("generate"),
    threads: CFG["threads"]
    log:
        "results/logs/generate/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    benchmark:
        "results/benchmarks/generate/{model}/{dataset}/{method}/eps{eps}/seed{seed}.tsv"
    shell:
        "props generate --spec {params.spec} --data {input.data} --policy {input.policy} "
        "--ref {input.sft} --seed {wildcards.seed} --out {output} "
        "--threads {threads} > {log} 2>&1"
