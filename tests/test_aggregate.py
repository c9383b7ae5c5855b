"""summary.csv and tables 1-3 from synthetic metrics files (no training, no judging)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest

from props import aggregate as A
from props import tables as T
from props.io import InputError

EPS = [0.1, 1.0, math.inf]

# True win-rate (%) of each method at each eps; the synthetic runs scatter around it.
TRUE_WIN = {"rr": {0.1: 52.0, 1.0: 70.0, math.inf: 90.0},
            "props": {0.1: 65.0, 1.0: 75.0, math.inf: 90.0},
            "dpsgd": {0.1: 51.0, 1.0: 55.0, math.inf: 88.0}}


def run_metrics(method: str, eps: float, seed: int, win: float, *, model="m", dataset="d",
                stages: dict | None = None, evaluation: bool = True, n: int = 100) -> dict:
    """A metrics.json shaped like the pipeline's (training ledger + evaluation)."""
    if method == "dpsgd":
        privacy = {"mechanism": "dp-sgd", "unit": "pair", "eps_target": eps,
                   "eps_spent": eps * 0.98, "delta": 1e-5, "accountant": "prv",
                   "noise_multiplier": 1.1 / min(eps, 10), "sampling_rate": 0.016,
                   "steps": 125, "max_grad_norm": 1.0}
    elif method == "dpo":
        privacy = {"mechanism": "none", "unit": None, "eps": "inf", "delta": 0.0,
                   "accountant": None}
    else:
        g = 0.0 if math.isinf(eps) else 1 / (1 + math.exp(eps))
        privacy = {"mechanism": "randomized-response", "unit": "label",
                   "eps": "inf" if math.isinf(eps) else eps, "delta": 0.0,
                   "accountant": "closed form", "flip_probability": g}
    stages = stages or {"1": 0.8}
    m = {"model": model, "dataset": dataset, "method": method,
         "eps": "inf" if math.isinf(eps) else eps, "seed": seed, "delta": 0.0,
         "privacy": privacy,
         "labels": {"n_pairs": 200, "accuracy": sum(stages.values()) / len(stages),
                    "accuracy_per_stage": stages, "released_accuracy": 0.7},
         "wall_time_train_s": 1.0}
    if evaluation:
        wins = round(win * n / 100)
        m["evaluation"] = {"judge": "gold", "n": n, "win_rate": win, "win_rate_se": 4.0,
                           "wins": wins, "ties": 0, "losses": n - wins,
                           "kl_to_sft": 1.0 + win / 50, "kl_to_sft_se": 0.1,
                           "mean_length": 20.0 + seed, "mean_length_se": 0.5,
                           "mean_length_reference": 18.0, "mean_reward": win / 100,
                           "mean_reward_se": 0.01, "mean_reward_reference": 0.3}
    return m


def write_grid(root: Path, methods=("dpo", "rr", "props", "dpsgd"), seeds=(0, 1, 2),
               evaluation: bool = True, jitter: float = 2.0) -> list[Path]:
    """Metrics files of a small grid under root/runs/...; returns their paths."""
    rng = random.Random(0)
    paths = []
    for method in methods:
        for eps in (EPS if method != "dpo" else [math.inf]):
            for seed in seeds:
                win = (92.0 if method == "dpo" else TRUE_WIN[method][eps]) + rng.uniform(
                    -jitter, jitter)
                stages = ({"1": 0.6 + 0.01 * seed, "2": 0.7 + 0.01 * seed}
                          if method == "props" else None)
                m = run_metrics(method, eps, seed, win, stages=stages, evaluation=evaluation)
                if method == "props":  # the stage-2 labeler, as label_methods records it
                    m["labels"]["labeler_score"] = "loglik"
                    m["labels"]["per_stage"] = {"1": {"n_pairs": 100}, "2": {
                        "n_pairs": 100, "labeler_accuracy": 0.55 + 0.01 * seed,
                        "labeler_error_estimate": 0.40,
                        "labeler_accuracy_by_score": {
                            "loglik": 0.55 + 0.01 * seed, "loglik_norm": 0.5,
                            "implicit_reward": 0.8 + 0.01 * seed, "base_ratio": 0.6}}}
                tag = "inf" if math.isinf(eps) else f"{eps:g}"
                p = root / "runs" / "m" / "d" / method / f"eps{tag}" / f"seed{seed}" / (
                    "metrics.json" if evaluation else "train.json")
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(json.dumps(m))
                paths.append(p)
    return paths


def test_summary_is_tidy_one_row_per_run(tmp_path):
    paths = write_grid(tmp_path)
    out = tmp_path / "summary.csv"
    A.aggregate(paths, out)
    df = A.read_summary(out)
    assert len(df) == len(paths) == 1 * 3 + 3 * 3 * 3
    assert not df.duplicated(["model", "dataset", "method", "eps", "seed"]).any()
    for col in ("win_rate", "win_rate_se", "wins", "ties", "losses", "label_accuracy",
                "kl_to_sft", "mean_length", "privacy_mechanism", "privacy_unit",
                "noise_multiplier", "eps_spent", "label_accuracy_stage1",
                "label_accuracy_stage2"):
        assert col in df.columns, col
    assert math.isinf(df[df["method"] == "dpo"]["eps"].iloc[0])
    dp = df[(df["method"] == "dpsgd") & (df["eps"] == 1.0)]
    assert dp["privacy_eps"].iloc[0] == 1.0 and dp["privacy_unit"].iloc[0] == "pair"
    props = df[df["method"] == "props"]
    assert props["label_accuracy_stage2"].notna().all()
    assert df[df["method"] == "rr"]["label_accuracy_stage2"].isna().all()


def test_bad_metrics_file_is_one_line_error(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"model": "m", "dataset": "d"}))
    with pytest.raises(InputError, match="missing key 'method'"):
        A.runs_frame([p])
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        A.runs_frame([p])
    bad = tmp_path / "summary.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="column 'model' missing"):
        A.read_summary(bad)


def test_duplicate_runs_are_refused(tmp_path):
    paths = write_grid(tmp_path, methods=("rr",), seeds=(0,))
    with pytest.raises(InputError, match="two metrics files for the same run"):
        A.runs_frame([paths[0], paths[0]])


def test_seed_stat_uses_prompt_se_with_one_seed():
    one = pd.DataFrame({"win_rate": [60.0], "win_rate_se": [3.5]})
    assert A.seed_stat(one, "win_rate", "win_rate_se") == (60.0, 3.5, 1)
    many = pd.DataFrame({"win_rate": [50.0, 60.0, 70.0], "win_rate_se": [9.0, 9.0, 9.0]})
    mean, se, k = A.seed_stat(many, "win_rate", "win_rate_se")
    assert (mean, k) == (60.0, 3) and se == pytest.approx(10 / math.sqrt(3))


def _block(table: T.Table, title_start: str) -> pd.DataFrame:
    for sec in table.sections:
        for item in sec.items:
            if isinstance(item, T.Block) and item.title.startswith(title_start):
                return T.block_frame(item)
    raise AssertionError(f"no block {title_start!r}")


def test_table1_win_rate_with_se_and_drift_blocks(tmp_path):
    df = A.runs_frame(write_grid(tmp_path))
    t = T.table1(df)
    wr = _block(t, "Win-rate").set_index("method")
    expect = df[(df["method"] == "props") & (df["eps"] == 0.1)]["win_rate"]
    mean, se = expect.mean(), expect.std(ddof=1) / math.sqrt(3)
    assert wr.loc["props", "eps=0.1"] == f"{mean:.1f} ± {se:.1f}"
    assert wr.loc["dpo", "eps=0.1"] == "" and wr.loc["dpo", "eps=inf"] != ""
    assert list(wr.index) == ["dpo", "rr", "props", "dpsgd"]  # registry order
    kl = _block(t, "KL").set_index("method")
    assert "±" in kl.loc["rr", "eps=1"]
    assert "±" in _block(t, "Mean answer length").set_index("method").loc["rr", "eps=1"]
    md = T.to_markdown(t)
    assert "## m / d" in md and "### KL(policy ‖ SFT)" in md and "Mean reward from the judge" in md
    assert "SFT reference answers" in md and "mean length 18.0" in md


def test_table1_single_seed_uses_se_over_prompts(tmp_path):
    df = A.runs_frame(write_grid(tmp_path, seeds=(0,), jitter=0))
    wr = _block(T.table1(df), "Win-rate").set_index("method")
    assert wr.loc["rr", "eps=1"] == "70.0 ± 4.0"
    assert "over prompts" in T.to_markdown(T.table1(df))


def test_table1_marks_cells_with_fewer_seeds(tmp_path):
    paths = write_grid(tmp_path)
    drop = [p for p in paths if "/rr/eps1/" in p.as_posix() and "seed0" not in p.as_posix()]
    df = A.runs_frame([p for p in paths if p not in drop])
    wr = _block(T.table1(df), "Win-rate").set_index("method")
    assert wr.loc["rr", "eps=1"].endswith("†")
    assert not wr.loc["rr", "eps=0.1"].endswith("†")


def test_table2_ratio_and_head_to_head(tmp_path):
    from props.headtohead import ratio_ci

    df = A.runs_frame(write_grid(tmp_path))
    h2h = pd.DataFrame([
        {"model": "m", "dataset": "d", "a": "props", "b": b, "eps": e, "seed": s,
         "judge": "gold", "n": 100, "wins": 60, "ties": 10, "losses": 30, "win_rate": 65.0,
         "win_rate_se": 4.5, "mean_score_a": None, "mean_score_b": None}
        for b in ("rr", "dpsgd") for e in EPS for s in (0, 1, 2)])
    t = T.table2(df, h2h, ["dpo", "rr", "props", "dpsgd"])
    rr = _block(t, "props vs rr").set_index("eps")
    assert rr.loc["0.1", "props wins / ties / rr wins"] == "180 / 30 / 90"
    assert rr.loc["0.1", "props vs rr win-rate (%)"] == "65.0 ± 0.0"
    a = df[(df["method"] == "props") & (df["eps"] == 0.1)].sort_values("seed")["win_rate"]
    b = df[(df["method"] == "rr") & (df["eps"] == 0.1)].sort_values("seed")["win_rate"]
    r, lo, hi, how = ratio_ci(a.to_numpy(), b.to_numpy())
    assert rr.loc["0.1", "ratio props/rr [95% CI]"] == f"{r:.2f}× [{lo:.2f}, {hi:.2f}]"
    assert r == pytest.approx(a.mean() / b.mean()) and lo < r < hi
    assert "t(2)" in how
    assert rr.loc["0.1", "seeds"] == "3"
    md = T.to_markdown(t)
    assert "### props vs dpsgd" in md and "largest ratio" in md and "up to 3×" in md


def test_table2_says_so_when_props_is_not_configured(tmp_path):
    df = A.runs_frame(write_grid(tmp_path, methods=("dpo", "rr")))
    from props.headtohead import load_results

    t = T.table2(df, load_results([]), ["dpo", "rr"])
    md = T.to_markdown(t)
    assert "is not among this configuration's methods" in md
    assert not t.sections
    t = T.table2(df, load_results([]), ["dpo", "rr", "props"])
    assert "`dpsgd` is not among" in T.to_markdown(t)


def test_ratio_ci_delta_method():
    from props.headtohead import ratio_ci

    # identical seeds: no spread, the interval collapses on the ratio
    r, lo, hi, _ = ratio_ci([60, 60], [30, 30])
    assert (r, lo, hi) == (2.0, 2.0, 2.0)
    # one seed: prompt-level SEs, normal quantile; var = (se_a^2 + r^2 se_b^2) / m_b^2
    r, lo, hi, how = ratio_ci([60.0], [30.0], 3.0, 3.0)
    se = math.sqrt(9 + 4 * 9) / 30
    assert r == 2.0 and hi - r == pytest.approx(1.959964 * se, rel=1e-4)
    assert "one seed" in how
    # positively correlated seeds narrow the interval
    _, lo_c, hi_c, _ = ratio_ci([50, 60, 70], [25, 30, 35])
    _, lo_u, hi_u, _ = ratio_ci([50, 60, 70], [35, 30, 25])
    assert hi_c - lo_c < hi_u - lo_u
    assert math.isnan(ratio_ci([50], [0.0], 1, 1)[0])


def test_table3_guarantees_and_label_accuracy_per_stage(tmp_path):
    df = A.runs_frame(write_grid(tmp_path, evaluation=False))
    assert df["win_rate"].isna().all()  # train.json only: no evaluation needed
    t = T.table3(df)
    g = _block(t, "Guarantee")
    dp = g[(g["method"] == "dpsgd") & (g["eps"] == "1")].iloc[0]
    assert dp["mechanism"] == "dp-sgd" and dp["unit"] == "pair"
    assert dp["noise mult. σ"] == "1.1" and dp["steps"] == "125" and dp["eps spent"] == "0.98"
    assert dp["sampling rate q"] == "0.016" and dp["clip norm C"] == "1"
    rr = g[(g["method"] == "rr") & (g["eps"] == "1")].iloc[0]
    assert rr["unit"] == "label" and rr["flip prob. g"] == f"{1 / (1 + math.e):.4g}"
    acc = _block(t, "Accuracy").set_index(["method", "eps"])
    assert acc.loc[("props", "1"), "stage 2"] == "71.0 ± 0.6"
    assert acc.loc[("props", "1"), "stage 1"] == "61.0 ± 0.6"
    assert acc.loc[("rr", "1"), "RR expected 1 − g"] == f"{100 / (1 + math.exp(-1)):.1f}"
    md = T.to_markdown(t)
    assert "SFT demonstrations are public" in md


def test_table3_single_seed_binomial_se(tmp_path):
    df = A.runs_frame(write_grid(tmp_path, methods=("rr",), seeds=(0,), evaluation=False))
    acc = _block(T.table3(df), "Accuracy").set_index(["method", "eps"])
    se = 100 * math.sqrt(0.8 * 0.2 / 200)
    assert acc.loc[("rr", "1"), "all labels"] == f"80.0 ± {se:.1f}"


def test_latex_and_html_renderings(tmp_path):
    df = A.runs_frame(write_grid(tmp_path))
    t = T.table1(df)
    tex = T.to_latex(t)
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 4
    assert r"$\pm$" in tex and r"$\varepsilon=\infty$" in tex and "±" not in tex
    assert tex.count(r"\toprule") == 4 and r"\texttt{dpo}" in tex
    assert "_" not in tex.replace(r"\_", "")
    page = T.to_html(t)
    assert page.count("<table>") == 4 and "<code>dpo</code>" in page


def test_render_table_cli_writes_md_and_tex(tmp_path):
    from props.cli import main

    paths = write_grid(tmp_path)
    summary = tmp_path / "summary.csv"
    assert main(["aggregate", *map(str, paths), "--out", str(summary)]) == 0
    for which in ("table1", "table3"):
        out, tex = tmp_path / f"{which}.md", tmp_path / f"{which}.tex"
        assert main(["table", which, "--summary", str(summary), "--out", str(out),
                     "--tex", str(tex)]) == 0
        assert out.read_text().startswith(f"# Table {which[-1]}")
        assert r"\begin{tabular}" in tex.read_text()
    out = tmp_path / "table2.md"
    assert main(["table", "table2", "--metrics", *map(str, paths), "--headtohead",
                 "--methods", "dpo", "rr", "--out", str(out)]) == 0
    assert "not among this configuration's methods" in out.read_text()


def test_render_table_bad_summary_exits_2(tmp_path, capsys):
    from props.cli import main

    bad = tmp_path / "summary.csv"
    bad.write_text("x\n1\n")
    assert main(["table", "table1", "--summary", str(bad), "--out",
                 str(tmp_path / "t.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'model' missing" in err[0]


def test_workflow_inputs_follow_the_config():
    import yaml

    from props import config as C

    raw = yaml.safe_load((Path(__file__).parent.parent / "bench/config/smoke.yaml").read_text())
    raw["datasets"].pop("reviews-smoke-onpolicy")  # one dataset keeps the counts simple
    cfg = C.resolve({**raw, "methods": ["dpo", "rr"], "eps": [0.5, "inf"], "seeds": [0, 1]})
    assert A.headtohead_files(cfg) == [] and A.compared_metrics(cfg) == []
    assert len(A.grid_files(cfg, "train.json")) == 2 + 4
    cfg = C.resolve({**raw, "methods": ["dpo", "rr", "props"], "eps": [0.5, "inf"],
                     "seeds": [0, 1]})
    h2h = A.headtohead_files(cfg)
    assert h2h == [f"results/headtohead/llama-smoke/reviews-smoke/props_vs_rr/eps{e}/seed{s}.json"
                   for e in ("0.5", "inf") for s in (0, 1)]
    metrics = A.compared_metrics(cfg)
    assert len(metrics) == 8 and not any("/dpo/" in m for m in metrics)
    assert "results/runs/llama-smoke/reviews-smoke/props/epsinf/seed1/metrics.json" in metrics


def test_evaluation_reports_every_figure_with_its_se():
    from props.evaluate import evaluate_run
    from props.task.grammar import Writer

    w = Writer(random.Random(0))
    pol = [{"prompt_id": f"e{i}", "prompt": "a movie ends .", "output": w.review(q=1.0),
            "n_tokens": 10 + i, "logp_policy": -10.0 - i, "logp_ref": -12.0 - 2 * i}
           for i in range(20)]
    ref = [{**g, "output": "", "n_tokens": 1} for g in pol]
    rows, ev = evaluate_run("gold", pol, ref)
    assert len(rows) == 20 and ev["wins"] == 20 and ev["win_rate"] == 100.0
    for key in ("win_rate_se", "ties", "losses", "kl_to_sft", "kl_to_sft_se", "mean_length",
                "mean_length_se", "mean_reward", "mean_reward_se", "mean_reward_reference",
                "well_formed"):
        assert key in ev, key
    assert ev["kl_to_sft"] == pytest.approx(2.0 + 9.5)  # mean of (2 + i), i = 0..19
    assert ev["mean_length"] == pytest.approx(19.5)
    assert ev["mean_length_se"] == pytest.approx(pd.Series(range(10, 30)).sem())
    row = A.summary_row({"model": "m", "dataset": "d", "method": "rr", "eps": 1, "seed": 0,
                         "evaluation": ev})
    assert row["mean_reward_se"] == pytest.approx(ev["mean_reward_se"])
    assert row["mean_reward_reference"] == -1.0


def test_table3_stage_labeler_accuracy_per_score(tmp_path):
    """The stage-2 labeler block: accuracy with the score in use, the method's own
    estimate (1 - estimated error) and every other score, mean ± SE over seeds; stage 1
    (no labeler) and single-stage methods have no row."""
    df = A.runs_frame(write_grid(tmp_path, evaluation=False))
    assert df.loc[df["method"] == "props", "labeler_accuracy_stage2_implicit_reward"].notna().all()
    assert df.loc[df["method"] == "rr", "labeler_accuracy_stage2"].isna().all()
    lab = _block(T.table3(df), "Stage labeler").set_index(["method", "eps", "stage"])
    assert set(lab.index.get_level_values(0)) == {"props"}
    row = lab.loc[("props", "1", "2")]
    assert row["score in use"] == "loglik"
    assert row["labeler (in use)"] == "56.0 ± 0.6"
    assert row["with implicit_reward"] == "81.0 ± 0.6"
    assert row["with loglik_norm"] == "50.0 ± 0.0"
    assert row["1 − estimated error"] == "60.0 ± 0.0"
    assert row["RR expected 1 − g"] == f"{100 / (1 + math.exp(-1)):.1f}"
