"""`props judge agree` and `props judge fit-local`: how far a judge can be trusted.

Agreement is measured against GPT-4's AlpacaEval judgements (ties excluded) next to the
"longer answer wins" baseline, because GPT-4 prefers longer answers so strongly that raw
agreement proves little on its own.  Length-balanced pairs (the shorter answer has more
than 0.8 of the longer's characters) take most of that shortcut away.  A judge's tie, and
the baseline on two answers of equal length, count as half right.  The judge is compared
with the baseline pair by pair by an exact sign test (McNemar's test when neither has
ties).

A third reference point is printed because the annotation files share one reference
generator (text-davinci-003, `output_1`): where most generators are weaker than it, the
constant "output_1 always wins" is right on most length-balanced pairs (0.637 on the local
judge's held-out generators) without judging anything.  A judge that never looks at the
position or the generator (the local judge is antisymmetric by construction) gets no help
from that prior; its balanced agreement should be read against both numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from props import io

BALANCE = 0.8


@dataclass
class Scored:
    """Per pair: how right the judge and the baseline are (0, 0.5 or 1) and whether the
    pair is length-balanced."""

    judge: np.ndarray
    baseline: np.ndarray
    balanced: np.ndarray
    first_wins: np.ndarray  # GPT-4 preferred output_1 (the shared reference answer)

    @classmethod
    def concat(cls, parts: list[Scored]) -> Scored:
        return cls(*(np.concatenate([getattr(s, f.name) for s in parts]) for f in fields(cls)))

    def summary(self) -> dict:
        b = self.balanced
        return {"n": int(len(self.judge)), "agreement": _mean(self.judge),
                "baseline": _mean(self.baseline), "n_balanced": int(b.sum()),
                "balanced": _mean(self.judge[b]), "balanced_baseline": _mean(self.baseline[b]),
                "first_wins": _mean(self.first_wins),
                "balanced_first_wins": _mean(self.first_wins[b]),
                "test": sign_test(self.judge, self.baseline),
                "test_balanced": sign_test(self.judge[b], self.baseline[b])}


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def is_balanced(a: str, b: str) -> bool:
    short, long_ = sorted((len(a), len(b)))
    return short > BALANCE * long_


def length_baseline(output_1: str, output_2: str) -> float:
    """The baseline's AlpacaEval preference: the longer answer wins; equal is a tie."""
    return 2.0 if len(output_2) > len(output_1) else 1.0 if len(output_1) > len(output_2) else 1.5


def correctness(pred: float, truth: float) -> float:
    """1 if the prediction picks GPT-4's side, 0 if the other, 0.5 for a tie (soft
    preferences count by side)."""
    if pred == 1.5:
        return 0.5
    return float((pred > 1.5) == (truth > 1.5))


def sign_test(judge: np.ndarray, baseline: np.ndarray) -> dict:
    """Exact two-sided sign test of judge vs baseline over the pairs where they differ,
    with the mean paired difference and its normal 95% interval."""
    from scipy.stats import binomtest

    d = judge - baseline
    better, worse = int((d > 0).sum()), int((d < 0).sum())
    p = binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    mean = float(d.mean()) if n else float("nan")
    return {"judge_better": better, "baseline_better": worse, "p_value": float(p),
            "mean_difference": mean, "ci95": [mean - 1.96 * se, mean + 1.96 * se]}


def score_file(judge, path: Path, instruction_filter=None) -> Scored:
    from props.datasets import read_annotations
    from props.judges import judge_many

    rows = [a for a in read_annotations(path) if a.preference in (1.0, 2.0)
            and (instruction_filter is None or instruction_filter(a.instruction))]
    prefs = judge_many(judge, [(a.instruction, a.output_1, a.output_2) for a in rows])
    return Scored(
        judge=np.array([correctness(float(p["preference"]), a.preference)
                        for p, a in zip(prefs, rows)]),
        baseline=np.array([correctness(length_baseline(a.output_1, a.output_2), a.preference)
                           for a in rows]),
        balanced=np.array([is_balanced(a.output_1, a.output_2) for a in rows], dtype=bool),
        first_wins=np.array([float(a.preference == 1.0) for a in rows]))


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.3f}"


def _test_line(label: str, t: dict) -> str:
    return (f"paired sign test vs length baseline ({label}): judge right where the baseline "
            f"is wrong on {t['judge_better']} pairs, the reverse on {t['baseline_better']}; "
            f"difference {t['mean_difference']:+.3f} (95% CI {t['ci95'][0]:+.3f} to "
            f"{t['ci95'][1]:+.3f}), p = {t['p_value']:.2g}")


def agree(judge_spec: str, paths: list[Path], out: Path | None = None,
          instructions: str | None = None, echo=print) -> dict:
    """Per file and overall agreement of a judge with GPT-4, next to the length baseline;
    the last line printed reads `overall: agreement A, balanced B, length baseline C,
    balanced baseline D`.  `instructions` ("a" or "b") scores one half of the
    instructions only (see `props.local_judge.instruction_half`)."""
    from props import judges
    from props.datasets import annotation_files, annotation_name

    judge = judges.get(judge_spec)
    files = [f for p in paths for f in annotation_files(p)]
    filt = None
    if instructions:
        from props.local_judge import instruction_half

        def filt(instruction: str) -> bool:
            return instruction_half(instruction) == instructions
    per_file, parts = {}, []
    for f in files:
        s = score_file(judge, f, filt)
        parts.append(s)
        per_file[annotation_name(f)] = sm = s.summary()
        echo(f"{annotation_name(f)}: n {sm['n']}, agreement {_fmt(sm['agreement'])}, "
             f"balanced {_fmt(sm['balanced'])} (n {sm['n_balanced']}), length baseline "
             f"{_fmt(sm['baseline'])}, balanced baseline {_fmt(sm['balanced_baseline'])}")
    total = Scored.concat(parts).summary()
    echo(f"pairs: {total['n']} ({total['n_balanced']} length-balanced), ties excluded"
         + (f", instructions of half {instructions} only" if instructions else ""))
    echo(_test_line("all pairs", total["test"]))
    echo(_test_line("balanced pairs", total["test_balanced"]))
    echo(f"prior, not a judge: output_1 (the shared reference) always wins: "
         f"{_fmt(total['first_wins'])} on all pairs, {_fmt(total['balanced_first_wins'])} on "
         "balanced pairs")
    echo(f"overall: agreement {_fmt(total['agreement'])}, balanced {_fmt(total['balanced'])}, "
         f"length baseline {_fmt(total['baseline'])}, balanced baseline "
         f"{_fmt(total['balanced_baseline'])}")
    report = {"judge": judge_spec, "files": [str(f) for f in files],
              "instructions": instructions or "all", "per_file": per_file,
              "overall": total}
    if out:
        io.write_json(out, report)
    return report


def dispatch(args) -> None:
    if args.judge_cmd == "agree":
        agree(args.judge, list(args.files), Path(args.out) if args.out else None,
              instructions=args.instructions)
    elif args.judge_cmd == "fit-local":
        from props import local_judge as L

        L.fit(args.annotations or L.default_annotations_dir(),
              Path(args.out) if args.out else L.default_weights_path(),
              half=args.instruction_half)
