"""Bad configs fail with one line naming the problem; good ones resolve with defaults."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from props import config as C

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "bench" / "config").glob("*.yaml"))


def smoke() -> dict:
    return yaml.safe_load((REPO / "bench" / "config" / "smoke.yaml").read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    cfg = C.load(path)
    assert C.grid(cfg)


def test_defaults_filled_and_grid_expanded():
    cfg = C.resolve(smoke())
    assert cfg["dpo"]["beta"] == 0.1 and cfg["privacy"]["delta"] == 1e-5
    runs = C.grid(cfg)
    dpo = [r for r in runs if r["method"] == "dpo"]
    assert dpo and all(math.isinf(r["eps"]) for r in dpo)  # non-private: eps = inf only
    rr = {r["eps"] for r in runs if r["method"] == "rr"}
    assert rr == {0.5, 2.0}


def test_dataset_grid_restriction_and_shared_models():
    """A dataset's `grid` keeps only its part of the grid (dpo is not in its methods, so
    it has no dpo run); `models_from` points its splits and models at the other dataset,
    and the run spec leaves the grid lists out (growing them invalidates nothing)."""
    cfg = C.resolve(smoke())
    runs = C.grid(cfg)
    variant = [(r["method"], r["eps"], r["seed"]) for r in runs
               if r["dataset"] == "reviews-smoke-onpolicy"]
    assert variant == [("rr", 0.5, 0)]
    assert len([r for r in runs if r["dataset"] == "reviews-smoke"]) == 3
    assert C.shared_dataset(cfg, "reviews-smoke-onpolicy") == "reviews-smoke"
    assert C.shared_dataset(cfg, "reviews-smoke") == "reviews-smoke"
    spec = C.run_spec(cfg, "llama-smoke", "reviews-smoke-onpolicy")
    assert "grid" not in spec["dataset"] and spec["dataset"]["pair_sources"] == ["sft", "sft"]
    c = smoke()
    c["datasets"]["reviews-smoke-onpolicy"]["grid"]["eps"] = [0.5, 2]
    assert C.run_spec(C.resolve(c), "llama-smoke", "reviews-smoke-onpolicy") == spec


def test_snakemake_variant_dataset_reuses_models(tmp_path):
    """Dry run: the variant gets its own pool, built from the other dataset's splits and
    SFT model; no data, base or SFT job is planned for it."""
    work = tmp_path / "wf"
    work.mkdir()
    r = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                        "--configfile", str(REPO / "bench" / "config" / "smoke.yaml"),
                        "-n", "all"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "results/models/llama-smoke/reviews-smoke-onpolicy" not in out
    assert "results/data/reviews-smoke-onpolicy" not in out
    lines = out.splitlines()
    at = lines.index("    output: results/pools/llama-smoke/reviews-smoke-onpolicy")
    inputs = lines[at - 1].split("input:")[1].split(",")
    assert [i.strip() for i in inputs] == ["results/data/reviews-smoke",
                                           "results/models/llama-smoke/reviews-smoke/base",
                                           "results/models/llama-smoke/reviews-smoke/sft"]


def _mutate(fn):
    c = copy.deepcopy(smoke())
    fn(c)
    return c


BAD = {
    "unknown method": (lambda c: c.update(methods=["dpo", "magic"]), "unknown method 'magic'"),
    "unknown top key": (lambda c: c.update(learning_rate=1), "unknown key 'learning_rate'"),
    "unknown nested key": (lambda c: c["dpo"].update(betta=0.1), "unknown key 'betta'"),
    "eps zero": (lambda c: c.update(eps=[0, 1]), "eps"),
    "eps negative": (lambda c: c.update(eps=[-1]), "eps"),
    "eps word": (lambda c: c.update(eps=["big"]), "eps"),
    "missing datasets": (lambda c: c.pop("datasets"), "'datasets' is a required property"),
    "unknown dataset kind": (lambda c: c["datasets"]["reviews-smoke"].update(kind="imdb"), "kind"),
    "bad seed": (lambda c: c.update(seeds=[-1]), "seeds"),
    "models_from unknown": (lambda c: c["datasets"]["reviews-smoke-onpolicy"].update(
        models_from="nowhere"), "models_from 'nowhere'"),
    "models_from other splits": (lambda c: c["datasets"]["reviews-smoke-onpolicy"].update(
        n_sft=301), "n_sft must equal"),
    "models_from itself": (lambda c: c["datasets"]["reviews-smoke-onpolicy"].update(
        models_from="reviews-smoke-onpolicy"), "must name another dataset"),
    "grid method not in grid": (lambda c: c["datasets"]["reviews-smoke-onpolicy"].update(
        grid={"methods": ["props"]}), "grid.methods 'props'"),
    "grid eps not in grid": (lambda c: c["datasets"]["reviews-smoke-onpolicy"].update(
        grid={"eps": [1.0]}), "grid.eps 1.0"),
    "grid unknown key": (lambda c: c["datasets"]["reviews-smoke-onpolicy"].update(
        grid={"method": ["rr"]}), "unknown key 'method'"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_config_one_line_error(name):
    fn, needle = BAD[name]
    with pytest.raises(C.ConfigError) as e:
        C.resolve(_mutate(fn))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def _write(tmp_path, cfg) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_cli_validate_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "props.cli", "validate",
                         str(_write(tmp_path, smoke()))], capture_output=True, text=True)
    assert ok.returncode == 0 and "runs" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "props.cli", "validate",
                          str(_write(tmp_path, _mutate(BAD["unknown method"][0])))],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown method" in bad.stderr


@pytest.mark.parametrize("name", ["unknown method", "eps zero", "missing datasets",
                                  "unknown top key"])
def test_snakemake_rejects_bad_config_and_writes_nothing(tmp_path, name):
    """The workflow validates at load: non-zero exit, the problem on one line, and no
    results/ folder created."""
    work = tmp_path / "wf"
    work.mkdir()
    cfgfile = _write(tmp_path, _mutate(BAD[name][0]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                        "--configfile", str(cfgfile), "--cores", "1", "all"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.startswith("config:")]
    assert len(lines) == 1 and BAD[name][1] in lines[0]
    assert not (work / "results").exists()


def test_schema_lists_the_labeler_scores_the_code_knows():
    import json

    from props.registry import LABELER_SCORES

    props = json.loads(C.SCHEMA_PATH.read_text())["properties"]["props"]["properties"]
    assert props["labeler_score"]["enum"] == list(LABELER_SCORES)
    assert props["prior_score"]["enum"] == list(LABELER_SCORES)
