"""Training methods, registered by name (metadata in `props.registry`).

A method receives a `Context` (the SFT policy to train, the pool encoded, cached
reference log-probs, the true labels when known and the RR release shared by every
method at this eps and seed) and returns the trained policy, one label row per pair
(the `labels.jsonl` contract), a label summary and its privacy ledger.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from props.dpo import DPOSettings, train_dpo
from props.privacy.rr import flip_probability
from props.registry import METHOD_MODULES, METHODS


@dataclass
class Context:
    cfg: dict
    eps: float
    seed: int
    policy: Any
    tok: Any
    rows: list[dict]
    enc_a: list
    enc_b: list
    ref_a: Any
    ref_b: Any
    base_a: Any
    base_b: Any
    true_labels: np.ndarray | None
    released: np.ndarray
    sft_path: Path | None = None
    base_path: Path | None = None

    @property
    def pad_id(self) -> int:
        return self.tok.pad_token_id

    @property
    def dpo_settings(self) -> DPOSettings:
        return DPOSettings.from_config(self.cfg["dpo"])


@dataclass
class Result:
    policy: Any
    label_rows: list[dict]
    label_summary: dict
    privacy: dict
    stats: dict = field(default_factory=dict)


def label_rows(ctx: Context, idx, stage: int, final, model_label=None, released=True) -> list[dict]:
    out = []
    for j, i in enumerate(idx):
        out.append({
            "pair_id": ctx.rows[i]["pair_id"], "stage": stage,
            "true_label": None if ctx.true_labels is None else int(ctx.true_labels[i]),
            "released_label": int(ctx.released[i]) if released else None,
            "model_label": None if model_label is None else int(model_label[j]),
            "final_label": int(final[j]),
        })
    return out


def summarise_labels(rows: list[dict]) -> dict:
    """Number of pairs trained on and, when ground truth is known, the accuracy of the
    labels actually trained on, overall and per stage."""
    out: dict[str, Any] = {"n_pairs": len(rows)}
    if rows and rows[0]["true_label"] is not None:
        acc = np.mean([r["final_label"] == r["true_label"] for r in rows])
        out["accuracy"] = float(acc)
        stages = sorted({r["stage"] for r in rows})
        out["accuracy_per_stage"] = {
            str(s): float(np.mean([r["final_label"] == r["true_label"]
                                   for r in rows if r["stage"] == s])) for s in stages}
        rel = [r for r in rows if r["released_label"] is not None]
        if rel:
            out["released_accuracy"] = float(np.mean([r["released_label"] == r["true_label"]
                                                      for r in rel]))
    return out


def label_privacy(eps: float) -> dict:
    """Ledger of a label-DP method: every label released once through RR(eps)."""
    if math.isinf(eps):
        return {"mechanism": "none", "unit": "label", "eps": math.inf, "delta": 0.0,
                "accountant": None, "note": "eps = inf: labels released unchanged"}
    return {"mechanism": "randomized-response", "unit": "label", "eps": eps, "delta": 0.0,
            "accountant": "closed form (pure eps-local label DP; training is post-processing)",
            "flip_probability": flip_probability(eps)}


_REGISTRY: dict[str, Callable[[Context], Result]] = {}


def register(name: str):
    def deco(fn):
        if name not in METHODS:
            raise KeyError(f"method {name!r} has no entry in props.registry.METHODS")
        _REGISTRY[name] = fn
        return fn
    return deco


def run_method(name: str, ctx: Context) -> Result:
    if name not in _REGISTRY and name in METHOD_MODULES:
        import importlib

        importlib.import_module(METHOD_MODULES[name])
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name](ctx)


def _train_all(ctx: Context, labels: np.ndarray, flip_rate: float = 0.0) -> dict:
    return train_dpo(ctx.policy, ctx.enc_a, ctx.enc_b, ctx.ref_a, ctx.ref_b, labels.tolist(),
                     ctx.pad_id, ctx.dpo_settings, ctx.seed, flip_rate=flip_rate)


@register("dpo")
def run_dpo(ctx: Context) -> Result:
    if ctx.true_labels is None:
        raise ValueError("dpo needs the true labels of the pool")
    labels = ctx.true_labels
    stats = _train_all(ctx, labels)
    idx = range(len(labels))
    rows = label_rows(ctx, idx, 1, labels, released=False)
    privacy = {"mechanism": "none", "unit": None, "eps": math.inf, "delta": 0.0,
               "accountant": None}
    return Result(ctx.policy, rows, summarise_labels(rows), privacy, stats)


@register("rr")
def run_rr(ctx: Context) -> Result:
    labels = ctx.released
    stats = _train_all(ctx, labels)
    rows = label_rows(ctx, range(len(labels)), 1, labels)
    return Result(ctx.policy, rows, summarise_labels(rows), label_privacy(ctx.eps), stats)
