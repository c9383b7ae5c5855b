"""Aggregation: every run's metrics.json -> results/summary.csv -> tables.

Reads only the self-describing metrics files, so re-aggregating never retrains.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from props import io

SUMMARY_COLUMNS = [
    "model", "dataset", "method", "eps", "seed", "win_rate", "win_rate_se", "wins", "ties",
    "losses", "n", "label_accuracy", "kl_to_sft", "mean_length", "mean_reward",
    "well_formed", "privacy_mechanism", "privacy_unit", "privacy_eps", "privacy_delta",
    "privacy_accountant", "noise_multiplier", "sampling_rate", "steps", "max_grad_norm",
    "eps_spent", "n_pairs", "wall_time_train_s",
]


def summary_row(m: dict) -> dict:
    ev = m.get("evaluation", {})
    pv = m.get("privacy", {})
    lab = m.get("labels", {})
    eps = m["eps"]
    return {
        "model": m["model"], "dataset": m["dataset"], "method": m["method"],
        "eps": math.inf if str(eps) == "inf" else float(eps), "seed": m["seed"],
        "win_rate": ev.get("win_rate"), "win_rate_se": ev.get("win_rate_se"),
        "wins": ev.get("wins"), "ties": ev.get("ties"), "losses": ev.get("losses"),
        "n": ev.get("n"), "label_accuracy": lab.get("accuracy"),
        "kl_to_sft": ev.get("kl_to_sft"), "mean_length": ev.get("mean_length"),
        "mean_reward": ev.get("mean_reward"), "well_formed": ev.get("well_formed"),
        "privacy_mechanism": pv.get("mechanism"), "privacy_unit": pv.get("unit"),
        "privacy_eps": pv.get("eps", pv.get("eps_target")), "privacy_delta": pv.get("delta"),
        "privacy_accountant": pv.get("accountant"),
        "noise_multiplier": pv.get("noise_multiplier"), "sampling_rate": pv.get("sampling_rate"),
        "steps": pv.get("steps"), "max_grad_norm": pv.get("max_grad_norm"),
        "eps_spent": pv.get("eps_spent"), "n_pairs": lab.get("n_pairs"),
        "wall_time_train_s": m.get("wall_time_train_s"),
    }


def aggregate(metrics_files: list[Path], out: Path) -> pd.DataFrame:
    rows = [summary_row(io.read_json(p)) for p in metrics_files]
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    df = df.sort_values(["model", "dataset", "method", "eps", "seed"]).reset_index(drop=True)
    with io.atomic_path(out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    print(f"[props] aggregate: {len(df)} runs -> {out}", flush=True)
    return df


def read_summary(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df["eps"] = df["eps"].astype(float)
    return df


def mean_se(values) -> tuple[float, float, int]:
    """Mean over seeds and its standard error (nan SE with one seed)."""
    v = np.asarray([x for x in values if x is not None and not pd.isna(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se, len(v)


def fmt_eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def fmt_pm(mean: float, se: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def table1(df: pd.DataFrame) -> str:
    """Win-rate (%) against the SFT reference, mean ± SE over seeds, method x eps; one block
    per model x dataset.  With one seed, the SE is alpaca_eval's over prompts."""
    parts = ["# Table 1: win-rate against the SFT reference\n",
             "Win-rate in percent (ties count half) of each method's answers against the SFT "
             "model's answers on held-out prompts; mean ± standard error over seeds "
             "(over prompts when there is one seed). `dpo` uses the true labels (no privacy) "
             "and appears under eps = inf. Label-DP methods protect each preference label; "
             "the SFT demonstrations are public.\n"]
    for (model, dataset), g in df.groupby(["model", "dataset"], sort=True):
        eps_list = sorted(g["eps"].unique())
        methods = list(dict.fromkeys(g["method"]))
        header = ["method"] + [f"eps={fmt_eps(e)}" for e in eps_list]
        lines = [f"\n## {model} / {dataset}\n", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        for meth in methods:
            cells = [meth]
            for e in eps_list:
                sub = g[(g["method"] == meth) & (g["eps"] == e)]
                if sub.empty:
                    cells.append("")
                    continue
                mean, se, k = mean_se(sub["win_rate"])
                if k == 1:
                    se = float(sub["win_rate_se"].iloc[0])
                cells.append(fmt_pm(mean, se))
            lines.append("| " + " | ".join(cells) + " |")
        n_seeds = g["seed"].nunique()
        lines.append(f"\n{n_seeds} seed(s); {int(g['n'].max())} evaluation prompts per run.")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def render_table(which: str, summary: str | Path, out: Path) -> None:
    df = read_summary(summary)
    if df.empty:
        raise io.InputError(f"{summary}: no runs to tabulate")
    text = {"table1": table1}[which](df)
    io.write_text(out, text)
    print(f"[props] {which} -> {out}", flush=True)
