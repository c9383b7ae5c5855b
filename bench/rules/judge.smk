# The judge compares each run's answers with the SFT reference's; writes metrics.json.


rule judge:
    input:
        train=RUN + "/train.json",
        generations=RUN + "/generations.jsonl",
        reference=R + "/reference/{model}/{dataset}/seed{seed}/generations.jsonl",
    output:
        judgements=RUN + "/judgements.jsonl",
        metrics=RUN + "/metrics.json",
    params:
        spec=spec("judge"),
        run=RUN,
    log:
        R + "/logs/judge/{model}/{dataset}/{method}/eps{eps}/seed{seed}.log",
    shell:
        "props judge --spec {params.spec} --run {params.run} "
        "--generations {input.generations} --reference {input.reference} > {log} 2>&1"
