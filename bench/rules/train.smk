# One method at one eps and seed: the run directory's policy, labels and training ledger.


rule train:
    input:
        pool=R + "/pools/{model}/{dataset}",
        release=R + "/releases/{model}/{dataset}/eps{eps}/seed{seed}.jsonl",
        sft=R + "/models/{model}/{dataset}/sft",
        base=R + "/models/{model}/{dataset}/base",
    output:
        policy=directory(RUN + "/policy"),
        labels=RUN + "/labels.jsonl",
        train=RUN + "/train.json",
    params:
        spec=spec("train"),
        out=RUN,
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        R + "/logs/train/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    benchmark:
        R + "/benchmarks/train/{model}/{dataset}/{method}/eps{eps}/seed{seed}.tsv"
    shell:
        "props train --spec {params.spec} --method {wildcards.method} --eps {wildcards.eps} "
        "--seed {wildcards.seed} --pool {input.pool} --release {input.release} "
        "--sft {input.sft} --base {input.base} --out {params.out} "
        "--threads {threads} > {log} 2>&1"
