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
    log:
        "results/logs/judge/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    shell:
        "props judge --spec {params.spec} --run {params.run} "
        "--generations {input.generations} --reference {input.reference} > {log} 2>&1"
