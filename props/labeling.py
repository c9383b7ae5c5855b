"""The label arithmetic of the label-DP methods, as pure numpy functions.

Everything here is post-processing of labels already released through RR(eps) (and of
a model trained on earlier released labels), so none of it costs privacy, with one rule
that keeps it so: nothing here may look at a true label.  The functions are separate from
the training code so that each decision rule can be tested exactly, on truth tables and
simulations, without a model.

Conventions: a label is 1 when response a is preferred; `g` is the RR flip probability
1/(1+e^eps) (0 at eps = inf); a labeler's `margin` is score(a) - score(b), so a positive
margin votes for label 1.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.optimize import brentq, minimize, minimize_scalar

# Error-rate estimates are clipped into [ERROR_CLIP, 0.5 - ERROR_CLIP]: the estimate is a
# difference of noisy rates and leaves (0, 0.5) at small eps; unclipped it would give an
# infinite or negative log-odds weight (NaN in the released code).
ERROR_CLIP = 1e-3


# ----------------------------------------------------------------------------- partitions


def partition_seed(pair_ids: Sequence[str]) -> int:
    """A seed fixed by the pool itself, so that every multi-stage method at every eps
    splits the pool the same way (common random numbers across methods)."""
    h = hashlib.sha256("\x1f".join(map(str, pair_ids)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 31) - 1)


def partitions(n: int, stages: int, seed: int) -> list[np.ndarray]:
    """Split pair indices 0..n-1 into `stages` disjoint, random, near-equal parts that
    together cover every pair (sizes differ by at most one; each part sorted)."""
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if n < stages:
        raise ValueError(f"cannot split {n} pairs into {stages} non-empty stages")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, stages)]


# ----------------------------------------------------------------------------- labeler


def margin_labels(margin: np.ndarray, seed: int) -> np.ndarray:
    """The labeler's hard label (argmax of its score); exact ties, which carry no
    preference (e.g. two identical responses), get a seeded fair coin rather than a
    fixed side."""
    margin = np.asarray(margin, dtype=np.float64)
    if not np.isfinite(margin).all():
        raise ValueError("labeler margins must be finite")
    out = (margin > 0).astype(np.int64)
    tie = margin == 0
    if tie.any():
        out[tie] = np.random.default_rng(seed).integers(0, 2, int(tie.sum()))
    return out


def log_odds_weight(error_rate: float) -> float:
    """log((1-e)/e): how much a source with error rate e counts in the MAP (inf at e = 0)."""
    if error_rate <= 0.0:
        return math.inf
    if error_rate >= 0.5:
        return 0.0
    return math.log((1.0 - error_rate) / error_rate)


@dataclass(frozen=True)
class ErrorEstimate:
    disagreement: float  # d: share of pairs where labeler and released labels differ
    raw: float  # (d - g) / (1 - 2g): unbiased, may leave [0, 0.5]
    clipped: float  # raw clipped into [ERROR_CLIP, 0.5 - ERROR_CLIP]


def estimate_error_rate(model_labels: np.ndarray, released: np.ndarray, g: float) -> ErrorEstimate:
    """Labeler error rate from its disagreement with RR labels.

    If the labeler errs with rate e independently of the RR coin, P(disagree) =
    e(1-g) + (1-e)g = g + e(1-2g), so (d - g)/(1-2g) is unbiased for e.  Its standard
    error is about sqrt(d(1-d)/n)/(1-2g), large at small eps, hence the clip.
    """
    model_labels = np.asarray(model_labels)
    released = np.asarray(released)
    if model_labels.shape != released.shape or model_labels.size == 0:
        raise ValueError("need one labeler label per released label (and at least one)")
    if not 0.0 <= g < 0.5:
        raise ValueError(f"flip probability must be in [0, 0.5), got {g}")
    d = float(np.mean(model_labels != released))
    raw = (d - g) / (1.0 - 2.0 * g)
    clipped = float(np.clip(raw, ERROR_CLIP, 0.5 - ERROR_CLIP))
    return ErrorEstimate(d, raw, clipped)


def map_combine(released: np.ndarray, model_labels: np.ndarray, g: float,
                g_model: float) -> np.ndarray:
    """MAP label from two independent noisy votes with error rates g (RR) and g_model.

    Log-odds of label 0: Lambda = (-1)^{l_RR} w_RR + (-1)^{l_M} w_M, w = log((1-e)/e);
    label 0 if Lambda > 0, label 1 if Lambda < 0.  An exact tie (equal weights,
    disagreeing votes) keeps the released label, so a tie cannot bias labels to one side.
    """
    released = np.asarray(released, dtype=np.int64)
    model_labels = np.asarray(model_labels, dtype=np.int64)
    w_rr, w_m = log_odds_weight(g), log_odds_weight(g_model)
    if w_rr == w_m:
        return released.copy()
    return released.copy() if w_rr > w_m else model_labels.copy()


# ----------------------------------------------------------------------------- fusion


@dataclass(frozen=True)
class Calibration:
    """Calibration of a labeler's margin against released RR labels:
    P(true label = 1 | margin) = sigmoid(slope * margin / scale + intercept)."""

    slope: float
    intercept: float
    scale: float  # the margins' standard deviation (the fit runs on margin / scale)
    loglik: float
    loglik_null: float  # best log-likelihood with slope 0 (a chance-level labeler)
    signed_root: float  # sign(slope) * sqrt(2 (loglik - loglik_null))

    def logit(self, margin: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(margin, dtype=np.float64) / self.scale + self.intercept


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _released_loglik(eta: np.ndarray, released: np.ndarray, g: float):
    """Per-pair log-likelihood of released labels when the true label is 1 with
    probability sigmoid(eta) and RR flips it with probability g, and its derivative in eta.

    P(released = 1) = (1-g) p + g (1-p) = g + (1-2g) p; computed in log space so that
    g = 0 (no flips) and extreme eta stay finite.
    """
    log_g = math.log(g) if g > 0 else -math.inf
    log_c = math.log(1.0 - 2.0 * g)
    ls_pos, ls_neg = _log_sigmoid(eta), _log_sigmoid(-eta)
    r = released.astype(bool)
    log_q = np.where(r, np.logaddexp(log_g, log_c + ls_pos), np.logaddexp(log_g, log_c + ls_neg))
    # dP(released = 1)/deta = (1-2g) s (1-s), and P(released = 0) = 1 - P(released = 1).
    dp = np.exp(log_c + ls_pos + ls_neg - log_q)
    return log_q, np.where(r, dp, -dp)


def _total_loglik(a: float, b: float, z: np.ndarray, released: np.ndarray, g: float) -> float:
    return float(_released_loglik(a * z + b, released, g)[0].sum())


def calibrate(margin: np.ndarray, released: np.ndarray, g: float,
              ridge: float = 1e-4) -> Calibration:
    """Fit P(true = 1 | margin) = sigmoid(a z + b), z = margin / sd(margin), by maximum
    likelihood of the *released* labels under P(released = 1) = g + (1-2g) p.

    Only released labels enter (true labels never may: that would spend privacy the
    ledger does not account for).  A tiny ridge on the slope keeps the fit finite when the
    margin separates the labels.  Also fits the slope-0 model (a chance-level labeler: only
    the base rate is learned) for the likelihood-ratio test.
    """
    margin = np.asarray(margin, dtype=np.float64)
    released = np.asarray(released, dtype=np.int64)
    if margin.shape != released.shape or margin.size < 2:
        raise ValueError("need one margin per released label (and at least two)")
    if not np.isfinite(margin).all():
        raise ValueError("labeler margins must be finite")
    if not 0.0 <= g < 0.5:
        raise ValueError(f"flip probability must be in [0, 0.5), got {g}")
    sd = float(np.std(margin))
    scale = sd if sd > 0 else 1.0
    z = margin / scale
    x = np.stack([z, np.ones_like(z)], axis=1)

    def neg(theta: np.ndarray):
        ll, d1 = _released_loglik(x @ theta, released, g)
        grad = -(x.T @ d1) + np.array([ridge * theta[0], 0.0])
        return -ll.sum() + 0.5 * ridge * theta[0] ** 2, grad

    best = None
    for start in ((0.0, 0.0), (1.0, 0.0), (-1.0, 0.0)):
        res = minimize(neg, np.array(start), jac=True, method="BFGS",
                       options={"gtol": 1e-8, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    a, b = (float(v) for v in best.x)
    null = minimize_scalar(lambda v: -_total_loglik(0.0, v, z, released, g),
                           bounds=(-60.0, 60.0), method="bounded", options={"xatol": 1e-9})
    loglik = _total_loglik(a, b, z, released, g)
    loglik_null = max(float(-null.fun), _total_loglik(0.0, 0.0, z, released, g))
    stat = max(0.0, 2.0 * (loglik - loglik_null))
    signed = math.copysign(math.sqrt(stat), a) if stat > 0 else 0.0
    return Calibration(a, b, scale, loglik, loglik_null, signed)


# Slopes (in units of the margin's standard deviation) at which the confidence region is
# traced: 0, and +-10^-3 .. 10^3 on a log scale.
_SLOPE_GRID = np.concatenate([-np.logspace(3, -3, 97), [0.0], np.logspace(-3, 3, 97)])
_B_SPAN = 60.0  # beyond |eta| = 60 every probability is 0 or 1 to double precision


def logit_bounds(cal: Calibration, margin: np.ndarray, released: np.ndarray, g: float,
                 confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous lower and upper confidence bounds on the calibrated logit at each margin.

    The confidence region is the likelihood-ratio region {(a, b): 2 (LL_max - LL(a, b)) <=
    chi2_2 quantile = -2 ln(1 - confidence)}; the bounds are the smallest and largest
    a z + b over it, traced on a grid of slopes (for each, the interval of intercepts
    inside the region).  Unlike a Wald band this stays sharp when the likelihood is flat in
    the slope, which happens whenever the labeler is strong enough to saturate (its
    slope is then unidentified but its side is not).
    """
    z = np.asarray(margin, dtype=np.float64) / cal.scale
    released = np.asarray(released, dtype=np.int64)
    floor = cal.loglik + math.log(1.0 - confidence)

    def ll(a: float, b: float) -> float:
        return _total_loglik(a, b, z, released, g)

    lower = np.full(z.shape, np.inf)
    upper = np.full(z.shape, -np.inf)
    for a in _SLOPE_GRID:
        a = float(a)
        # the intercept's best value at this slope, searched around the fitted line
        res = minimize_scalar(lambda v, a=a: -ll(a, v), bounds=(-_B_SPAN - abs(a) * np.abs(z).max(),
                                                               _B_SPAN + abs(a) * np.abs(z).max()),
                              method="bounded", options={"xatol": 1e-6})
        b_star = float(res.x)
        if -res.fun < floor:
            continue  # no intercept puts this slope inside the region
        lo_end = b_star - _B_SPAN - abs(a) * np.abs(z).max()
        hi_end = b_star + _B_SPAN + abs(a) * np.abs(z).max()
        b_lo = -np.inf if ll(a, lo_end) >= floor else brentq(lambda v, a=a: ll(a, v) - floor,
                                                             lo_end, b_star, xtol=1e-6)
        b_hi = np.inf if ll(a, hi_end) >= floor else brentq(lambda v, a=a: ll(a, v) - floor,
                                                            b_star, hi_end, xtol=1e-6)
        lower = np.minimum(lower, a * z + b_lo)
        upper = np.maximum(upper, a * z + b_hi)
    # the fitted line is inside the region by definition (guards against a coarse grid)
    eta = cal.logit(margin)
    return np.minimum(lower, eta), np.maximum(upper, eta)


@dataclass(frozen=True)
class FusionDecision:
    labels: np.ndarray  # the final label of every pair
    trusted: np.ndarray  # bool: the labeler's calibrated confidence beat RR's, with confidence
    posterior_labels: np.ndarray  # per-pair MAP at the point estimate (what no bound would give)
    informative: bool  # the likelihood-ratio test rejected a chance-level labeler
    calibration: Calibration | None


def fuse(margin: np.ndarray, released: np.ndarray, g: float,
         confidence: float = 0.95) -> FusionDecision:
    """Per-pair posterior MAP of the true label from the released RR label and the
    labeler's calibrated probability, trusting the labeler only where a confidence bound
    says it is more reliable than the released label.

    At the point estimate the MAP label is the labeler's side when its calibrated logit
    |eta_i| exceeds RR's log-odds log((1-g)/g) = eps (and the released label otherwise).
    The labeler is trusted on pair i only when (1) a one-sided likelihood-ratio test at
    level 1 - confidence rejects a chance-level labeler (slope <= 0), and (2) every
    calibration in the likelihood-ratio confidence region puts pair i's logit beyond eps on
    the same side (`logit_bounds`).  Everywhere else the released label stands, so a
    labeler the data cannot tell from chance changes nothing and the method reduces to RR.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    margin = np.asarray(margin, dtype=np.float64)
    released = np.asarray(released, dtype=np.int64)
    w_rr = log_odds_weight(g)
    if math.isinf(w_rr):  # eps = inf: the released labels are the true labels
        none = np.zeros(released.shape, dtype=bool)
        return FusionDecision(released.copy(), none, released.copy(), False, None)
    cal = calibrate(margin, released, g)
    eta = cal.logit(margin)
    point = np.where(eta > w_rr, 1, np.where(eta < -w_rr, 0, released))
    informative = cal.signed_root > NormalDist().inv_cdf(confidence)
    if not informative:
        none = np.zeros(released.shape, dtype=bool)
        return FusionDecision(released.copy(), none, point, False, cal)
    lower, upper = logit_bounds(cal, margin, released, g, confidence)
    sure1, sure0 = lower > w_rr, upper < -w_rr
    final = np.where(sure1, 1, np.where(sure0, 0, released))
    return FusionDecision(final, sure1 | sure0, point, True, cal)


# ----------------------------------------------------------------------------- RR with a prior


def prior_threshold(eps: float) -> float:
    """e^eps / (1 + e^eps) = 1 - g: the accuracy of RR(eps).  RRWithPrior (Ghazi et al.
    2021) on two labels releases the prior's top label when its probability exceeds this
    (the top-1 set then beats RR over both labels in expected accuracy); 1 at eps = inf."""
    if math.isinf(eps):
        return 1.0
    return 1.0 / (1.0 + math.exp(-eps))


def rr_with_prior(prior_p1: np.ndarray, eps: float,
                  release: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Binary RRWithPrior.

    prior_p1[i] is the prior probability that pair i's label is 1.  Pairs whose top label
    has prior probability above e^eps/(1+e^eps) get that top label, and `release` (the
    only path to the human label, through RR(eps)) is never called for them; for the other
    pairs `release(indices)` is called once, with their indices, and its output is used.
    The prior must not depend on these pairs' labels.  Returns (labels, from_prior).
    """
    p1 = np.asarray(prior_p1, dtype=np.float64)
    if not ((p1 >= 0) & (p1 <= 1)).all():
        raise ValueError("prior probabilities must lie in [0, 1]")
    top = (p1 > 0.5).astype(np.int64)
    p_top = np.maximum(p1, 1.0 - p1)
    from_prior = p_top > prior_threshold(eps)
    labels = top.copy()
    ask = np.flatnonzero(~from_prior)
    if ask.size:
        got = np.asarray(release(ask), dtype=np.int64)
        if got.shape != ask.shape:
            raise ValueError("release must return one label per requested pair")
        labels[ask] = got
    return labels, from_prior
