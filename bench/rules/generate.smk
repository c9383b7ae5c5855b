# Seeded answers to the held-out prompts: the SFT reference's (once per seed) and each run's.


rule generate_reference:
    input:
        data=R + "/data/{dataset}",
        sft=R + "/models/{model}/{dataset}/sft",
    output:
        R + "/reference/{model}/{dataset}/seed{seed}/generations.jsonl",
    params:
        spec=spec("generate"),
    threads: CFG["threads"]
    log:
        R + "/logs/generate_reference/{model}/{dataset}/seed{seed}.log",
    benchmark:
        R + "/benchmarks/generate_reference/{model}/{dataset}/seed{seed}.tsv"
    shell:
        "props generate --spec {params.spec} --data {input.data} --policy {input.sft} "
        "--ref {input.sft} --seed {wildcards.seed} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule generate:
    input:
        data=R + "/data/{dataset}",
        policy=RUN + "/policy",
        sft=R + "/models/{model}/{dataset}/sft",
    output:
        RUN + "/generations.jsonl",
    params:
        spec=spec("generate"),
    threads: CFG["threads"]
    log:
        R + "/logs/generate/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    benchmark:
        R + "/benchmarks/generate/{model}/{dataset}/{method}/eps{eps}/seed{seed}.tsv"
    shell:
        "props generate --spec {params.spec} --data {input.data} --policy {input.policy} "
        "--ref {input.sft} --seed {wildcards.seed} --out {output} "
        "--threads {threads} > {log} 2>&1"
