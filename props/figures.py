"""Figures of the benchmark (matplotlib, Agg backend), each readable without the tables:

- `winrate_vs_eps.png`: win-rate against the SFT reference vs eps, per method, with
  error bars (the paper's win-rate tables as curves);
- `headtohead_wtl.png`: win / tie / loss shares of the head-to-heads (PROPS vs RR, PROPS
  vs DP-SGD) at each eps;
- `label_accuracy_vs_eps.png`: accuracy of the labels trained on vs eps, per method and
  per PROPS stage, with randomized response's expected accuracy 1 - g;
- `reward_vs_kl.png`: mean gold reward against KL(policy || SFT) per run (the DPO paper's
  frontier view), so that a method winning only by drifting from the reference shows.

eps is drawn on a log axis; eps = inf (no privacy) sits one step right of the largest
finite eps, behind a dotted break line.  Every point is mean ± SE over seeds (over
prompts with one seed).  A figure whose data is absent (no head-to-heads, no gold
reward) is still written, saying why, so that the workflow target always exists.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from props import io
from props.aggregate import fmt_eps, seed_stat, stage_columns

FIGURES = ("winrate_vs_eps", "headtohead_wtl", "label_accuracy_vs_eps", "reward_vs_kl")
EPS_LABEL = "privacy level ε (log scale; ∞ = no privacy)"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods) -> dict[str, tuple]:
    """One fixed colour per method (registry order), the same in every figure."""
    from props.registry import METHODS

    plt = _plt()
    cmap = plt.get_cmap("tab10")
    order = list(METHODS) + sorted(set(methods) - set(METHODS))
    return {m: cmap(i % 10) for i, m in enumerate(order)}


def eps_axis(eps_values) -> tuple[dict[float, float], list[float], list[str], float | None]:
    """x position of every eps on a log axis: finite eps at themselves, inf 4x beyond the
    largest finite eps (at 1 when there is none).  Returns positions, ticks, tick labels
    and where to draw the break between finite eps and inf (None without both)."""
    eps_values = sorted({float(e) for e in eps_values})
    finite = [e for e in eps_values if math.isfinite(e)]
    x_inf = max(finite) * 4 if finite else 1.0
    pos = {e: (e if math.isfinite(e) else x_inf) for e in eps_values}
    ticks = [pos[e] for e in eps_values]
    labels = ["∞" if math.isinf(e) else fmt_eps(e) for e in eps_values]
    brk = max(finite) * 2 if finite and any(math.isinf(e) for e in eps_values) else None
    return pos, ticks, labels, brk


def _setup_eps_axis(ax, eps_values) -> dict[float, float]:
    pos, ticks, labels, brk = eps_axis(eps_values)
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.minorticks_off()
    if ticks:
        ax.set_xlim(min(ticks) / 1.6, max(ticks) * 1.6)
    if brk is not None:
        ax.axvline(brk, color="0.6", ls=":", lw=1)
    ax.set_xlabel(EPS_LABEL)
    ax.grid(alpha=0.3)
    return pos


def _panels(keys: list, plt, width: float = 5.5, height: float = 4.2):
    n = max(len(keys), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, out: Path) -> None:
    plt = _plt()
    with io.atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight",
                    metadata={"Software": None})
    plt.close(fig)


def _message(out: Path, title: str, text: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    _save(fig, out)


def _by_eps(sub: pd.DataFrame, col: str, se_col: str | None = None):
    xs, ys, es = [], [], []
    for e, g in sub.groupby("eps", sort=True):
        mean, se, k = seed_stat(g, col, se_col)
        if k:
            xs.append(float(e))
            ys.append(mean)
            es.append(0.0 if math.isnan(se) else se)
    return xs, ys, es


def _errorbar_eps(ax, pos: dict, xs, ys, es, label: str, **kw):
    """Error bars along the eps axis: finite eps joined by a line, eps = inf drawn as a
    separate point (no line across the axis break).  Returns the finite-eps container."""
    fin = [(pos[x], y, e) for x, y, e in zip(xs, ys, es) if math.isfinite(x)]
    inf = [(pos[x], y, e) for x, y, e in zip(xs, ys, es) if not math.isfinite(x)]
    cont = None
    if fin:
        cont = ax.errorbar(*zip(*[(x, y) for x, y, _ in fin]), yerr=[e for *_, e in fin],
                           label=label, **kw)
    if inf:
        kw = {**kw, "ls": "none"}
        ax.errorbar([x for x, *_ in inf], [y for _, y, _ in inf], yerr=[e for *_, e in inf],
                    label=None if fin else label, **kw)
    return cont


def _dodge(i: int, k: int, step: float = 0.035) -> float:
    """Multiplicative x offset of the i-th of k curves on the log eps axis, so that
    methods with equal values do not hide each other."""
    return (1 + step) ** (i - (k - 1) / 2)


def _order(methods) -> list[str]:
    from props.tables import method_order

    return method_order(methods)


# ----------------------------------------------------------------------------- figures


def winrate_vs_eps(df: pd.DataFrame, out: Path) -> None:
    title = "Win-rate against the SFT reference vs ε (mean ± SE over seeds)"
    d = df.dropna(subset=["win_rate"])
    if d.empty:
        return _message(out, title, "No judged runs yet.")
    plt = _plt()
    keys = sorted(d.groupby(["model", "dataset"]).groups)
    fig, axes = _panels(keys, plt)
    colors = method_colors(d["method"].unique())
    for ax, (model, dataset) in zip(axes, keys):
        g = d[(d["model"] == model) & (d["dataset"] == dataset)]
        pos = _setup_eps_axis(ax, g["eps"].unique())
        order = _order(g["method"].unique())
        for i, meth in enumerate(order):
            xs, ys, es = _by_eps(g[g["method"] == meth], "win_rate", "win_rate_se")
            if not xs:
                continue
            if all(math.isinf(x) for x in xs):  # non-private: a level to beat, drawn across
                ax.axhline(ys[0], color=colors[meth], ls="--", lw=1.5,
                           label=f"{meth} (no privacy)")
                ax.axhspan(ys[0] - es[0], ys[0] + es[0], color=colors[meth], alpha=0.12)
                continue
            dodged = {x: pos[x] * _dodge(i, len(order)) for x in xs}
            _errorbar_eps(ax, dodged, xs, ys, es, meth, marker="o", capsize=3,
                          color=colors[meth])
        ax.axhline(50, color="0.3", ls=":", lw=1, label="SFT reference (50%)")
        ax.set_ylabel("win-rate against SFT (%), ties count half")
        ax.set_title(f"{model} / {dataset}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def headtohead_wtl(h2h: pd.DataFrame, out: Path, note: str = "") -> None:
    title = "Head to head: share of prompts won / tied / lost (summed over seeds)"
    if h2h.empty:
        return _message(out, title, note or "No head-to-heads: they need `props` and `rr` "
                        "and/or `dpsgd` in the config's methods.")
    from props.headtohead import summarise

    plt = _plt()
    s = summarise(h2h)
    keys = sorted(s.groupby(["model", "dataset"]).groups)
    n_bars = max(len(s[(s["model"] == m) & (s["dataset"] == d)]) for m, d in keys)
    fig, axes = _panels(keys, plt, width=7, height=0.45 * n_bars + 1.8)
    for ax, (model, dataset) in zip(axes, keys):
        g = s[(s["model"] == model) & (s["dataset"] == dataset)].sort_values(["a", "b", "eps"])
        labels = [f"{r.a} vs {r.b}, ε={'∞' if math.isinf(r.eps) else fmt_eps(r.eps)}"
                  for r in g.itertuples()]
        y = np.arange(len(g))[::-1]
        n = g["n"].to_numpy(dtype=float)
        w, t, lo = (g[c].to_numpy(dtype=float) / n for c in ("wins", "ties", "losses"))
        ax.barh(y, w, color="tab:green", label="first-named method wins")
        ax.barh(y, t, left=w, color="0.75", label="tie")
        ax.barh(y, lo, left=w + t, color="tab:red", label="second-named method wins")
        for yi, r in zip(y, g.itertuples()):
            se = "" if math.isnan(r.win_rate_se) else f" ± {r.win_rate_se:.1f}"
            ax.text(1.02, yi, f"{r.win_rate:.1f}{se}%", va="center", fontsize=8)
        ax.axvline(0.5, color="0.2", ls=":", lw=1)
        ax.set_yticks(y)
        ax.set_yticklabels(labels)
        ax.set_xlim(0, 1.22)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xlabel("share of prompts (right: first-named method's win-rate ± SE, "
                      "ties count half)")
        ax.set_title(f"{model} / {dataset}")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    fig.suptitle(title)
    _save(fig, out)


def label_accuracy_vs_eps(df: pd.DataFrame, out: Path) -> None:
    title = "Accuracy of the labels trained on vs ε (mean ± SE over seeds)"
    d = df.dropna(subset=["label_accuracy"])
    if d.empty:
        return _message(out, title, "No run records the accuracy of its labels (the true "
                        "labels are unknown for this data).")
    plt = _plt()
    keys = sorted(d.groupby(["model", "dataset"]).groups)
    fig, axes = _panels(keys, plt)
    colors = method_colors(d["method"].unique())
    stages = stage_columns(d)
    styles = ["--", "-.", ":", (0, (5, 1, 1, 1))]
    for ax, (model, dataset) in zip(axes, keys):
        g = d[(d["model"] == model) & (d["dataset"] == dataset)]
        eps_all = g["eps"].unique()
        pos = _setup_eps_axis(ax, eps_all)
        finite = sorted(e for e in eps_all if math.isfinite(e))
        if finite:
            grid = np.geomspace(finite[0] / 1.5, finite[-1] * 1.5, 60)
            ax.plot(grid, 100 / (1 + np.exp(-grid)), color="0.2", lw=1, ls=":",
                    label="RR expected, 1 − g(ε)")
        if any(math.isinf(e) for e in eps_all):
            ax.plot([pos[math.inf]], [100], marker="_", ms=14, color="0.2")
        order = _order(g["method"].unique())
        for j, meth in enumerate(order):
            sub = g[g["method"] == meth]
            xs, ys, es = _by_eps(sub, "label_accuracy")
            dodged = {x: pos[x] * _dodge(j, len(order)) for x in xs}
            _errorbar_eps(ax, dodged, xs, [100 * v for v in ys], [100 * v for v in es],
                          f"{meth}: all labels", marker="o", capsize=3, color=colors[meth])
            used = [c for c in stages if sub[c].notna().any()]
            if len(used) < 2:
                continue
            for i, c in enumerate(used):
                xs, ys, es = _by_eps(sub, c)
                shifted = {x: dodged[x] * (1 + 0.04 * (i + 1)) for x in xs}  # no overplotting
                _errorbar_eps(ax, shifted, xs, [100 * v for v in ys], [100 * v for v in es],
                              f"{meth}: stage {c.removeprefix('label_accuracy_stage')}",
                              marker="s", ms=4, capsize=2, ls=styles[i % len(styles)],
                              color=colors[meth], alpha=0.8)
        ax.axhline(50, color="0.6", lw=0.8)
        ax.set_ylabel("labels agreeing with the true label (%)")
        ax.set_title(f"{model} / {dataset}")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, out)


def reward_vs_kl(df: pd.DataFrame, out: Path) -> None:
    title = "Mean gold reward vs KL(policy ‖ SFT): runs (dots) and mean per ε (labelled)"
    d = df.dropna(subset=["mean_reward", "kl_to_sft"])
    if d.empty:
        return _message(out, title, "The judge of this configuration has no gold reward: "
                        "the reward-KL frontier needs one (the embedded task's judge).")
    plt = _plt()
    keys = sorted(d.groupby(["model", "dataset"]).groups)
    fig, axes = _panels(keys, plt, width=6)
    colors = method_colors(d["method"].unique())
    for ax, (model, dataset) in zip(axes, keys):
        g = d[(d["model"] == model) & (d["dataset"] == dataset)]
        for meth in _order(g["method"].unique()):
            sub = g[g["method"] == meth]
            ax.scatter(sub["kl_to_sft"], sub["mean_reward"], s=12, alpha=0.35,
                       color=colors[meth])
            pts = []
            for e, ge in sub.groupby("eps", sort=True):
                kx, kse, _ = seed_stat(ge, "kl_to_sft", "kl_to_sft_se")
                ry, rse, _ = seed_stat(ge, "mean_reward", "mean_reward_se")
                pts.append((kx, ry, kse, rse, e))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.errorbar(xs, ys, xerr=[0 if math.isnan(p[2]) else p[2] for p in pts],
                        yerr=[0 if math.isnan(p[3]) else p[3] for p in pts], marker="o",
                        ms=6, capsize=2, lw=1, color=colors[meth], label=meth)
            for x, y, *_, e in pts:
                ax.annotate("∞" if math.isinf(e) else fmt_eps(e), (x, y), fontsize=7,
                            xytext=(4, 3), textcoords="offset points", color=colors[meth])
        ref = g.groupby("seed")["mean_reward_reference"].first()
        ref_mean, _, k = seed_stat(ref.to_frame(), "mean_reward_reference")
        if k:
            ax.scatter([0], [ref_mean], marker="*", s=160, color="black", zorder=5,
                       label="SFT reference (KL 0)")
        ax.set_xlabel("KL(policy ‖ SFT) on the evaluation prompts (nats per answer)")
        ax.set_ylabel("mean gold reward of the answers")
        ax.set_title(f"{model} / {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def render_figures(summary: pd.DataFrame, h2h: pd.DataFrame, outdir: Path,
                   h2h_note: str = "") -> list[Path]:
    """Write every figure of FIGURES into `outdir`; returns their paths."""
    outdir = Path(outdir)
    paths = [outdir / f"{name}.png" for name in FIGURES]
    winrate_vs_eps(summary, paths[0])
    headtohead_wtl(h2h, paths[1], h2h_note)
    label_accuracy_vs_eps(summary, paths[2])
    reward_vs_kl(summary, paths[3])
    print(f"[props] figures: {len(paths)} -> {outdir}", flush=True)
    return paths


def step_figures(summary: str | Path, headtohead: list[str | Path], outdir: Path,
                 methods: list[str] | None = None) -> list[Path]:
    """`props figures`: read summary.csv and the head-to-head results, write the figures."""
    from props.aggregate import read_summary
    from props.headtohead import load_results, pairs_for

    df = read_summary(summary)
    h2h = load_results(list(headtohead or []))
    note = ""
    if h2h.empty and methods is not None and not pairs_for(methods):
        note = (f"No head-to-heads: the config's methods ({', '.join(methods)}) do not "
                "include PROPS together with RR or DP-SGD.")
    return render_figures(df, h2h, outdir, note)
