"""`props`: the command line of the suite; every Snakemake rule calls one subcommand.

Settings reach a step in one of two ways: `--config FILE` (with --model / --dataset
names) for people, or `--spec JSON` (the resolved run spec, see
`props.config.run_spec`) for the workflow.  Bad input exits with code 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from props import __version__
from props.io import InputError, parse_eps


def _spec(args) -> dict:
    from props import config as C

    if getattr(args, "spec", None):
        try:
            return json.loads(args.spec)
        except json.JSONDecodeError as e:
            raise InputError(f"--spec is not valid JSON ({e.msg})") from None
    if not getattr(args, "config", None):
        raise InputError("give --config FILE (with --model and --dataset) or --spec JSON")
    cfg = C.load(args.config)
    model = args.model or next(iter(cfg["models"]))
    dataset = args.dataset or next(iter(cfg["datasets"]))
    if model not in cfg["models"]:
        raise InputError(f"model {model!r} is not in {args.config}")
    if dataset not in cfg["datasets"]:
        raise InputError(f"dataset {dataset!r} is not in {args.config}")
    return C.run_spec(cfg, model, dataset)


def _existing(p: str) -> Path:
    path = Path(p)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"input not found: {path}")
    return path


def _seed(v: str) -> int:
    try:
        s = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {v!r}") from None
    if s < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {v!r}")
    return s


def _eps(v: str) -> float:
    try:
        return parse_eps(v)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="props", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"props {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, help_: str, spec=True, threads=False):
        s = sub.add_parser(name, help=help_, description=help_)
        if spec:
            g = s.add_argument_group("settings")
            g.add_argument("--config", help="a config YAML (bench/config/*.yaml)")
            g.add_argument("--model", help="model name in the config (default: the first)")
            g.add_argument("--dataset", help="dataset name in the config (default: the first)")
            g.add_argument("--spec", help="resolved run spec as JSON (what the workflow passes)")
        if threads:
            s.add_argument("--threads", type=int, default=1, help="torch threads for this job")
        return s

    s = add("validate", "check a config file; print the grid size", spec=False)
    s.add_argument("config")
    s.add_argument("--runs", action="store_true", help="also list every run")

    s = add("data", "build a dataset's splits (corpus / sft / pool prompts / eval)")
    s.add_argument("--out", required=True)

    s = add("base", "pre-train the base model (tiny Llama + in-suite tokenizer)", threads=True)
    s.add_argument("--data", required=True, type=_existing)
    s.add_argument("--out", required=True)

    s = add("sft", "SFT the base model on the public demonstrations", threads=True)
    s.add_argument("--data", required=True, type=_existing)
    s.add_argument("--base", required=True, type=_existing)
    s.add_argument("--out", required=True)

    s = add("pool", "build the private preference pool and cache reference log-probs",
            threads=True)
    s.add_argument("--data", required=True, type=_existing)
    s.add_argument("--base", required=True, type=_existing)
    s.add_argument("--sft", required=True, type=_existing)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", required=True)

    s = add("release", "release the pool's labels once through RR(eps)", spec=False)
    s.add_argument("--pool", required=True, type=_existing)
    s.add_argument("--eps", required=True, type=_eps)
    s.add_argument("--seed", required=True, type=_seed)
    s.add_argument("--dataset", required=True, help="dataset name (part of the RR seed)")
    s.add_argument("--out", required=True)

    s = add("train", "train one method at one eps and seed", threads=True)
    s.add_argument("--method", required=True)
    s.add_argument("--eps", required=True, type=_eps)
    s.add_argument("--seed", required=True, type=_seed)
    s.add_argument("--pool", required=True, type=_existing)
    s.add_argument("--release", required=True, type=_existing)
    s.add_argument("--sft", required=True, type=_existing)
    s.add_argument("--base", required=True, type=_existing)
    s.add_argument("--out", required=True, help="the run directory")

    s = add("generate", "sample answers to the held-out prompts", threads=True)
    s.add_argument("--data", required=True, type=_existing)
    s.add_argument("--policy", required=True, type=_existing)
    s.add_argument("--ref", required=True, type=_existing, help="the SFT reference model")
    s.add_argument("--seed", required=True, type=_seed)
    s.add_argument("--out", required=True)

    s = add("judge", "judge a run's answers against the reference; write metrics.json",
            threads=True)
    s.add_argument("--run", type=_existing, help="the run directory (required)")
    s.add_argument("--generations", type=_existing, help="(required)")
    s.add_argument("--reference", type=_existing, help="(required)")
    jsub = s.add_subparsers(dest="judge_cmd", required=False, metavar="{agree,fit-local}")
    j = jsub.add_parser("agree", help="a judge's agreement with GPT-4 on AlpacaEval "
                        "annotation files, next to the length baseline")
    j.add_argument("--judge", required=True, help="judge spec, e.g. local or llm:model=...")
    j.add_argument("files", nargs="+", type=_existing,
                   help="AlpacaEval annotation files (*.json.gz) or folders of them")
    j.add_argument("--out", help="also write the report as JSON here")
    j.add_argument("--instructions", choices=["a", "b"],
                   help="score one half of the instructions only: a judge fitted with "
                   "`fit-local --instruction-half a` never saw half b")
    j = jsub.add_parser("fit-local", help="fit the local judge's weights from AlpacaEval "
                        "GPT-4 annotation files")
    j.add_argument("--annotations", type=_existing,
                   help="folder of annotation files (default: shared data)")
    j.add_argument("--out", help="weights JSON (default: the cache's default file)")
    j.add_argument("--instruction-half", choices=["a", "b"],
                   help="learn from this half of the instructions only, so that `agree "
                   "--instructions` can measure the judge on the other half")

    s = add("aggregate", "collect every run's metrics.json into results/summary.csv",
            spec=False)
    s.add_argument("metrics", nargs="+", type=_existing)
    s.add_argument("--out", required=True)

    s = add("table", "render table1/2/3 (Markdown, optionally LaTeX and HTML)", spec=False)
    s.add_argument("which", choices=["table1", "table2", "table3"])
    s.add_argument("--summary", type=_existing, help="results/summary.csv")
    s.add_argument("--metrics", nargs="*", type=_existing, default=[],
                   help="runs' metrics.json or train.json, instead of --summary")
    s.add_argument("--headtohead", nargs="*", type=_existing, default=[],
                   help="head-to-head result files (table2)")
    s.add_argument("--methods", nargs="*", help="the config's methods (table2)")
    s.add_argument("--out", required=True, help="the Markdown table")
    s.add_argument("--tex", help="also write the LaTeX version here")
    s.add_argument("--html", help="also write an HTML version here")

    s = add("headtohead", "judge two runs' answers to the same prompts against each other",
            spec=False, threads=True)
    s.add_argument("--a", required=True, type=_existing, help="generations.jsonl of run A")
    s.add_argument("--b", required=True, type=_existing, help="generations.jsonl of run B")
    s.add_argument("--judge", default="gold", help="judge name (default: gold)")
    s.add_argument("--name-a", help="method of A (default: from the path)")
    s.add_argument("--name-b", help="method of B (default: from the path)")
    s.add_argument("--model", help="model name (default: from the path)")
    s.add_argument("--dataset", help="dataset name (default: from the path)")
    s.add_argument("--eps", type=_eps, help="eps of both runs (default: from the path)")
    s.add_argument("--seed", type=_seed, help="seed; also fixes the answer order per prompt")
    s.add_argument("--out", required=True, help="result JSON")
    s.add_argument("--judgements", help="per-prompt judgements JSONL (default: next to --out)")

    s = add("figures", "draw the figures from summary.csv and the head-to-heads", spec=False)
    s.add_argument("--summary", required=True, type=_existing)
    s.add_argument("--headtohead", nargs="*", type=_existing, default=[])
    s.add_argument("--methods", nargs="*", help="the config's methods (explains absent pairs)")
    s.add_argument("--outdir", required=True)
    return p


def dispatch(args) -> None:
    from props import steps

    cmd = args.cmd
    if cmd == "validate":
        from props import config as C

        cfg = C.load(args.config)
        runs = C.grid(cfg)
        print(f"{args.config}: ok, {len(runs)} runs "
              f"({len(cfg['models'])} models x {len(cfg['datasets'])} datasets, "
              f"methods {', '.join(cfg['methods'])}, eps {cfg['eps']}, seeds {cfg['seeds']})")
        if args.runs:
            for r in runs:
                print(json.dumps(r))
        return
    if cmd == "release":
        steps.step_release(args.pool, args.eps, args.seed, args.dataset, Path(args.out))
        return
    if cmd == "aggregate":
        from props.aggregate import aggregate

        aggregate([Path(m) for m in args.metrics], Path(args.out))
        return
    if cmd == "table":
        from props.aggregate import render_table

        render_table(args.which, Path(args.out), summary=args.summary, metrics=args.metrics,
                     headtohead=args.headtohead, methods=args.methods,
                     tex=Path(args.tex) if args.tex else None,
                     html=Path(args.html) if args.html else None)
        return
    if cmd == "headtohead":
        from props.headtohead import step_headtohead

        step_headtohead(args.judge, args.a, args.b, Path(args.out),
                        Path(args.judgements) if args.judgements else None,
                        {"a": args.name_a, "b": args.name_b, "model": args.model,
                         "dataset": args.dataset, "eps": args.eps}, args.seed, args.threads)
        return
    if cmd == "figures":
        from props.figures import step_figures

        step_figures(args.summary, args.headtohead, Path(args.outdir), args.methods)
        return
    if cmd == "judge" and getattr(args, "judge_cmd", None):
        from props import judge_tools

        judge_tools.dispatch(args)
        return
    if cmd == "judge" and not (args.run and args.generations and args.reference):
        raise InputError("props judge needs --run, --generations and --reference "
                         "(or a subcommand: agree, fit-local)")
    spec = _spec(args)
    out = Path(args.out) if hasattr(args, "out") else None
    if cmd == "data":
        steps.step_data(spec["dataset"], out)
    elif cmd == "base":
        steps.step_base(spec["model"], args.data, out, spec["dataset"]["seed"], args.threads)
    elif cmd == "sft":
        steps.step_sft(spec["sft"], args.data, args.base, out, spec["dataset"]["seed"],
                       args.threads)
    elif cmd == "pool":
        steps.step_pool(spec["dataset"], spec["generation"], args.data, args.base, args.sft,
                        out, args.seed, args.threads)
    elif cmd == "train":
        from props.registry import METHODS

        if args.method not in METHODS:
            raise InputError(f"unknown method {args.method!r} (known: {', '.join(METHODS)})")
        run = {"model": spec["model"]["name"], "dataset": spec["dataset"]["name"],
               "method": args.method, "eps": args.eps, "seed": args.seed}
        steps.step_train(spec, run, args.pool, args.release, args.sft, args.base, out,
                         args.threads)
    elif cmd == "generate":
        steps.step_generate(spec["generation"], args.data, args.policy, args.ref, args.seed,
                            out, args.threads)
    elif cmd == "judge":
        steps.step_judge(spec["judge"], args.run, args.generations, args.reference,
                         args.threads)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dispatch(args)
    except InputError as e:
        print(f"props: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
