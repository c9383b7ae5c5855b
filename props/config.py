"""Load, default and validate a benchmark configuration.

All defaults live here, in one place.  A config is validated twice: against the JSON
schema in bench/schemas/ (shape, types, unknown keys) and by `check` (names that must
exist in the registries, consistency between sections).  Every problem is reported as a
one-line `ConfigError` naming the offending key.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml

from props.io import InputError
from props.registry import DATASET_KINDS, JUDGES, METHODS

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "bench" / "schemas" / "config.schema.json"

DEFAULTS: dict[str, Any] = {
    "threads": 1,
    "sft": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "warmup_steps": 20, "weight_decay": 0.0,
            "max_grad_norm": 1.0},
    "dpo": {"beta": 0.1, "lr": 1e-4, "epochs": 3, "batch_size": 32, "warmup_steps": 10,
            "weight_decay": 0.0, "max_grad_norm": 1.0},
    "generation": {"max_prompt_tokens": 32, "max_new_tokens": 48, "temperature": 1.0,
                   "batch_size": 128},
    "judge": "gold",
    "privacy": {"delta": 1e-5},
    "props": {"stages": 2, "labeler_score": "loglik", "confidence": 0.95,
              "prior_score": "implicit_reward"},
    "dpsgd": {"max_grad_norm": 1.0, "accountant": "prv", "max_physical_batch_size": 32},
}

MODEL_DEFAULTS = {
    "scratch": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 384,
                "vocab_size": 1024, "freeze_embeddings": False,
                "pretrain": {"epochs": 1, "batch_size": 64, "lr": 3e-3, "warmup_steps": 50,
                             "weight_decay": 0.0, "max_grad_norm": 1.0}},
}

DATASET_DEFAULTS = {
    "embedded": {"seed": 1234, "n_corpus": 60000, "n_sft": 2000, "n_pool": 2000, "n_eval": 500,
                 "pair_sources": ["writer", "base"], "bt_temperature": 0.2},
    # real datasets (props.datasets): no size means "all"; truthy-dpo keeps the paper's splits
    **{k: {"seed": 0, "on_error": "raise"} for k in ("truthy-dpo", "hh-rlhf", "alpaca-eval")},
}


class ConfigError(InputError):
    pass


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _schema_error_line(err) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return f"config: unknown key {extra[0]!r} at {where}"
    if err.validator == "required":
        return f"config: {where}: {err.message}"
    if err.validator == "oneOf" and "eps" in where:
        return f"config: {where}: eps must be a number > 0 or 'inf', got {err.instance!r}"
    return f"config: {where}: {err.message}"


def validate_schema(cfg: dict) -> None:
    import json

    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_schema_error_line(errors[0]))


def resolve(cfg: dict) -> dict:
    """Validate a raw config and return it with every default filled in."""
    if not isinstance(cfg, dict) or not cfg:
        raise ConfigError("config: empty or not a mapping")
    validate_schema(cfg)
    out = _merge(DEFAULTS, cfg)
    out["models"] = {n: _merge(MODEL_DEFAULTS.get(m["source"], {}), m) for n, m in cfg["models"].items()}
    out["datasets"] = {n: _merge(DATASET_DEFAULTS.get(d["kind"], {}), d)
                       for n, d in cfg["datasets"].items()}
    check(out)
    return out


def check(cfg: dict) -> None:
    for m in cfg["methods"]:
        if m not in METHODS:
            raise ConfigError(f"config: unknown method {m!r} (known: {', '.join(METHODS)})")
    judge_name = cfg["judge"].split(":", 1)[0]
    if judge_name not in JUDGES:
        raise ConfigError(f"config: unknown judge {cfg['judge']!r} (known: {', '.join(JUDGES)})")
    if judge_name == "reward-model" and ":" not in cfg["judge"]:
        raise ConfigError("config: judge 'reward-model' needs a model: reward-model:PATH_OR_ID")
    for name, d in cfg["datasets"].items():
        if judge_name == "gold" and d["kind"] != "embedded":
            raise ConfigError(f"config: dataset {name!r}: judge 'gold' scores the embedded "
                              "task only; use local, reward-model or llm")
        if d["kind"] != "embedded" and d.get("n_pool") is not None and \
                d["n_pool"] < 2 * cfg["props"]["stages"]:
            raise ConfigError(f"config: dataset {name!r}: n_pool must be at least 2 per PROPS stage")
        if d["kind"] not in DATASET_KINDS:
            raise ConfigError(f"config: dataset {name!r}: kind {d['kind']!r} is not available "
                              f"(known: {', '.join(DATASET_KINDS)})")
        if d["kind"] == "embedded" and d["n_pool"] < 2 * cfg["props"]["stages"]:
            raise ConfigError(f"config: dataset {name!r}: n_pool must be at least 2 per PROPS stage")
    for name, d in cfg["datasets"].items():
        _check_dataset_links(cfg, name, d)
    for name, m in cfg["models"].items():
        if m["source"] in ("hub", "local") and not m.get("id"):
            raise ConfigError(f"config: model {name!r}: source {m['source']!r} needs 'id'")
        if m["source"] == "scratch" and m["hidden_size"] % m["num_heads"]:
            raise ConfigError(f"config: model {name!r}: hidden_size must be a multiple of num_heads")
        for d in cfg["datasets"].values():
            if m["source"] == "scratch" and d["kind"] != "embedded":
                raise ConfigError(f"config: model {name!r} is trained from scratch and needs "
                                  "the embedded dataset")
    for e in cfg["eps"]:
        if isinstance(e, str) and e != "inf":
            raise ConfigError(f"config: eps must be a number > 0 or 'inf', got {e!r}")
    if any(str(e) == "inf" for e in cfg["eps"]) and len(cfg["eps"]) == 1 and any(
            METHODS[m].private for m in cfg["methods"]):
        pass  # private methods at eps = inf are simply their non-private limit


# what must be equal for a dataset to reuse another's splits and models
SHARED_DATA_KEYS = ("kind", "seed", "n_corpus", "n_sft", "n_pool", "n_eval")


def _check_dataset_links(cfg: dict, name: str, d: dict) -> None:
    src = d.get("models_from")
    if src is not None:
        if src == name or src not in cfg["datasets"]:
            raise ConfigError(f"config: dataset {name!r}: models_from {src!r} must name another "
                              "dataset of the config")
        other = cfg["datasets"][src]
        if other.get("models_from") is not None:
            raise ConfigError(f"config: dataset {name!r}: models_from {src!r}, which itself "
                              "takes its models from another dataset")
        if d["kind"] != "embedded":
            raise ConfigError(f"config: dataset {name!r}: models_from is for the embedded task")
        for k in SHARED_DATA_KEYS:
            if d.get(k) != other.get(k):
                raise ConfigError(f"config: dataset {name!r}: {k} must equal that of {src!r} "
                                  "to reuse its splits and models")
    sub = d.get("grid") or {}
    for key in ("methods", "eps", "seeds"):
        if key in sub:
            if key == "eps":
                top = eps_values(cfg)
                extra = [v for v, f in zip(sub[key], eps_values(sub)) if f not in top]
            else:
                extra = [v for v in sub[key] if v not in cfg[key]]
            if extra:
                raise ConfigError(f"config: dataset {name!r}: grid.{key} {extra[0]!r} is not "
                                  f"in the top-level {key}")


def shared_dataset(cfg: dict, dataset: str) -> str:
    """The dataset whose splits, base and SFT models `dataset` uses (itself by default)."""
    return cfg["datasets"][dataset].get("models_from") or dataset


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return resolve(raw)


def eps_values(cfg: dict) -> list[float]:
    return [math.inf if str(e) == "inf" else float(e) for e in cfg["eps"]]


def grid(cfg: dict) -> list[dict]:
    """Every run of the grid: model x dataset x method x eps x seed (a dataset's `grid`
    restricts its own part).

    Non-private methods run once, at eps = inf; private ones at every eps of the grid
    (eps = inf included when listed, as the no-noise limit of the mechanism).
    """
    runs = []
    for model in cfg["models"]:
        for dataset, d in cfg["datasets"].items():
            sub = d.get("grid") or {}
            methods = [m for m in cfg["methods"] if m in sub.get("methods", cfg["methods"])]
            for method in methods:
                eps_list = eps_values({"eps": sub.get("eps", cfg["eps"])}) \
                    if METHODS[method].private else [math.inf]
                for eps in eps_list:
                    for seed in sub.get("seeds", cfg["seeds"]):
                        runs.append({"model": model, "dataset": dataset, "method": method,
                                     "eps": eps, "seed": seed})
    return runs


def run_spec(cfg: dict, model: str | None, dataset: str) -> dict:
    """Everything that decides one run's result besides (method, eps, seed): recorded in its
    metrics.json as the resolved config, and passed to the training step.  The grid lists
    (methods, eps, seeds) are left out on purpose, so that growing the grid does not
    invalidate finished runs."""
    keys = ("sft", "dpo", "generation", "judge", "privacy", "props", "dpsgd")
    return {"tier": cfg["tier"],
            "model": {"name": model, **cfg["models"][model]} if model else None,
            "dataset": {"name": dataset, **{k: v for k, v in cfg["datasets"][dataset].items()
                                            if k != "grid"}},
            **{k: cfg[k] for k in keys}}


# Which parts of the run spec each workflow step depends on.  The workflow passes each
# step only these, so Snakemake reruns a step exactly when one of them changes.
STEP_KEYS = {
    "data": ("tier", "dataset"),
    "base": ("dataset", "model"),
    "sft": ("dataset", "model", "sft"),
    "pool": ("dataset", "model", "sft", "generation"),
    "train": None,  # everything
    "generate": ("generation",),
    "judge": ("judge",),
}


def step_spec(cfg: dict, step: str, model: str | None, dataset: str) -> dict:
    spec = run_spec(cfg, model, dataset)
    keys = STEP_KEYS[step]
    return spec if keys is None else {k: spec[k] for k in keys}
