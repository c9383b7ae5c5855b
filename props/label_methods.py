"""The label-DP family beyond plain RR: `rr-debiased`, `props`, `props-fusion`, `rr-prior`.

Privacy rests on one rule, enforced by structure: a method reaches the human labels only
through `read_released`, which returns the RR(eps) release made once by the pipeline
(shared by every method at this eps and seed), and it calls it at most once per pair.
Everything else (the labeler's votes, error-rate estimates, calibrations, MAP
combinations) is post-processing of released labels and of models trained on them, so
every method here is eps-label-DP with the full eps.  True labels, when known, only fill
the reporting columns.

Hyperparameters match `rr`: the same optimiser, learning rate and schedule, and each
stage trains on its own partition for `dpo.epochs`, so every pair is seen as often as in
`rr`.  Stage k continues from M_{k-1}; the reference is always the SFT model (the cached
`ctx.ref_a` / `ctx.ref_b`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from props import labeling as L
from props.config import DEFAULTS
from props.dpo import train_dpo
from props.io import InputError
from props.lm import score_sequences
from props.methods import Context, Result, label_privacy, label_rows, register, summarise_labels
from props.privacy.rr import flip_probability
from props.registry import LABELER_SCORES
from props.runtime import derive_seed

# ----------------------------------------------------------------------------- access to labels


def read_released(ctx: Context, idx: np.ndarray) -> np.ndarray:
    """The released RR(eps) labels of the pairs `idx`: the only way a method here reaches
    the human labels.  Methods call it at most once per pair (tests spy on it)."""
    return np.array([int(ctx.released[int(i)]) for i in idx], dtype=np.int64)


# ----------------------------------------------------------------------------- labeler scores


def response_logps(model: Any, ctx: Context, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed response log-probs of both responses of the pairs `idx` under `model`.
    The prompt is shared by the two responses, so leaving it out does not change any
    margin."""
    a = score_sequences(model, [ctx.enc_a[int(i)] for i in idx], ctx.pad_id)
    b = score_sequences(model, [ctx.enc_b[int(i)] for i in idx], ctx.pad_id)
    return a.numpy(), b.numpy()


def _cached(t: Any, idx: np.ndarray, what: str) -> np.ndarray:
    if t is None:
        raise InputError(f"labeler score needs the cached {what} log-probs of the pool")
    return torch.as_tensor(t).double()[torch.as_tensor(idx, dtype=torch.long)].numpy()


def labeler_margins(ctx: Context, idx: np.ndarray, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """score(a) - score(b) under the current policy (M_{k-1}) for the pairs `idx`, for
    each labeler score in `kinds`, from one forward pass over the pairs.

    loglik: summed log-likelihood; loglik_norm: per response token; implicit_reward:
    log pi_M - log pi_SFT (what DPO learned beyond SFT); base_ratio: log pi_M -
    log pi_base (also what SFT learned from the demonstrations).
    """
    for kind in kinds:
        if kind not in LABELER_SCORES:
            raise InputError(f"unknown labeler score {kind!r} (known: {', '.join(LABELER_SCORES)})")
    lp_a, lp_b = response_logps(ctx.policy, ctx, idx)
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "loglik":
            out[kind] = lp_a - lp_b
        elif kind == "loglik_norm":
            na = np.array([len(ctx.enc_a[int(i)].response_ids) for i in idx], dtype=np.float64)
            nb = np.array([len(ctx.enc_b[int(i)].response_ids) for i in idx], dtype=np.float64)
            out[kind] = lp_a / np.maximum(na, 1) - lp_b / np.maximum(nb, 1)
        elif kind == "implicit_reward":
            out[kind] = ((lp_a - _cached(ctx.ref_a, idx, "reference"))
                         - (lp_b - _cached(ctx.ref_b, idx, "reference")))
        else:
            out[kind] = ((lp_a - _cached(ctx.base_a, idx, "base-model"))
                         - (lp_b - _cached(ctx.base_b, idx, "base-model")))
    return out


def labeler_margin(ctx: Context, idx: np.ndarray, kind: str) -> np.ndarray:
    """The margin of one labeler score (see `labeler_margins`)."""
    return labeler_margins(ctx, idx, [kind])[kind]


def margin_accuracy(margin: np.ndarray, truth: np.ndarray) -> float:
    """Accuracy of the vote sign(margin) (1 = response a preferred) against `truth`; an
    exact tie counts half, as a fair coin would score."""
    vote = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    return float(np.mean(1.0 - np.abs(vote - np.asarray(truth, dtype=np.float64))))


def _has_inputs(ctx: Context, kind: str) -> bool:
    """Whether the cached log-probs a score needs are there (the chosen score must have
    them; a diagnostic one is skipped without)."""
    if kind == "implicit_reward":
        return ctx.ref_a is not None
    if kind == "base_ratio":
        return ctx.base_a is not None
    return True


def prior_temperature(kind: str, beta: float) -> float:
    """Scale that turns a margin into the labeler's Bradley-Terry log-odds: beta for the
    reward margins (DPO's own preference model is sigmoid(beta h)); 1 for likelihood
    margins (sigmoid(logp_a - logp_b) is the chance the model writes a rather than b)."""
    return beta if kind in ("implicit_reward", "base_ratio") else 1.0


# ----------------------------------------------------------------------------- stages


@dataclass
class StageLabels:
    """What one stage trains on, and how it got there."""

    final: np.ndarray
    released: np.ndarray | None  # per pair; -1 where the human label was not consulted
    model_label: np.ndarray | None = None
    trusted: np.ndarray | None = None  # bool per pair: the labeler decided the label
    error_estimate: L.ErrorEstimate | None = None
    extra: dict = field(default_factory=dict)


StageLabeler = Callable[[Context, np.ndarray, np.ndarray], StageLabels]


def _g(ctx: Context) -> float:
    return flip_probability(ctx.eps)


def _props_cfg(ctx: Context) -> dict:
    cfg = dict(DEFAULTS["props"])
    cfg.update(ctx.cfg.get("props", {}) or {})
    if int(cfg["stages"]) < 1:
        raise InputError(f"props.stages must be >= 1, got {cfg['stages']}")
    return cfg


def _stage_seed(ctx: Context, stage: int) -> int:
    return ctx.seed if stage == 1 else derive_seed("stage", ctx.seed, stage)


def _train_stage(ctx: Context, idx: np.ndarray, labels: np.ndarray, stage: int, name: str,
                 flip_rate: float = 0.0) -> dict:
    t = torch.as_tensor(idx, dtype=torch.long)
    return train_dpo(ctx.policy, [ctx.enc_a[int(i)] for i in idx], [ctx.enc_b[int(i)] for i in idx],
                     torch.as_tensor(ctx.ref_a)[t], torch.as_tensor(ctx.ref_b)[t],
                     [int(x) for x in labels], ctx.pad_id, ctx.dpo_settings,
                     _stage_seed(ctx, stage), flip_rate=flip_rate, desc=f"{name}:stage{stage}")


def _rows(ctx: Context, idx: np.ndarray, stage: int, lab: StageLabels) -> list[dict]:
    rows = label_rows(ctx, idx, stage, lab.final, lab.model_label, released=False)
    if lab.released is not None:
        for r, v in zip(rows, lab.released):
            r["released_label"] = None if v < 0 else int(v)
    return rows


def _chosen_length(ctx: Context, idx: np.ndarray, labels: np.ndarray) -> float:
    """Mean token length of the responses labelled preferred: labeler errors carry a
    length bias that matters as much as their rate, so it is logged per stage."""
    return float(np.mean([len((ctx.enc_a if lab == 1 else ctx.enc_b)[int(i)].response_ids)
                          for i, lab in zip(idx, labels)]))


def _run_stages(ctx: Context, name: str, label_stage: StageLabeler,
                score_key: str = "labeler_score") -> Result:
    """Shared K-stage loop: stage 1 trains on released labels from SFT; stage k >= 2 scores
    its partition with M_{k-1} (the policy as stage k-1 left it) by the score named in
    `props.<score_key>`, labels it with `label_stage` and continues training the same
    policy."""
    pcfg = _props_cfg(ctx)
    kind = pcfg[score_key]
    if kind not in LABELER_SCORES:
        raise InputError(f"unknown props.{score_key} {kind!r} (known: {', '.join(LABELER_SCORES)})")
    n = len(ctx.rows)
    stages = int(pcfg["stages"])
    if n < stages:
        raise InputError(f"{name}: {n} pairs cannot fill {stages} stages")
    pseed = L.partition_seed([r["pair_id"] for r in ctx.rows])
    parts = L.partitions(n, stages, pseed)
    rows: list[dict] = []
    per_stage: dict[str, dict] = {}
    train_stats = []
    for k, idx in enumerate(parts, start=1):
        if k == 1:
            rel = read_released(ctx, idx)
            lab = StageLabels(final=rel.copy(), released=rel)
        else:
            # every score comes from the same forward pass; the others are kept only to
            # report how each would have labelled this stage (diagnostic, never used)
            others = [s for s in LABELER_SCORES if s != kind and _has_inputs(ctx, s)]
            margins = labeler_margins(ctx, idx, [kind] + (others if ctx.true_labels is not None
                                                          else []))
            margin = margins[kind]
            lab = label_stage(ctx, idx, margin)
        stage_rows = _rows(ctx, idx, k, lab)
        rows += stage_rows
        info: dict[str, Any] = {"n_pairs": len(idx),
                                "chosen_length": _chosen_length(ctx, idx, lab.final)}
        if ctx.true_labels is not None:
            truth = np.asarray(ctx.true_labels)[idx]
            info["true_chosen_length"] = _chosen_length(ctx, idx, truth)
            if lab.model_label is not None:
                info["labeler_accuracy"] = float(np.mean(lab.model_label == truth))
            if k >= 2:
                info["labeler_accuracy_by_score"] = {
                    s: margin_accuracy(m, truth) for s, m in sorted(margins.items())}
        if lab.error_estimate is not None:
            e = lab.error_estimate
            info.update(labeler_disagreement=e.disagreement, labeler_error_estimate_raw=e.raw,
                        labeler_error_estimate=e.clipped)
        info["trusted_share"] = 0.0 if lab.trusted is None else float(np.mean(lab.trusted))
        info.update(lab.extra)
        per_stage[str(k)] = info
        stats = _train_stage(ctx, idx, lab.final, k, name)
        train_stats.append({"stage": k, "n_pairs": len(idx), **stats})
    summary = summarise_labels(rows)
    summary.update(_per_stage_keys(per_stage))
    summary.update(stages=stages, partition_seed=pseed, **{score_key: kind},
                   trusted_share=float(sum(s["trusted_share"] * s["n_pairs"]
                                           for s in per_stage.values()) / n),
                   per_stage=per_stage)
    stats = {"steps": sum(s["steps"] for s in train_stats), "stages": train_stats,
             "final_loss": train_stats[-1]["final_loss"],
             "final_reward_accuracy": train_stats[-1]["final_reward_accuracy"]}
    return Result(ctx.policy, rows, summary, label_privacy(ctx.eps), stats)


def _per_stage_keys(per_stage: dict[str, dict]) -> dict:
    """Flat `<key>_per_stage` maps (stage -> value) for the figures that the summary and
    tables read; stages without a labeler are left out of the labeler's maps."""
    out: dict[str, dict] = {}
    for key in ("labeler_error_estimate", "labeler_error_estimate_raw", "labeler_accuracy",
                "trusted_share"):
        m = {s: v[key] for s, v in per_stage.items() if key in v}
        if m:
            out[f"{key}_per_stage"] = m
    return out


# ----------------------------------------------------------------------------- stage-k rules


def props_stage(ctx: Context, idx: np.ndarray, margin: np.ndarray) -> StageLabels:
    """PROPS: the labeler's hard votes and the released labels combined by MAP with one
    global error rate each; the labeler's rate is estimated from its disagreement with
    the released labels (the paper's point-estimate rule)."""
    g = _g(ctx)
    rel = read_released(ctx, idx)
    vote = L.margin_labels(margin, derive_seed("ties", ctx.seed, int(idx[0])))
    est = L.estimate_error_rate(vote, rel, g)
    final = L.map_combine(rel, vote, g, est.clipped)
    trust = L.log_odds_weight(est.clipped) > L.log_odds_weight(g)
    return StageLabels(final, rel, vote, np.full(len(idx), trust), est)


def fusion_stage(ctx: Context, idx: np.ndarray, margin: np.ndarray) -> StageLabels:
    """PROPS-fusion: per-pair posterior MAP with a privately calibrated labeler, trusted
    only where a confidence bound beats the released label (else RR's label stands)."""
    g = _g(ctx)
    conf = float(_props_cfg(ctx)["confidence"])
    rel = read_released(ctx, idx)
    dec = L.fuse(margin, rel, g, conf)
    # The reported vote is the labeler's plain argmax, as in `props`, so that the labeler's
    # accuracy and error estimate compare across the two; a trusted label is the calibrated
    # side, which differs from it only where the fitted intercept moves the threshold.
    vote = L.margin_labels(margin, derive_seed("ties", ctx.seed, int(idx[0])))
    est = L.estimate_error_rate(vote, rel, g)
    extra: dict[str, Any] = {"labeler_informative": dec.informative,
                             "point_estimate_changes": int(np.sum(dec.posterior_labels != rel)),
                             "changed": int(np.sum(dec.labels != rel))}
    if dec.calibration is not None:
        c = dec.calibration
        extra["calibration"] = {"slope": c.slope, "intercept": c.intercept, "scale": c.scale,
                                "signed_root_lr": c.signed_root}
    return StageLabels(dec.labels, rel, vote, dec.trusted, est, extra)


def prior_stage(ctx: Context, idx: np.ndarray, margin: np.ndarray) -> StageLabels:
    """RR with a prior from M_{k-1}: pairs whose prior top label beats RR's accuracy get
    that label without the human label being consulted; the others read their RR release.

    The prior must be a probability, as a classifier's softmax is in Ghazi et al.; the
    default `props.prior_score: implicit_reward` gives DPO's own Bradley-Terry
    probability sigmoid(beta h), the model that DPO fits to the earlier labels by
    cross-entropy.  (A summed log-likelihood margin of tens of nats would make every prior
    look certain.)"""
    kind = _props_cfg(ctx)["prior_score"]
    tau = prior_temperature(kind, ctx.dpo_settings.beta)
    p1 = 1.0 / (1.0 + np.exp(-np.clip(tau * margin, -700, 700)))
    labels, from_prior = L.rr_with_prior(p1, ctx.eps, lambda ask: read_released(ctx, idx[ask]))
    rel = np.where(from_prior, -1, labels)
    top = (p1 > 0.5).astype(np.int64)
    asked = ~from_prior
    est = L.estimate_error_rate(top[asked], labels[asked], _g(ctx)) if asked.any() else None
    return StageLabels(labels, rel, top, from_prior, est,
                       {"prior_threshold": L.prior_threshold(ctx.eps),
                        "error_estimate_on": "pairs released through RR"})


# ----------------------------------------------------------------------------- methods


@register("rr-debiased")
def run_rr_debiased(ctx: Context) -> Result:
    """RR labels with the unbiased (robust / rDPO) loss at flip rate g; plain DPO at eps = inf."""
    idx = np.arange(len(ctx.rows))
    rel = read_released(ctx, idx)
    g = _g(ctx)
    stats = _train_stage(ctx, idx, rel, 1, "rr-debiased", flip_rate=g)
    rows = _rows(ctx, idx, 1, StageLabels(rel, rel))
    summary = summarise_labels(rows)
    summary["flip_rate"] = g
    return Result(ctx.policy, rows, summary, label_privacy(ctx.eps), {**stats, "flip_rate": g})


@register("props")
def run_props(ctx: Context) -> Result:
    return _run_stages(ctx, "props", props_stage)


@register("props-fusion")
def run_props_fusion(ctx: Context) -> Result:
    res = _run_stages(ctx, "props-fusion", fusion_stage)
    res.label_summary["confidence"] = float(_props_cfg(ctx)["confidence"])
    return res


@register("rr-prior")
def run_rr_prior(ctx: Context) -> Result:
    res = _run_stages(ctx, "rr-prior", prior_stage, score_key="prior_score")
    if not math.isinf(ctx.eps):
        res.privacy = {**res.privacy, "mechanism": "randomized-response-with-prior",
                       "note": "pairs whose prior (from the previous stage's model, trained "
                               "on other pairs) is confident get its top label and leak "
                               "nothing; the others are released once through RR(eps)"}
    return res
