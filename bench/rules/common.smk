# Config loading, validation and the grid.  Without --configfile the default tier is
# used; `--config key=value` overrides apply on top of it.
import json
import os
import shlex
import sys

import yaml

from props import config as C
from props.io import eps_tag

if "tier" not in config:
    with open(workflow.source_path("../config/default.yaml")) as _f:
        _default = yaml.safe_load(_f)
    config.update(C._merge(_default, dict(config)))
try:
    CFG = C.resolve(dict(config))
except C.ConfigError as _e:
    sys.exit(str(_e))

METRICS = "results/runs/{model}/{dataset}/{method}/eps{eps}/seed{seed}/metrics.json"

wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    dataset="[A-Za-z0-9_.-]+",
    method="[a-z0-9-]+",
    eps="[0-9.]+|inf",
    seed="[0-9]+",


def spec(step):
    """--spec argument of a step: only the config parts that step depends on."""
    def f(wc):
        return shlex.quote(json.dumps(C.step_spec(CFG, step, getattr(wc, "model", None), wc.dataset),
                                      sort_keys=True))
    return f


def run_metrics():
    """metrics.json of every run of the grid."""
    return [METRICS.format(model=r["model"], dataset=r["dataset"], method=r["method"],
                           eps=eps_tag(r["eps"]), seed=r["seed"]) for r in C.grid(CFG)]


def data_dir(wc):
    """The splits a dataset uses (those of its `models_from` dataset, if any)."""
    return f"results/data/{C.shared_dataset(CFG, wc.dataset)}"


def model_dir(kind):
    """The base or SFT model a (model, dataset) uses (see `models_from`)."""
    def f(wc):
        return f"results/models/{wc.model}/{C.shared_dataset(CFG, wc.dataset)}/{kind}"
    return f
