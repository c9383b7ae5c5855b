"""DPO: losses and the (non-private) training loop over preference pairs.

Reference log-probs are computed once per (SFT model, pool) and passed in: the reference
model is fixed for every method and stage, so recomputing it per run would be waste.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from props.lm import Encoded, collate, cosine_schedule, sequence_logps, shuffled_batches, to_device


@dataclass(frozen=True)
class DPOSettings:
    beta: float = 0.1
    lr: float = 3e-4
    epochs: float = 2.0
    batch_size: int = 32
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0

    @classmethod
    def from_config(cls, d: dict) -> DPOSettings:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
             flip_rate: float = 0.0) -> torch.Tensor:
    """Per-pair DPO loss.

    flip_rate = 0 gives the sigmoid loss of Rafailov et al.  flip_rate = g in (0, 1/2)
    gives the unbiased ("robust", rDPO) loss for labels flipped with probability g:
    [(1-g) L(h) - g L(-h)] / (1-2g), with L(h) = -log sigmoid(beta h); its expectation
    over the flip is the clean loss.
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if flip_rate == 0.0:
        return -F.logsigmoid(beta * h)
    if not 0.0 < flip_rate < 0.5:
        raise ValueError(f"flip_rate must be in [0, 0.5), got {flip_rate}")
    g = flip_rate
    return ((1 - g) * -F.logsigmoid(beta * h) - g * -F.logsigmoid(-beta * h)) / (1 - 2 * g)


def orient(a: Sequence, b: Sequence, labels: Sequence[int]) -> tuple[list, list]:
    """(chosen, rejected) lists from pairs and labels (1 = a preferred)."""
    chosen = [x if lab == 1 else y for x, y, lab in zip(a, b, labels)]
    rejected = [y if lab == 1 else x for x, y, lab in zip(a, b, labels)]
    return chosen, rejected


def pair_logps(model, chosen: Sequence[Encoded], rejected: Sequence[Encoded], pad_id: int):
    """Policy log-probs of chosen and rejected, in one forward pass."""
    dev = next(model.parameters()).device
    batch = to_device(collate(list(chosen) + list(rejected), pad_id), dev)
    lp = sequence_logps(model, batch)
    n = len(chosen)
    return lp[:n], lp[n:]


def train_dpo(model, a: Sequence[Encoded], b: Sequence[Encoded], ref_a: torch.Tensor,
              ref_b: torch.Tensor, labels: Sequence[int], pad_id: int, settings: DPOSettings,
              seed: int, flip_rate: float = 0.0, desc: str = "dpo") -> dict:
    """Train `model` in place with DPO on the labelled pairs; returns training stats."""
    dev = next(model.parameters()).device
    n = len(labels)
    if n == 0:
        raise ValueError("no pairs to train on")
    chosen, rejected = orient(a, b, labels)
    ref_c = torch.where(torch.tensor(labels) == 1, ref_a, ref_b).float()
    ref_r = torch.where(torch.tensor(labels) == 1, ref_b, ref_a).float()
    bs = settings.batch_size
    total = max(1, int(round(settings.epochs * math.ceil(n / bs))))
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = cosine_schedule(opt, settings.warmup_steps, total)
    losses, accs = [], []
    model.train()
    bar = tqdm(total=total, desc=desc, mininterval=10)
    for idx in shuffled_batches(n, bs, total, seed):
        pc, pr = pair_logps(model, [chosen[i] for i in idx], [rejected[i] for i in idx], pad_id)
        rc, rr = ref_c[idx].to(dev), ref_r[idx].to(dev)
        loss = dpo_loss(pc, pr, rc, rr, settings.beta, flip_rate).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        accs.append(float(((pc - rc) > (pr - rr)).float().mean()))
        bar.update(1)
    bar.close()
    model.eval()
    tail = max(1, len(losses) // 10)
    return {"steps": total, "final_loss": sum(losses[-tail:]) / tail,
            "final_reward_accuracy": sum(accs[-tail:]) / tail}
