"""Randomized response on binary preference labels.

Each label is released once: kept with probability 1-g, flipped with probability
g = 1/(1+e^eps).  The likelihood ratio of any output under two neighbouring labels is
(1-g)/g = e^eps, so every released label is eps-locally label-DP (delta = 0), and
everything trained on the released labels is post-processing.
"""

from __future__ import annotations

import math

import numpy as np


def flip_probability(eps: float) -> float:
    """g = 1/(1+e^eps); 0 for eps = inf (no privacy, no flips)."""
    if math.isinf(eps):
        return 0.0
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return 1.0 / (1.0 + math.exp(eps))


def coin_uniforms(pair_ids: list[str], seed: int) -> np.ndarray:
    """One U(0,1) draw per pair from a seeded generator, in pair order.

    The same uniforms serve every eps at a given seed (a label is flipped when its
    uniform falls below g(eps)): common random numbers across eps, and across methods,
    which makes comparisons sharper.  Each (eps, seed) release is its own experiment.
    """
    rng = np.random.default_rng(seed)
    return rng.random(len(pair_ids))


def randomized_response(labels: np.ndarray, eps: float, uniforms: np.ndarray) -> np.ndarray:
    """Release labels through RR(eps) using the given uniforms (one per label)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != uniforms.shape:
        raise ValueError("one uniform per label is required")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    flip = uniforms < flip_probability(eps)
    return np.where(flip, 1 - labels, labels)
