"""Figures from synthetic summaries: written, non-trivial, and honest when data is absent."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from test_aggregate import write_grid  # the tests folder is on sys.path under pytest

from props import aggregate as A
from props import figures as F
from props.headtohead import load_results


def _h2h(pairs=(("props", "rr"), ("props", "dpsgd"))) -> pd.DataFrame:
    return pd.DataFrame([
        {"model": "m", "dataset": "d", "a": a, "b": b, "eps": e, "seed": s, "judge": "gold",
         "n": 100, "wins": 50 + s, "ties": 10, "losses": 40 - s, "win_rate": 55.0 + s,
         "win_rate_se": 4.0, "mean_score_a": None, "mean_score_b": None}
        for a, b in pairs for e in (0.1, 1.0, math.inf) for s in (0, 1, 2)])


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_eps_axis_places_inf_beyond_the_largest_eps():
    pos, ticks, labels, brk = F.eps_axis([0.1, 2.0, math.inf, 0.5])
    assert labels == ["0.1", "0.5", "2", "∞"]
    assert pos[math.inf] == 8.0 and pos[0.1] == 0.1
    assert 2.0 < brk < pos[math.inf]
    pos, _, labels, brk = F.eps_axis([math.inf])
    assert labels == ["∞"] and brk is None and pos[math.inf] == 1.0


def test_all_figures_are_written(tmp_path):
    summary = tmp_path / "summary.csv"
    A.aggregate(write_grid(tmp_path), summary)
    h2h = _h2h()
    paths = F.render_figures(A.read_summary(summary), h2h, tmp_path / "figures")
    assert [p.name for p in paths] == [f"{n}.png" for n in F.FIGURES]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = _png_size(p)
        assert w > 400 and h > 250, p
    assert not list((tmp_path / "figures").glob(".*"))  # no temporary leftovers


def test_placeholders_say_why(tmp_path, monkeypatch):
    df = A.runs_frame(write_grid(tmp_path, methods=("dpo", "rr")))
    df["mean_reward"] = float("nan")  # a judge without a gold reward
    texts = []
    real = F._message

    def spy(out, title, text):
        texts.append(text)
        real(out, title, text)

    monkeypatch.setattr(F, "_message", spy)
    F.render_figures(df, load_results([]), tmp_path / "fig", "no pairs in this config")
    assert texts == ["no pairs in this config",
                     "The judge of this configuration has no gold reward: the reward-KL "
                     "frontier needs one (the embedded task's judge)."]
    assert (tmp_path / "fig" / "reward_vs_kl.png").exists()


def test_winrate_figure_draws_each_method_with_error_bars(tmp_path, monkeypatch):
    df = A.runs_frame(write_grid(tmp_path))
    plt = F._plt()
    captured = {}
    real_save = F._save

    def keep(fig, out):
        captured["fig"] = fig
        real_save(fig, out)

    monkeypatch.setattr(F, "_save", keep)
    F.winrate_vs_eps(df, tmp_path / "w.png")
    ax = captured["fig"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:1] == ["dpo (no privacy)"]
    assert {"rr", "props", "dpsgd", "SFT reference (50%)"} <= set(labels)
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "1", "∞"]
    # an errorbar container per private method whose line joins the finite-eps means over
    # seeds; eps = inf is a separate point (no line across the axis break)
    props_line = [c for c in ax.containers if c.get_label() == "props"][0]
    y = props_line.lines[0].get_ydata()
    means = df[df["method"] == "props"].groupby("eps")["win_rate"].mean()
    assert y == pytest.approx(means[[0.1, 1.0]].to_numpy())
    assert len(props_line.lines[0].get_xdata()) == 2
    singles = [c.lines[0].get_ydata()[0] for c in ax.containers
               if len(c.lines[0].get_xdata()) == 1]
    assert any(v == pytest.approx(means[math.inf]) for v in singles)
    plt.close("all")


def test_cli_figures(tmp_path):
    from props.cli import main
    from props.io import write_json

    summary = tmp_path / "summary.csv"
    A.aggregate(write_grid(tmp_path), summary)
    h = tmp_path / "h.json"
    write_json(h, _h2h().iloc[0].to_dict())
    assert main(["figures", "--summary", str(summary), "--headtohead", str(h),
                 "--methods", "dpo", "rr", "props", "--outdir", str(tmp_path / "f")]) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted(
        f"{n}.png" for n in F.FIGURES)
