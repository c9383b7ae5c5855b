# One method at one eps and seed: the run directory's policy, labels and training ledger.


rule train:
    conda:
        "../../envs/props.yaml"
    input:
        pool="results/pools/{model}/{dataset}",
        release="results/releases/{model}/{dataset}/eps{eps}/seed{seed}.jsonl",
        sft=model_dir("sft"),
        base=model_dir("base"),
    output:
        policy=directory("results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/policy"),
        labels="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/labels.jsonl",
        train="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/train.json",
    params:
        spec=spec("train"),
        out=lambda wc, output: os.path.dirname(output.train),
    threads: CFG["threads"]
    resources:
        mem_mb=4000,
    log:
        "results/logs/train/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{model}/{dataset}/{method}/eps{eps}/seed{seed}.tsv"
    shell:
        "props train --spec {params.spec} --method {wildcards.method} --eps {wildcards.eps} "
        "--seed {wildcards.seed} --pool {input.pool} --release {input.release} "
        "--sft {input.sft} --base {input.base} --out {params.out} "
        "--threads {threads} > {log} 2>&1"
