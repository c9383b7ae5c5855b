"""End to end: the smoke workflow on an even smaller task, then the file contracts, the
RR flip rates of every release, and Snakemake's incremental behaviour."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import binomtest

from props.privacy.rr import flip_probability

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def snakemake(work: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                           "--configfile", str(cfg), "--cores", "2", *args],
                          capture_output=True, text=True, env=env, timeout=1200)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    cfg = yaml.safe_load((REPO / "bench" / "config" / "smoke.yaml").read_text())
    for d in cfg["datasets"].values():  # the on-policy variant must keep equal splits
        d.update(n_corpus=1500, n_sft=120, n_pool=120, n_eval=24)
    cfg["seeds"] = [0, 1]
    path = work / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = snakemake(work, path, "all")
    assert r.returncode == 0, r.stderr[-3000:]
    return work, path, cfg


def test_contracts(finished):
    work, _, cfg = finished
    runs = sorted((work / "results" / "runs").glob("*/*/*/eps*/seed*"))
    # (dpo + rr x eps) x seeds, plus the on-policy variant's rr at eps 0.5 x seeds
    assert len(runs) == 2 * (1 + len(cfg["eps"])) + 2
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        for key in ("method", "model", "dataset", "eps", "delta", "seed", "config", "versions",
                    "git_revision", "privacy", "labels", "wall_time_train_s", "evaluation"):
            assert key in m, (run, key)
        assert {"mechanism", "unit", "eps", "delta"} <= set(m["privacy"])
        assert m["labels"]["n_pairs"] == 120 and 0 <= m["labels"]["accuracy"] <= 1
        ev = m["evaluation"]
        assert ev["wins"] + ev["ties"] + ev["losses"] == ev["n"] == 24
        assert 0 <= ev["win_rate"] <= 100 and math.isfinite(ev["kl_to_sft"])
        rows = [json.loads(x) for x in (run / "labels.jsonl").read_text().splitlines()]
        assert {"pair_id", "stage", "true_label", "released_label", "model_label",
                "final_label"} <= set(rows[0])
        assert len({r["pair_id"] for r in rows}) == len(rows) == 120
        if m["method"] == "rr":
            assert m["privacy"]["unit"] == "label"
            assert all(r["final_label"] == r["released_label"] for r in rows)
        if m["method"] == "dpo":
            assert all(r["final_label"] == r["true_label"] for r in rows)
        assert (run / "policy" / "model.safetensors").exists()
        assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pt"))
    df = pd.read_csv(work / "results" / "summary.csv")
    for col in ("model", "dataset", "method", "eps", "seed", "win_rate", "win_rate_se", "wins",
                "ties", "losses", "label_accuracy", "kl_to_sft", "mean_length"):
        assert col in df.columns
    assert len(df) == len(runs)
    win_block = (work / "results" / "table1.md").read_text().split("### ")[1]
    assert win_block.startswith("Win-rate") and win_block.count("| rr |") == 1


def test_rr_flip_rate_of_every_release(finished):
    """In every labels.jsonl, the share of released labels that differ from the true label
    matches 1/(1+e^eps) (binomial test)."""
    work, _, _ = finished
    for f in (work / "results" / "runs").glob("*/*/rr/eps*/seed*/labels.jsonl"):
        eps = float(f.parent.parent.name[3:])
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        flips = sum(r["released_label"] != r["true_label"] for r in rows)
        assert binomtest(flips, len(rows), flip_probability(eps)).pvalue > 1e-3, f


def test_release_shared_across_methods_and_seeded(finished):
    work, _, _ = finished
    rel = work / "results" / "releases" / "llama-smoke" / "reviews-smoke"
    a = (rel / "eps0.5" / "seed0.jsonl").read_text()
    b = (rel / "eps0.5" / "seed1.jsonl").read_text()
    assert a != b
    run = work / "results" / "runs" / "llama-smoke" / "reviews-smoke" / "rr" / "eps0.5" / "seed0"
    released = {json.loads(x)["pair_id"]: json.loads(x)["released_label"] for x in a.splitlines()}
    for x in (run / "labels.jsonl").read_text().splitlines():
        r = json.loads(x)
        assert r["released_label"] == released[r["pair_id"]]


def test_finished_tree_is_up_to_date_and_one_branch_reruns(finished):
    work, path, _ = finished
    r = snakemake(work, path, "-n", "all")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
    run = work / "results" / "runs" / "llama-smoke" / "reviews-smoke" / "rr" / "eps2" / "seed1"
    shutil.rmtree(run)
    r = snakemake(work, path, "-n", "all")
    out = r.stdout + r.stderr
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("train") == 1 and counts.get("generate") == 1 and counts.get("judge") == 1
    for step in ("data", "base", "sft", "pool", "release", "generate_reference"):
        assert step not in counts, (step, counts)
    assert np.isfinite(counts["total"])


def test_variant_dataset_shares_models_but_not_the_pool(finished):
    """`models_from`: the on-policy variant trains from the same SFT model (no models of
    its own), on its own pool whose two responses are both SFT samples."""
    work, _, _ = finished
    res = work / "results"
    assert not (res / "models" / "llama-smoke" / "reviews-smoke-onpolicy").exists()
    assert not (res / "data" / "reviews-smoke-onpolicy").exists()
    info = json.loads((res / "pools" / "llama-smoke" / "reviews-smoke-onpolicy" / "info.json")
                      .read_text())
    assert info["pair_sources"] == ["sft", "sft"]
    base = json.loads((res / "pools" / "llama-smoke" / "reviews-smoke" / "info.json").read_text())
    assert base["pair_sources"] == ["writer", "base"]
    m = json.loads((res / "runs" / "llama-smoke" / "reviews-smoke-onpolicy" / "rr" / "eps0.5"
                    / "seed0" / "metrics.json").read_text())
    assert m["config"]["dataset"]["models_from"] == "reviews-smoke"
    assert m["config"]["dataset"]["pair_sources"] == ["sft", "sft"]
