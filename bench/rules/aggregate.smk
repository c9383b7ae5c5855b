# Runs -> summary.csv -> tables 1-3 (Markdown, LaTeX, HTML), figures and the report.
# Each target depends on what it reads and no more: table 2 on the runs it compares and
# their head-to-heads, table 3 on the training ledgers only (no generation or judging),
# table 1 and the figures on summary.csv.  Re-aggregating never retrains.
from props import aggregate as A
from props.figures import FIGURES

report: "../report/workflow.rst"


rule aggregate:
    conda:
        "../../envs/props.yaml"
    input:
        run_metrics(),
    output:
        "results/summary.csv",
    log:
        "results/logs/aggregate.log",
    shell:
        "props aggregate {input} --out {output} > {log} 2>&1"


rule table1:
    conda:
        "../../envs/props.yaml"
    input:
        "results/summary.csv",
    output:
        md="results/table1.md",
        tex="results/table1.tex",
        html=report("results/table1.html", caption="../report/table1.rst", category="Tables",
                    labels={"table": "1: win-rate vs SFT"}),
    log:
        "results/logs/table1.log",
    shell:
        "props table table1 --summary {input} --out {output.md} --tex {output.tex} "
        "--html {output.html} > {log} 2>&1"


rule table2:
    conda:
        "../../envs/props.yaml"
    input:
        metrics=A.compared_metrics(CFG),
        headtohead=A.headtohead_files(CFG),
    output:
        md="results/table2.md",
        tex="results/table2.tex",
        html=report("results/table2.html", caption="../report/table2.rst", category="Tables",
                    labels={"table": "2: PROPS vs RR / DP-SGD"}),
    params:
        methods=" ".join(CFG["methods"]),
    log:
        "results/logs/table2.log",
    shell:
        "props table table2 --metrics {input.metrics} --headtohead {input.headtohead} "
        "--methods {params.methods} --out {output.md} --tex {output.tex} "
        "--html {output.html} > {log} 2>&1"


rule table3:
    conda:
        "../../envs/props.yaml"
    input:
        A.grid_files(CFG, "train.json"),
    output:
        md="results/table3.md",
        tex="results/table3.tex",
        html=report("results/table3.html", caption="../report/table3.rst", category="Tables",
                    labels={"table": "3: privacy and label quality"}),
    log:
        "results/logs/table3.log",
    shell:
        "props table table3 --metrics {input} --out {output.md} --tex {output.tex} "
        "--html {output.html} > {log} 2>&1"


rule figures:
    conda:
        "../../envs/props.yaml"
    input:
        summary="results/summary.csv",
        headtohead=A.headtohead_files(CFG),
    output:
        [report(f"results/figures/{name}.png", caption=f"../report/{name}.rst",
                category="Figures", labels={"figure": name.replace("_", " ")})
         for name in FIGURES],
    params:
        methods=" ".join(CFG["methods"]),
        outdir=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/figures.log",
    shell:
        "props figures --summary {input.summary} --headtohead {input.headtohead} "
        "--methods {params.methods} --outdir {params.outdir} > {log} 2>&1"


rule tables:
    input:
        rules.table1.output,
        rules.table2.output,
        rules.table3.output,
