"""Aggregation: every run's metrics.json -> results/summary.csv -> tables and figures.

Reads only the self-describing metrics files (or the training ledgers, train.json, for
what does not need an evaluation), so re-aggregating never retrains and never re-judges.
The helpers that turn per-seed numbers into "mean ± SE" live here too, so that every
table and figure states its uncertainty the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from props import io
from props.io import InputError

SUMMARY_COLUMNS = [
    "model", "dataset", "method", "eps", "seed", "judge", "n",
    "win_rate", "win_rate_se", "wins", "ties", "losses",
    "kl_to_sft", "kl_to_sft_se", "mean_length", "mean_length_se", "mean_length_reference",
    "mean_length_reference_se", "mean_reward", "mean_reward_se", "mean_reward_reference",
    "mean_reward_reference_se", "well_formed",
    "label_accuracy", "released_accuracy", "n_pairs",
    "privacy_mechanism", "privacy_unit", "privacy_eps", "privacy_delta", "privacy_accountant",
    "flip_probability", "noise_multiplier", "sampling_rate", "steps", "max_grad_norm",
    "eps_spent", "wall_time_train_s",
]
"""Fixed columns of summary.csv; `label_accuracy_stage{k}` columns follow, one per PROPS
stage present in any run, then the stage labelers' (`labeler_score`,
`labeler_accuracy_stage{k}`, `labeler_error_estimate_stage{k}`,
`labeler_accuracy_stage{k}_{score}`) where a multi-stage method ran (tidy: one row per
run, one column per quantity)."""

REQUIRED_KEYS = ("model", "dataset", "method", "eps", "seed")


def _num(v) -> float | None:
    """JSON numbers as floats; the ledger writes inf/nan as strings."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return float(v)


def summary_row(m: dict, source: str | Path = "metrics") -> dict:
    """One tidy summary row from a run's metrics.json (or train.json, which lacks the
    evaluation: those columns are then empty)."""
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise InputError(f"{source}: missing key {missing[0]!r} (not a run's metrics.json?)")
    ev = m.get("evaluation") or {}
    pv = m.get("privacy") or {}
    lab = m.get("labels") or {}
    row = {
        "model": m["model"], "dataset": m["dataset"], "method": m["method"],
        "eps": io.parse_eps(m["eps"]), "seed": int(m["seed"]), "judge": ev.get("judge"),
        "n": ev.get("n"),
        "win_rate": ev.get("win_rate"), "win_rate_se": ev.get("win_rate_se"),
        "wins": ev.get("wins"), "ties": ev.get("ties"), "losses": ev.get("losses"),
        "kl_to_sft": _num(ev.get("kl_to_sft")), "kl_to_sft_se": _num(ev.get("kl_to_sft_se")),
        "mean_length": ev.get("mean_length"), "mean_length_se": _num(ev.get("mean_length_se")),
        "mean_length_reference": ev.get("mean_length_reference"),
        "mean_length_reference_se": _num(ev.get("mean_length_reference_se")),
        "mean_reward": ev.get("mean_reward"), "mean_reward_se": _num(ev.get("mean_reward_se")),
        "mean_reward_reference": ev.get("mean_reward_reference"),
        "mean_reward_reference_se": _num(ev.get("mean_reward_reference_se")),
        "well_formed": ev.get("well_formed"),
        "label_accuracy": lab.get("accuracy"), "released_accuracy": lab.get("released_accuracy"),
        "n_pairs": lab.get("n_pairs"),
        "privacy_mechanism": pv.get("mechanism"), "privacy_unit": pv.get("unit"),
        "privacy_eps": _num(pv.get("eps", pv.get("eps_target"))),
        "privacy_delta": _num(pv.get("delta")), "privacy_accountant": pv.get("accountant"),
        "flip_probability": _num(pv.get("flip_probability")),
        "noise_multiplier": _num(pv.get("noise_multiplier")),
        "sampling_rate": _num(pv.get("sampling_rate")), "steps": pv.get("steps"),
        "max_grad_norm": _num(pv.get("max_grad_norm")), "eps_spent": _num(pv.get("eps_spent")),
        "wall_time_train_s": m.get("wall_time_train_s"),
    }
    for stage, acc in (lab.get("accuracy_per_stage") or {}).items():
        row[f"label_accuracy_stage{int(stage)}"] = _num(acc)
    # the stage-k labeler (k >= 2): its own accuracy, the error rate the method estimated
    # from the released labels, and the accuracy each labeler score would have had
    score = lab.get("labeler_score") or lab.get("prior_score")
    if score:
        row["labeler_score"] = score
    for stage, info in (lab.get("per_stage") or {}).items():
        k = int(stage)
        if "labeler_accuracy" in info:
            row[f"labeler_accuracy_stage{k}"] = _num(info["labeler_accuracy"])
        if "labeler_error_estimate" in info:
            row[f"labeler_error_estimate_stage{k}"] = _num(info["labeler_error_estimate"])
        for name, acc in sorted((info.get("labeler_accuracy_by_score") or {}).items()):
            row[f"labeler_accuracy_stage{k}_{name}"] = _num(acc)
    return row


def stage_columns(df: pd.DataFrame) -> list[str]:
    """The per-stage label-accuracy columns present, in stage order."""
    cols = [c for c in df.columns if c.startswith("label_accuracy_stage")]
    return sorted(cols, key=lambda c: int(c.removeprefix("label_accuracy_stage")))


def labeler_columns(df: pd.DataFrame) -> list[str]:
    """The stage-labeler columns present (score in use, then per stage)."""
    return sorted((c for c in df.columns if c.startswith("labeler_")),
                  key=lambda c: (c != "labeler_score", c))


def runs_frame(files: Iterable[str | Path]) -> pd.DataFrame:
    """Summary rows of the given metrics.json / train.json files, one per run."""
    rows = []
    for p in files:
        m = io.read_json_input(p)
        if not isinstance(m, dict):
            raise InputError(f"{p}: not a JSON object")
        rows.append(summary_row(m, p))
    df = pd.DataFrame(rows)
    for c in SUMMARY_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    df = df[SUMMARY_COLUMNS + stage_columns(df) + labeler_columns(df)]
    dup = df.duplicated(["model", "dataset", "method", "eps", "seed"])
    if dup.any():
        r = df[dup].iloc[0]
        raise InputError(f"two metrics files for the same run: {r['model']}/{r['dataset']}/"
                         f"{r['method']}/eps{io.eps_tag(r['eps'])}/seed{r['seed']}")
    return df.sort_values(["model", "dataset", "method", "eps", "seed"]).reset_index(drop=True)


def aggregate(metrics_files: list[Path], out: Path) -> pd.DataFrame:
    df = runs_frame(metrics_files)
    with io.atomic_path(out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    print(f"[props] aggregate: {len(df)} runs -> {out}", flush=True)
    return df


def read_summary(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file, not a summary.csv") from None
    missing = [c for c in REQUIRED_KEYS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: column {missing[0]!r} missing (not a summary.csv?)")
    for c in SUMMARY_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    df["eps"] = df["eps"].map(io.parse_eps).astype(float)
    return df


# ----------------------------------------------------------------------------- uncertainty


def mean_se(values) -> tuple[float, float, int]:
    """Mean over seeds and its standard error (nan SE with one seed)."""
    v = np.asarray([x for x in values if x is not None and not pd.isna(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se, len(v)


def seed_stat(sub: pd.DataFrame, col: str, se_col: str | None = None) -> tuple[float, float, int]:
    """Mean ± SE of a column over the seeds in `sub`.  With one seed the SE is the run's
    own (over prompts) from `se_col`, so a single-seed number still carries its
    uncertainty; returns (mean, se, number of seeds)."""
    mean, se, k = mean_se(sub[col]) if col in sub else (math.nan, math.nan, 0)
    if k == 1 and se_col and se_col in sub:
        v = sub.loc[sub[col].notna(), se_col]
        if len(v) and not pd.isna(v.iloc[0]):
            se = float(v.iloc[0])
    return mean, se, k


def fmt_eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def fmt_pm(mean: float, se: float, digits: int = 1) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if se is None or math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


# ----------------------------------------------------------------------------- entry points


def render_table(which: str, out: Path, summary: str | Path | None = None,
                 metrics: list[Path] | None = None, headtohead: list[Path] | None = None,
                 methods: list[str] | None = None, tex: Path | None = None,
                 html: Path | None = None) -> None:
    """Write table1/2/3 as Markdown (and LaTeX / HTML when asked).  Runs come from a
    summary.csv or directly from metrics.json / train.json files (so table 2 and 3 can
    depend on the runs they need instead of the whole grid)."""
    from props import tables

    if summary is not None:
        df = read_summary(summary)
    elif metrics:
        df = runs_frame(metrics)
    elif which == "table2":
        df = runs_frame([])
    else:
        raise InputError(f"{which}: give --summary or --metrics")
    if which == "table1":
        table = tables.table1(df)
    elif which == "table2":
        from props.headtohead import load_results

        table = tables.table2(df, load_results(headtohead or []), methods)
    elif which == "table3":
        table = tables.table3(df)
    else:
        raise InputError(f"unknown table {which!r} (known: table1, table2, table3)")
    io.write_text(out, tables.to_markdown(table))
    if tex is not None:
        io.write_text(tex, tables.to_latex(table))
    if html is not None:
        io.write_text(html, tables.to_html(table))
    print(f"[props] {which} -> {', '.join(str(p) for p in (out, tex, html) if p)}", flush=True)


# ----------------------------------------------------------------------------- workflow inputs

RUN_FILE = "results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/{name}"
HEADTOHEAD_FILE = "results/headtohead/{model}/{dataset}/{a}_vs_{b}/eps{eps}/seed{seed}.json"


def grid_files(cfg: dict, name: str, methods: Iterable[str] | None = None) -> list[str]:
    """A file (metrics.json, train.json ...) of every run of the grid, optionally only of
    some methods: what the workflow's aggregation rules take as input."""
    from props import config as C

    keep = None if methods is None else set(methods)
    return [RUN_FILE.format(model=r["model"], dataset=r["dataset"], method=r["method"],
                            eps=io.eps_tag(r["eps"]), seed=r["seed"], name=name)
            for r in C.grid(cfg) if keep is None or r["method"] in keep]


def compared_metrics(cfg: dict) -> list[str]:
    """metrics.json of the runs table 2 compares (both sides of every headline pair in the
    config), so that table 2 does not wait for the whole grid."""
    from props.headtohead import pairs_for

    return grid_files(cfg, "metrics.json", {m for p in pairs_for(cfg["methods"]) for m in p})


def headtohead_files(cfg: dict) -> list[str]:
    """Head-to-head result of every headline pair of the config at every (model,
    dataset, eps, seed) where both methods have a run in the grid."""
    from props import config as C
    from props.headtohead import pairs_for

    runs = {(r["model"], r["dataset"], r["method"], r["eps"], r["seed"]) for r in C.grid(cfg)}
    return [HEADTOHEAD_FILE.format(model=m, dataset=d, a=a, b=b, eps=io.eps_tag(e), seed=s)
            for a, b in pairs_for(cfg["methods"])
            for (m, d, meth, e, s) in sorted(runs)
            if meth == a and (m, d, b, e, s) in runs]
