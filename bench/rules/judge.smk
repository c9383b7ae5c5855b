# The judge compares each run's answers with the SFT reference's; writes metrics.json.


rule judge:
    conda:
        "../../envs/props.yaml"
    input:
        train="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/train.json",
        generations="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/generations.jsonl",
        reference="results/reference/{model}/{dataset}/seed{seed}/generations.jsonl",
    output:
        judgements="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/judgements.jsonl",
        metrics="results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/metrics.json",
    params:
        spec=spec("judge"),
        run=lambda wc, output: os.path.dirname(output.metrics),
    threads: CFG["threads"]
    log:
        "results/logs/judge/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    shell:
        "props judge --spec {params.spec} --run {params.run} "
        "--generations {input.generations} --reference {input.reference} "
        "--threads {threads} > {log} 2>&1"


# Head to head: the judge compares two runs' answers to the same prompts (same model,
# dataset, eps and seed; e.g. PROPS vs RR), the order shown randomised per prompt.
rule headtohead:
    conda:
        "../../envs/props.yaml"
    input:
        a="results/runs/{model}/{dataset}/{a}/eps{eps}/seed{seed}/generations.jsonl",
        b="results/runs/{model}/{dataset}/{b}/eps{eps}/seed{seed}/generations.jsonl",
    output:
        result="results/headtohead/{model}/{dataset}/{a}_vs_{b}/eps{eps}/seed{seed}.json",
        judgements="results/headtohead/{model}/{dataset}/{a}_vs_{b}/eps{eps}/seed{seed}.judgements.jsonl",
    wildcard_constraints:
        a="[a-z0-9-]+",
        b="[a-z0-9-]+",
    params:
        judge=CFG["judge"],
    threads: CFG["threads"]
    log:
        "results/logs/headtohead/{model}/{dataset}/{a}_vs_{b}/eps{eps}/seed{seed}.log",
    benchmark:
        "results/benchmarks/headtohead/{model}/{dataset}/{a}_vs_{b}/eps{eps}/seed{seed}.tsv"
    shell:
        "props headtohead --a {input.a} --b {input.b} --name-a {wildcards.a} "
        "--name-b {wildcards.b} --model {wildcards.model} --dataset {wildcards.dataset} "
        "--eps {wildcards.eps} --seed {wildcards.seed} --judge {params.judge:q} "
        "--out {output.result} --judgements {output.judgements} --threads {threads} "
        "> {log} 2>&1"
