"""Tables 1-3, built once as a small structure and rendered to Markdown, LaTeX and HTML.

Table 1 mirrors the paper's win-rate tables (every method x eps, per model x dataset),
with KL to the SFT reference and answer length beside the win-rates so that a method
that wins by drifting is visible.  Table 2 is the headline comparison (PROPS against
RR and DP-SGD, head to head and as a ratio of win-rates).  Table 3 is the privacy
accounting and label quality the paper does not report.  Every estimated number carries
its uncertainty: mean ± standard error over seeds, or over prompts (pairs) with one seed.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

import pandas as pd

from props.aggregate import fmt_eps, fmt_pm, seed_stat, stage_columns
from props.io import InputError
from props.registry import LABELER_SCORES

ONE_SEED_MARK = " †"
DASH = "–"


@dataclass
class Block:
    """One rectangular table with a title and an optional note under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    """A heading (usually model / dataset) followed by blocks and paragraphs."""

    heading: str
    items: list[Block | str] = field(default_factory=list)


@dataclass
class Table:
    name: str
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers


def method_order(methods) -> list[str]:
    """Methods in registry order (dpo, rr, ..., dpsgd); unknown names after, sorted."""
    from props.registry import METHODS

    methods = set(methods)
    known = [m for m in METHODS if m in methods]
    return known + sorted(methods - set(known))


def _cell(sub: pd.DataFrame, col: str, se_col: str | None, digits: int, multi: bool,
          scale: float = 1.0) -> str:
    mean, se, k = seed_stat(sub, col, se_col)
    if k == 0:
        return DASH
    text = fmt_pm(mean * scale, se * scale, digits)
    return text + ONE_SEED_MARK if multi and k == 1 else text


def _seed_note(g: pd.DataFrame, multi: bool) -> str:
    seeds = sorted(int(s) for s in g["seed"].unique())
    n = g["n"].dropna()
    prompts = f"; {int(n.max())} evaluation prompts per run" if len(n) else ""
    if multi:
        how = (f"± is the standard error over seeds; {ONE_SEED_MARK.strip()} marks a cell with "
               "one seed, whose ± is over prompts")
    else:
        how = "one seed: ± is the standard error over prompts"
    return f"Seeds: {', '.join(map(str, seeds))} ({how}){prompts}."


def fmt_num(v) -> str:
    """A set (not estimated) parameter: integers plainly, others with 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.4g}"


def _param(sub: pd.DataFrame, col: str) -> str:
    """A privacy parameter over seeds: the value when all seeds agree, else mean ± SE."""
    v = sub[col].dropna() if col in sub else pd.Series(dtype=object)
    if v.empty:
        return DASH
    if v.map(lambda x: isinstance(x, str)).any():
        return " / ".join(dict.fromkeys(str(x) for x in v))
    vals = v.astype(float).unique()
    if len(vals) == 1:
        return fmt_num(float(vals[0]))
    mean, se, _ = seed_stat(sub, col)
    return f"{mean:.4g} ± {se:.2g}"


def _groups(df: pd.DataFrame):
    return df.groupby(["model", "dataset"], sort=True) if len(df) else []


# ----------------------------------------------------------------------------- table 1

TABLE1_METRICS = [
    ("Win-rate against the SFT reference (%)", "win_rate", "win_rate_se", 1),
    ("KL(policy ‖ SFT), nats per answer", "kl_to_sft", "kl_to_sft_se", 2),
    ("Mean answer length (tokens)", "mean_length", "mean_length_se", 1),
    ("Mean reward from the judge (the gold reward on the embedded task)", "mean_reward", "mean_reward_se", 3),
]


def _reference_note(g: pd.DataFrame) -> str:
    """SFT reference answers' length and reward: one value per seed (shared by methods)."""
    parts = []
    cols = ["mean_length_reference", "mean_length_reference_se", "mean_reward_reference",
            "mean_reward_reference_se"]
    per_seed = g.groupby("seed")[cols].first()
    for col, what, digits in (("mean_length_reference", "mean length", 1),
                              ("mean_reward_reference", "mean judge reward", 3)):
        mean, se, k = seed_stat(per_seed, col, f"{col}_se")
        if k:
            parts.append(f"{what} {fmt_pm(mean, se, digits)}")
    if not parts:
        return ""
    return "SFT reference answers (win-rate 50 and KL 0 by definition): " + ", ".join(parts) + "."


def table1(df: pd.DataFrame) -> Table:
    """Win-rate (%) against the SFT reference, method x eps, one section per model x
    dataset, followed by KL to SFT, answer length and (gold judge) mean reward."""
    if df.empty:
        raise InputError("table1: no runs to tabulate")
    t = Table("table1", "Table 1: win-rate against the SFT reference", [
        "Win-rate in percent (ties count half, as `alpaca_eval.metrics.get_winrate` counts) "
        "of each method's answers against the SFT model's answers to held-out prompts, "
        "for every method and privacy level eps. `dpo` trains on the true labels (no "
        "privacy) and appears under eps = inf. Label-DP methods protect each preference "
        "label, DP-SGD protects whole pairs; the SFT demonstrations are public.",
        "Next to the win-rates: the KL divergence of the policy from the SFT reference, "
        "estimated on the evaluation prompts as the mean of log π(y|x) − log π_SFT(y|x) "
        "over the policy's own answers, the mean answer length and, when the judge gives "
        "each answer a reward (the gold reward of the embedded task, the local judge's or "
        "a reward model's score), the mean reward. A method that wins by drifting far from the "
        "reference (large KL) or by changing answer length shows it there.",
    ])
    for (model, dataset), g in _groups(df):
        sec = Section(f"{model} / {dataset}")
        eps_list = sorted(g["eps"].unique())
        methods = method_order(g["method"].unique())
        multi = g["seed"].nunique() > 1
        header = ["method"] + [f"eps={fmt_eps(e)}" for e in eps_list]
        for title, col, se_col, digits in TABLE1_METRICS:
            if g[col].isna().all():
                continue
            rows = []
            for meth in methods:
                cells = [meth]
                for e in eps_list:
                    sub = g[(g["method"] == meth) & (g["eps"] == e)]
                    cells.append(_cell(sub, col, se_col, digits, multi) if len(sub) else "")
                rows.append(cells)
            sec.items.append(Block(title, header, rows))
        sec.items.append(_seed_note(g, multi))
        ref = _reference_note(g)
        if ref:
            sec.items.append(ref)
        t.sections.append(sec)
    return t


# ----------------------------------------------------------------------------- table 2

PAPER_HEADLINE = {"rr": "2.5×", "dpsgd": "3×"}


def _fmt_ratio(r: float, lo: float, hi: float) -> str:
    if math.isnan(r):
        return DASH
    if math.isnan(lo):
        return f"{r:.2f}×"
    return f"{r:.2f}× [{lo:.2f}, {hi:.2f}]"


def _pair_block(model: str, dataset: str, a: str, b: str, runs: pd.DataFrame,
                summ: pd.DataFrame, multi: bool) -> tuple[Block, str]:
    from props.headtohead import ratio_ci

    ra = runs[(runs["model"] == model) & (runs["dataset"] == dataset) & (runs["method"] == a)]
    rb = runs[(runs["model"] == model) & (runs["dataset"] == dataset) & (runs["method"] == b)]
    hs = summ[(summ["model"] == model) & (summ["dataset"] == dataset) & (summ["a"] == a)
              & (summ["b"] == b)]
    eps_list = sorted(set(hs["eps"]) | (set(ra["eps"]) & set(rb["eps"])))
    header = ["eps", f"{a} wins / ties / {b} wins", f"{a} vs {b} win-rate (%)",
              f"{a} vs SFT (%)", f"{b} vs SFT (%)", f"ratio {a}/{b} [95% CI]", "seeds"]
    rows, ratios, hows = [], [], set()
    for e in eps_list:
        h = hs[hs["eps"] == e]
        if len(h):
            hr = h.iloc[0]
            wtl = f"{hr['wins']} / {hr['ties']} / {hr['losses']}"
            h2h = fmt_pm(hr["win_rate"], hr["win_rate_se"], 1)
            if multi and hr["n_seeds"] == 1:
                h2h += ONE_SEED_MARK
            n_h = int(hr["n_seeds"])
        else:
            wtl, h2h, n_h = DASH, DASH, 0
        sa, sb = ra[ra["eps"] == e], rb[rb["eps"] == e]
        paired = sa[["seed", "win_rate", "win_rate_se"]].merge(
            sb[["seed", "win_rate", "win_rate_se"]], on="seed", suffixes=("_a", "_b")).dropna(
            subset=["win_rate_a", "win_rate_b"])
        if len(paired):
            r, lo, hi, how = ratio_ci(paired["win_rate_a"].to_numpy(),
                                      paired["win_rate_b"].to_numpy(),
                                      float(paired["win_rate_se_a"].iloc[0]),
                                      float(paired["win_rate_se_b"].iloc[0]))
            hows.add(how)
            if not math.isnan(r):
                ratios.append((r, lo, hi, e))
            ratio = _fmt_ratio(r, lo, hi)
        else:
            ratio = DASH
        seeds = max(n_h, len(paired))
        rows.append([fmt_eps(e), wtl, h2h, _cell(sa, "win_rate", "win_rate_se", 1, multi),
                     _cell(sb, "win_rate", "win_rate_se", 1, multi), ratio, str(seeds)])
    note = ("Ratio: mean win-rate (vs SFT) of " + a + " over that of " + b + ", 95% CI by the "
            + ("; ".join(sorted(hows)) if hows else "delta method") + ".")
    if ratios:
        r, lo, hi, e = max(ratios)
        low = min(ratios, key=lambda x: x[3])
        headline = (f"{a} vs {b}: largest ratio of win-rates {_fmt_ratio(r, lo, hi)} at "
                    f"eps = {fmt_eps(e)}; at the smallest eps ({fmt_eps(low[3])}) "
                    f"{_fmt_ratio(*low[:3])}. The paper reports up to "
                    f"{PAPER_HEADLINE.get(b, '?')} at eps = 0.1.")
    else:
        headline = f"{a} vs {b}: no paired runs yet."
    return Block(f"{a} vs {b}", header, rows, note), headline


def table2(runs: pd.DataFrame, h2h: pd.DataFrame, methods: list[str] | None = None) -> Table:
    """Headline comparison: PROPS head to head against RR and DP-SGD at each eps (wins /
    ties / losses, A's win-rate over B), and the ratio of win-rates against the SFT
    reference with a delta-method confidence interval over seeds."""
    from props.headtohead import HEADLINE_PAIRS, pairs_for, summarise

    if methods is None:
        methods = sorted(set(runs["method"]) | set(h2h["a"]) | set(h2h["b"]))
    methods = method_order(methods)
    t = Table("table2", "Table 2: PROPS against randomized response and DP-SGD", [
        "Head to head: the judge sees the answers of the two runs to the same prompt (same "
        "model, dataset, eps and seed); which one it sees first is randomised per prompt "
        "(this matters for an LLM judge, not for the gold reward). Wins / ties / losses are "
        "summed over seeds; the head-to-head win-rate (ties count half) is mean ± SE over "
        "seeds (over prompts with one seed).",
        "Ratio: PROPS's win-rate against the SFT reference divided by the baseline's, as "
        "the paper's \"up to 2.5× / 3×\"; 95% confidence interval by the delta method on "
        "the ratio of means, with the variances and covariance of the two means estimated "
        "over paired seeds (common random numbers: same released labels and prompts) and "
        "Student's t quantile; with one seed, from the per-run standard errors over "
        "prompts and the normal quantile.",
        "Units differ: RR and PROPS protect each label, DP-SGD protects whole pairs (a "
        "stronger guarantee at the same eps); the comparison at equal eps is the paper's.",
    ])
    pairs = pairs_for(methods)
    listed = ", ".join(f"`{m}`" for m in methods) or "none"
    if "props" not in methods:
        t.intro.append(f"PROPS (`props`) is not among this configuration's methods "
                       f"({listed}): there is no head-to-head to report. Add `props` with "
                       "`rr` and/or `dpsgd` to `methods` in the config to fill this table.")
        return t
    for a, b in HEADLINE_PAIRS:
        if a == "props" and b not in methods:
            t.intro.append(f"`{b}` is not among this configuration's methods ({listed}): "
                           f"no {a} vs {b} comparison.")
    if not pairs:
        return t
    summ = summarise(h2h)
    wanted = {m for p in pairs for m in p}
    rel = runs[runs["method"].isin(wanted)]
    keys = set(map(tuple, rel[["model", "dataset"]].drop_duplicates().to_numpy()))
    keys |= set(map(tuple, h2h[["model", "dataset"]].drop_duplicates().to_numpy()))
    if not keys:
        t.intro.append("No runs or head-to-heads of these methods were given.")
        return t
    for model, dataset in sorted(keys):
        g = rel[(rel["model"] == model) & (rel["dataset"] == dataset)]
        hg = h2h[(h2h["model"] == model) & (h2h["dataset"] == dataset)]
        multi = max(g["seed"].nunique() if len(g) else 0,
                    hg["seed"].nunique() if len(hg) else 0) > 1
        sec = Section(f"{model} / {dataset}")
        for a, b in pairs:
            block, headline = _pair_block(model, dataset, a, b, rel, summ, multi)
            sec.items += [block, headline]
        if multi:
            sec.items.append(f"{ONE_SEED_MARK.strip()} one seed only: ± over prompts.")
        t.sections.append(sec)
    return t


# ----------------------------------------------------------------------------- table 3

GUARANTEE_COLUMNS = [
    ("mechanism", "privacy_mechanism"), ("unit", "privacy_unit"), ("delta", "privacy_delta"),
    ("accountant", "privacy_accountant"),
    ("flip prob. g", "flip_probability"), ("noise mult. σ", "noise_multiplier"),
    ("sampling rate q", "sampling_rate"), ("steps", "steps"), ("clip norm C", "max_grad_norm"),
    ("eps spent", "eps_spent"),
]


def _binomial_cell(sub: pd.DataFrame, col: str, n: float | None, multi: bool) -> str:
    """Accuracy (%) ± SE: over seeds, or with one seed the binomial SE over pairs."""
    mean, se, k = seed_stat(sub, col)
    if k == 0:
        return DASH
    if k == 1:
        if n and n > 0:
            se = math.sqrt(max(mean * (1 - mean), 0.0) / n)
        text = fmt_pm(100 * mean, 100 * se, 1)
        return text + ONE_SEED_MARK if multi else text
    return fmt_pm(100 * mean, 100 * se, 1)


def _pairs_per_stage(sub: pd.DataFrame, stages: list[str]) -> float | None:
    """Pairs behind one stage's accuracy: the pool split equally over the stages the
    runs in `sub` report (the whole pool for a single-stage method)."""
    n_pairs = sub["n_pairs"].dropna()
    if not len(n_pairs):
        return None
    n_stages = int(sub[stages].notna().any(axis=0).sum()) if stages else 1
    return float(n_pairs.iloc[0]) / max(n_stages, 1)


def _labeler_block(g: pd.DataFrame, multi: bool) -> Block | None:
    """Stage k >= 2 of the multi-stage methods: how accurate the previous stage's model
    was as a labeler (with the score in use, and with each score it could have used,
    measured on the same pairs), and what the method estimated its error to be from the
    released labels alone."""
    rows = []
    stages = sorted({int(c.removeprefix("labeler_accuracy_stage")) for c in g.columns
                     if c.startswith("labeler_accuracy_stage") and
                     c.removeprefix("labeler_accuracy_stage").isdigit()})
    for meth in method_order(g["method"].unique()):
        gm = g[g["method"] == meth]
        for e in sorted(gm["eps"].unique()):
            sub = gm[gm["eps"] == e]
            for k in stages:
                col = f"labeler_accuracy_stage{k}"
                if col not in sub or sub[col].notna().sum() == 0:
                    continue
                used = sub["labeler_score"].dropna().unique() if "labeler_score" in sub else []
                est = f"labeler_error_estimate_stage{k}"
                est_cell = DASH
                if est in sub and sub[est].notna().any():
                    mean, se, _ = seed_stat(sub, est)
                    est_cell = fmt_pm(100 * (1 - mean), 100 * se, 1)
                n = _pairs_per_stage(sub, stage_columns(sub))
                cells = [meth, fmt_eps(e), str(k), ", ".join(used) or DASH,
                         _binomial_cell(sub, col, n, multi), est_cell]
                for name in LABELER_SCORES:
                    c = f"{col}_{name}"
                    cells.append(_binomial_cell(sub, c, n, multi) if c in sub else DASH)
                cells.append(DASH if math.isinf(e) else f"{100 / (1 + math.exp(-e)):.1f}")
                rows.append(cells)
    if not rows:
        return None
    return Block("Stage labeler accuracy (%): the previous stage's model labelling stage k",
                 ["method", "eps", "stage", "score in use", "labeler (in use)",
                  "1 − estimated error"] + [f"with {n}" for n in LABELER_SCORES]
                 + ["RR expected 1 − g"], rows)


def table3(df: pd.DataFrame) -> Table:
    """Privacy guarantee of every method x eps, and the accuracy of the labels each method
    actually trained on (overall and per PROPS stage)."""
    if df.empty:
        raise InputError("table3: no runs to tabulate")
    t = Table("table3", "Table 3: privacy accounting and label quality", [
        "The guarantee of each run as its ledger records it: mechanism, protected unit "
        "(`label`: one preference label; `pair`: a whole preference pair), eps, delta and "
        "the accountant; for randomized response the flip probability g = 1/(1+e^eps); "
        "for DP-SGD the noise multiplier, Poisson sampling rate, number of steps, "
        "per-pair clipping norm and the eps the accountant reports as spent. These are "
        "set, not measured: identical across seeds unless shown as mean ± SE.",
        "The SFT demonstrations are public: a separate split, disjoint from the private "
        "preference pool, not protected and charged no privacy budget. Prompts and "
        "responses of the pool are public too; only the preference labels (or, for "
        "DP-SGD, whole pairs) are private. `dpo` trains on the true labels: no guarantee.",
        "Label accuracy: the share of labels actually trained on that agree with the true "
        "(gold Bradley-Terry) label, overall and per PROPS stage, with the accuracy of the "
        "released RR labels and its expectation 1 − g. ± is the SE over seeds; with one "
        "seed, the binomial SE over the pairs (per stage: the pool split equally across "
        "stages).",
        "Stage labeler accuracy: at PROPS stage k >= 2 the model of stage k-1 votes on "
        "every pair of its partition; the table gives the accuracy of those votes against "
        "the true labels (measured for reporting only; no method sees the true labels), "
        "the accuracy the method itself estimated from its disagreement with the released "
        "labels, and the accuracy the same model would have had with each labeler score. "
        "A labeler is worth using only where it beats the released labels, 1 − g.",
    ])
    stages = stage_columns(df)
    if len(stages) < 2:  # one stage: the same numbers as "all labels"
        stages = []
    for (model, dataset), g in _groups(df):
        sec = Section(f"{model} / {dataset}")
        multi = g["seed"].nunique() > 1
        keys = [(m, e) for m in method_order(g["method"].unique())
                for e in sorted(g[g["method"] == m]["eps"].unique())]
        grows, lrows = [], []
        for meth, e in keys:
            sub = g[(g["method"] == meth) & (g["eps"] == e)]
            grows.append([meth, fmt_eps(e)] + [_param(sub, c) for _, c in GUARANTEE_COLUMNS])
            n_pairs = sub["n_pairs"].dropna()
            n = float(n_pairs.iloc[0]) if len(n_pairs) else None
            n_stages = max(int(sub[stages].notna().any(axis=0).sum()), 1) if stages else 1
            cells = [meth, fmt_eps(e), _binomial_cell(sub, "label_accuracy", n, multi)]
            for c in stages:  # per stage only for multi-stage methods (else = all labels)
                cells.append(_binomial_cell(sub, c, n / n_stages if n else None, multi)
                             if n_stages > 1 else "")
            cells.append(_binomial_cell(sub, "released_accuracy", n, multi))
            cells.append(DASH if math.isinf(e) or sub["privacy_unit"].ne("label").all()
                         else f"{100 / (1 + math.exp(-e)):.1f}")
            lrows.append(cells)
        sec.items.append(Block("Guarantee", ["method", "eps"]
                               + [h for h, _ in GUARANTEE_COLUMNS], grows))
        stage_heads = [f"stage {c.removeprefix('label_accuracy_stage')}" for c in stages]
        sec.items.append(Block("Accuracy of the labels trained on (%)",
                               ["method", "eps", "all labels"] + stage_heads
                               + ["released (RR)", "RR expected 1 − g"], lrows))
        lab = _labeler_block(g, multi)
        if lab is not None:
            sec.items.append(lab)
        sec.items.append(f"Seeds: {', '.join(str(int(s)) for s in sorted(g['seed'].unique()))}."
                         + (f" {ONE_SEED_MARK.strip()} one seed: binomial SE." if multi else
                            " One seed: ± is the binomial SE over pairs."))
        t.sections.append(sec)
    return t


# ----------------------------------------------------------------------------- renderers


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(t: Table) -> str:
    out = [f"# {t.title}", ""]
    for p in t.intro:
        out += [p, ""]
    for sec in t.sections:
        out += [f"## {sec.heading}", ""]
        for item in sec.items:
            if isinstance(item, str):
                out += [item, ""]
                continue
            out += [f"### {item.title}", "", "| " + " | ".join(map(_md_escape, item.header)) + " |",
                    "|" + "|".join("---" for _ in item.header) + "|"]
            out += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in item.rows]
            out.append("")
            if item.note:
                out += [item.note, ""]
    return "\n".join(out).rstrip() + "\n"


_TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
              "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
              "^": r"\textasciicircum{}", "±": r"$\pm$", "‖": r"$\|$", "×": r"$\times$",
              "†": r"$^\dagger$", "ε": r"$\varepsilon$", "∞": r"$\infty$", "–": "--",
              "−": "$-$", "π": r"$\pi$", "σ": r"$\sigma$", "≥": r"$\geq$", "\"": "''"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_CHARS.get(ch, ch) for ch in str(s))


def _tex_text(s: str) -> str:
    """Escape a paragraph, turning `code` spans into \\texttt."""
    parts = re.split(r"`([^`]+)`", s)
    return "".join(tex_escape(p) if i % 2 == 0 else r"\texttt{" + tex_escape(p) + "}"
                   for i, p in enumerate(parts))


def _tex_cell(s: str) -> str:
    m = re.fullmatch(r"eps=(.+)", s)
    if m:
        v = r"\infty" if m.group(1) == "inf" else m.group(1)
        return rf"$\varepsilon={v}$"
    if s == "inf":
        return r"$\infty$"
    return _tex_text(s)


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def to_latex(t: Table) -> str:
    """A LaTeX fragment (\\input it; needs booktabs and graphicx): one table float per
    block, captioned with its section and title."""
    out = [f"% {t.title}. Generated by `props table {t.name}` from the same numbers as the "
           "Markdown version.", r"% Needs \usepackage{booktabs} and \usepackage{graphicx}.",
           "", rf"\paragraph{{{_tex_text(t.title)}}}"]
    out += [_tex_text(p) + "\n" for p in t.intro]
    for sec in t.sections:
        pending: list[str] = []
        for item in sec.items:
            if isinstance(item, str):
                pending.append(_tex_text(item))
                continue
            cols = "l" * 1 + "r" * (len(item.header) - 1)
            body = [r"\begin{tabular}{" + cols + "}", r"\toprule",
                    " & ".join(_tex_cell(h) for h in item.header) + r" \\", r"\midrule"]
            body += [" & ".join(_tex_cell(c) for c in r) + r" \\" for r in item.rows]
            body += [r"\bottomrule", r"\end{tabular}"]
            if len(item.header) > 7:
                body = [r"\resizebox{\textwidth}{!}{%"] + body + ["}"]
            out += ["", r"\begin{table}[ht]", r"\centering", r"\small",
                    rf"\caption{{{_tex_text(sec.heading)}: {_tex_text(item.title)}}}",
                    rf"\label{{tab:{t.name}-{_slug(sec.heading)}-{_slug(item.title)}}}"]
            out += body
            notes = [_tex_text(item.note)] if item.note else []
            if notes:
                out += [r"\par\smallskip\footnotesize " + " ".join(notes)]
            out += [r"\end{table}"]
        if pending:
            out += ["", r"\noindent\footnotesize " + " ".join(pending) + r"\normalsize", ""]
    return "\n".join(out).rstrip() + "\n"


def _html_text(s: str) -> str:
    parts = re.split(r"`([^`]+)`", s)
    return "".join(html.escape(p) if i % 2 == 0 else f"<code>{html.escape(p)}</code>"
                   for i, p in enumerate(parts))


def to_html(t: Table) -> str:
    """A standalone HTML page (what the Snakemake report shows inline)."""
    out = ["<!doctype html>", "<html><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(t.title)}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto}"
           "table{border-collapse:collapse;margin:.5em 0}"
           "th,td{border:1px solid #bbb;padding:.2em .5em;text-align:right}"
           "th:first-child,td:first-child{text-align:left}th{background:#eee}"
           "p.note{font-size:90%;color:#333}</style></head><body>",
           f"<h1>{html.escape(t.title)}</h1>"]
    out += [f"<p>{_html_text(p)}</p>" for p in t.intro]
    for sec in t.sections:
        out.append(f"<h2>{html.escape(sec.heading)}</h2>")
        for item in sec.items:
            if isinstance(item, str):
                out.append(f"<p class=\"note\">{_html_text(item)}</p>")
                continue
            out.append(f"<h3>{html.escape(item.title)}</h3><table><tr>"
                       + "".join(f"<th>{html.escape(h)}</th>" for h in item.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in item.rows]
            out.append("</table>")
            if item.note:
                out.append(f"<p class=\"note\">{_html_text(item.note)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def block_frame(b: Block) -> pd.DataFrame:
    """A block as a DataFrame (tests and notebooks read tables this way)."""
    return pd.DataFrame(b.rows, columns=b.header)


__all__ = ["Block", "Section", "Table", "table1", "table2", "table3", "to_markdown",
           "to_latex", "to_html", "block_frame", "method_order"]
