"""The label arithmetic of the label-DP methods: partitions, error-rate estimate, MAP rule,
fusion calibration and its confidence bound, RR with a prior, and the debiased loss."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from props import labeling as L
from props.dpo import dpo_loss
from props.privacy.rr import flip_probability


def _rr(true: np.ndarray, g: float, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(true.shape) < g, 1 - true, true)


# ----------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("n,k", [(10, 2), (11, 3), (1000, 2), (7, 7), (5, 1)])
def test_partitions_disjoint_complete_balanced(n, k):
    parts = L.partitions(n, k, seed=3)
    assert len(parts) == k
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(set(allidx.tolist())) == n  # disjoint, no pair twice
    assert set(allidx.tolist()) == set(range(n))  # complete
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_partitions_seeded_and_random():
    a = L.partitions(100, 2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, L.partitions(100, 2, seed=1)))
    b = L.partitions(100, 2, seed=2)
    assert not np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], np.arange(50))  # shuffled, not the first half


def test_partitions_reject_impossible_split():
    with pytest.raises(ValueError):
        L.partitions(3, 4, seed=0)
    with pytest.raises(ValueError):
        L.partitions(3, 0, seed=0)


def test_partition_seed_depends_on_pool_only():
    ids = [f"p{i}" for i in range(20)]
    assert L.partition_seed(ids) == L.partition_seed(list(ids))
    assert L.partition_seed(ids) != L.partition_seed(ids[::-1])


# ----------------------------------------------------------------------------- error rate


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0, 2.0])
def test_error_rate_estimator_unbiased(eps):
    """(d - g)/(1 - 2g) is unbiased before clipping: its mean over many simulated stages
    matches the labeler's true error rate within Monte-Carlo error."""
    g = flip_probability(eps)
    e_true, n, reps = 0.3, 200, 4000
    rng = np.random.default_rng(11)
    raws = np.empty(reps)
    for r in range(reps):
        true = rng.integers(0, 2, n)
        model = np.where(rng.random(n) < e_true, 1 - true, true)
        raws[r] = L.estimate_error_rate(model, _rr(true, g, rng), g).raw
    se = raws.std() / math.sqrt(reps)
    assert abs(raws.mean() - e_true) < 4 * se
    # the clipped estimate stays inside (0, 0.5) and finite at every eps
    true = rng.integers(0, 2, n)
    worst = L.estimate_error_rate(1 - true, _rr(true, g, rng), g)  # an always-wrong labeler
    assert 0 < worst.clipped < 0.5 and np.isfinite(worst.clipped)


def test_error_rate_estimator_biased_if_g_ignored():
    """Guard for the test above: the plain disagreement rate is not the error rate."""
    g = flip_probability(0.5)
    rng = np.random.default_rng(0)
    true = rng.integers(0, 2, 20000)
    model = np.where(rng.random(true.shape) < 0.3, 1 - true, true)
    est = L.estimate_error_rate(model, _rr(true, g, rng), g)
    assert abs(est.raw - 0.3) < 0.02
    assert abs(est.disagreement - 0.3) > 0.05


def test_error_rate_at_eps_inf_is_disagreement():
    true = np.array([0, 1, 1, 0])
    est = L.estimate_error_rate(np.array([0, 1, 0, 0]), true, 0.0)
    assert est.raw == pytest.approx(0.25) and est.clipped == pytest.approx(0.25)


# ----------------------------------------------------------------------------- MAP


def test_map_truth_table():
    released = np.array([0, 0, 1, 1])
    model = np.array([0, 1, 0, 1])
    g = 0.3
    # labeler more reliable (0.1 < 0.3): its vote wins every disagreement
    assert L.map_combine(released, model, g, 0.1).tolist() == [0, 1, 0, 1]
    # labeler less reliable (0.4 > 0.3): the released label wins
    assert L.map_combine(released, model, g, 0.4).tolist() == [0, 0, 1, 1]
    # equal weights: a tie keeps the released label (no bias towards either side)
    assert L.map_combine(released, model, g, g).tolist() == [0, 0, 1, 1]
    # eps = inf: released labels are exact and always win
    assert L.map_combine(released, model, 0.0, 1e-3).tolist() == [0, 0, 1, 1]


def test_map_matches_log_odds_formula():
    """Lambda = (-1)^l_RR w_RR + (-1)^l_M w_M; label 0 if Lambda > 0, else 1."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        g, gm = rng.uniform(0.01, 0.49, 2)
        r, m = rng.integers(0, 2, 2)
        lam = (-1) ** r * math.log((1 - g) / g) + (-1) ** m * math.log((1 - gm) / gm)
        expected = 0 if lam > 0 else 1
        assert L.map_combine(np.array([r]), np.array([m]), g, gm)[0] == expected


def test_margin_labels_argmax_and_ties():
    out = L.margin_labels(np.array([2.0, -1.0, 0.5, -3.0]), seed=0)
    assert out.tolist() == [1, 0, 1, 0]
    ties = L.margin_labels(np.zeros(400), seed=0)
    assert 0.4 < ties.mean() < 0.6  # ties get a fair coin, not always the same side
    with pytest.raises(ValueError):
        L.margin_labels(np.array([np.nan]), seed=0)


# ----------------------------------------------------------------------------- fusion


def test_calibration_recovers_slope_from_released_labels_only():
    rng = np.random.default_rng(1)
    n, a, b = 20000, 1.5, 0.3
    z = rng.normal(size=n)
    true = (rng.random(n) < 1 / (1 + np.exp(-(a * z + b)))).astype(int)
    g = flip_probability(1.0)
    cal = L.calibrate(z, _rr(true, g, rng), g)
    assert cal.slope / cal.scale == pytest.approx(a, rel=0.15)
    assert cal.intercept == pytest.approx(b, abs=0.15)
    assert cal.signed_root > 10


def test_fusion_falls_back_for_chance_labeler_at_eps_01():
    """A labeler independent of the truth changes no label at eps 0.1, in every seed,
    while the point-estimate rules (PROPS's global MAP, fusion without its bound) are
    fooled in some seeds: the scenario is hard, the bound is what saves it."""
    g = flip_probability(0.1)
    props_fooled = point_fooled = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        true = rng.integers(0, 2, 500)
        released = _rr(true, g, rng)
        margin = rng.normal(size=500)
        dec = L.fuse(margin, released, g, confidence=0.95)
        assert np.array_equal(dec.labels, released)
        assert not dec.trusted.any()
        point_fooled += int((dec.posterior_labels != released).any())
        vote = L.margin_labels(margin, seed)
        est = L.estimate_error_rate(vote, released, g)
        props_fooled += int((L.map_combine(released, vote, g, est.clipped) != released).any())
    assert props_fooled >= 2 and point_fooled >= 2


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_fusion_trusts_strong_labeler(eps):
    g = flip_probability(eps)
    rng = np.random.default_rng(2)
    true = rng.integers(0, 2, 1000)
    released = _rr(true, g, rng)
    margin = 2.0 * (2 * true - 1) + rng.normal(size=1000)  # about 98% accurate
    dec = L.fuse(margin, released, g)
    assert dec.informative
    assert dec.trusted.mean() > 0.5
    acc, acc_rr = (dec.labels == true).mean(), (released == true).mean()
    assert acc > acc_rr + 0.5 * g
    # where it is not trusted, the released label stands
    assert np.array_equal(dec.labels[~dec.trusted], released[~dec.trusted])


def test_fusion_trusts_only_confident_pairs():
    """Trusted pairs are those with large |margin|: the bound is per pair."""
    g = flip_probability(1.0)
    rng = np.random.default_rng(4)
    true = rng.integers(0, 2, 2000)
    released = _rr(true, g, rng)
    margin = 1.0 * (2 * true - 1) + rng.normal(size=2000)
    dec = L.fuse(margin, released, g)
    assert 0 < dec.trusted.mean() < 1
    assert np.abs(margin[dec.trusted]).min() > np.abs(margin[~dec.trusted]).mean()


def test_fusion_at_eps_inf_keeps_released():
    released = np.array([0, 1, 1, 0, 1])
    dec = L.fuse(np.array([5.0, -5, -5, 5, -5]), released, 0.0)
    assert np.array_equal(dec.labels, released) and not dec.trusted.any()


def test_logit_bounds_cover_fitted_line():
    g = flip_probability(1.0)
    rng = np.random.default_rng(6)
    true = rng.integers(0, 2, 500)
    released = _rr(true, g, rng)
    margin = (2 * true - 1) + rng.normal(size=500)
    cal = L.calibrate(margin, released, g)
    lo, hi = L.logit_bounds(cal, margin, released, g, 0.95)
    eta = cal.logit(margin)
    assert (lo <= eta + 1e-9).all() and (hi >= eta - 1e-9).all()
    assert (hi - lo).min() > 0
    lo99, hi99 = L.logit_bounds(cal, margin, released, g, 0.99)
    assert (lo99 <= lo + 1e-6).all() and (hi99 >= hi - 1e-6).all()  # wider at higher confidence


# ----------------------------------------------------------------------------- RR with prior


def test_rr_with_prior_never_consults_label_when_prior_is_confident():
    eps = 1.0
    thr = L.prior_threshold(eps)
    assert thr == pytest.approx(1 - flip_probability(eps))
    p1 = np.array([0.99, 0.01, 0.6, 0.4, thr + 1e-6, 1 - thr - 1e-6, thr - 1e-6])
    asked: list[int] = []

    def release(idx: np.ndarray) -> np.ndarray:
        asked.extend(idx.tolist())
        return np.full(len(idx), 7)  # a marker no prior label can equal

    labels, from_prior = L.rr_with_prior(p1, eps, release)
    assert from_prior.tolist() == [True, True, False, False, True, True, False]
    assert sorted(asked) == [2, 3, 6]  # each asked once, confident ones never
    assert labels.tolist() == [1, 0, 7, 7, 1, 0, 7]


def test_rr_with_prior_stage_without_confidence_asks_everyone_once():
    counts: dict[int, int] = defaultdict(int)

    def release(idx):
        for i in idx:
            counts[int(i)] += 1
        return np.zeros(len(idx), dtype=int)

    _, from_prior = L.rr_with_prior(np.full(10, 0.5), 0.1, release)
    assert not from_prior.any() and dict(counts) == {i: 1 for i in range(10)}
    # eps = inf: RR is exact, so no prior can beat it
    _, from_prior = L.rr_with_prior(np.array([1.0, 0.0]), math.inf, lambda i: np.ones(len(i)))
    assert not from_prior.any()


# ----------------------------------------------------------------------------- debiased loss


def _trl_robust_loss(pc, pr, rc, rr, beta, g):
    """trl 1.16's DPO loss with loss_type="robust", label_smoothing=g, computed by its own
    DPOTrainer._compute_loss on a stand-in model whose log-probs are given."""
    from trl.trainer.dpo_trainer import DPOTrainer

    n = len(pc)
    logps = torch.cat([pc, pr]).unsqueeze(1)

    def model(**_kw):
        return SimpleNamespace(log_probs=logps, entropy=torch.zeros(2 * n, 1),
                               mean_logits=torch.zeros(2 * n, 1),
                               is_top1=torch.zeros(2 * n, 1, dtype=torch.bool), aux_loss=None)

    acc = SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=acc, aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["robust"], loss_weights=[1.0], beta=beta, label_smoothing=g,
        use_weighting=False, _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * n, 2, dtype=torch.long),
              "attention_mask": torch.ones(2 * n, 2, dtype=torch.long),
              "completion_mask": torch.tensor([[0, 1]] * (2 * n)),
              "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    return DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


def test_debiased_loss_equals_trl_robust_loss():
    import trl

    assert trl.__version__ == "1.16.0", "compare against the pinned trl"
    gen = torch.Generator().manual_seed(0)
    for eps in (0.1, 0.5, 2.0):
        g = flip_probability(eps)
        pc, pr, rc, rr = (torch.randn(12, generator=gen, dtype=torch.float64) * 20 for _ in range(4))
        ours = dpo_loss(pc, pr, rc, rr, beta=0.1, flip_rate=g)
        for i in range(12):  # pair by pair
            theirs = _trl_robust_loss(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], 0.1, g)
            assert float(theirs) == pytest.approx(float(ours[i]), rel=1e-10, abs=1e-12)
        assert float(_trl_robust_loss(pc, pr, rc, rr, 0.1, g)) == pytest.approx(
            float(ours.mean()), rel=1e-10)
    # sanity of the comparison: the sigmoid loss differs from the robust one
    assert not torch.allclose(dpo_loss(pc, pr, rc, rr, 0.1), ours)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0, 2.0])
def test_debiased_loss_expectation_over_rr_coin_is_clean_loss(eps):
    """E over the RR coin, enumerated exactly: kept with probability 1-g (the released
    orientation is the true one), flipped with probability g (chosen and rejected swap)."""
    g = flip_probability(eps)
    gen = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(50, generator=gen, dtype=torch.float64) * 10 for _ in range(4))
    clean = dpo_loss(pc, pr, rc, rr, beta=0.1)
    kept = dpo_loss(pc, pr, rc, rr, beta=0.1, flip_rate=g)
    flipped = dpo_loss(pr, pc, rr, rc, beta=0.1, flip_rate=g)
    torch.testing.assert_close((1 - g) * kept + g * flipped, clean, rtol=1e-10, atol=1e-12)
    # the sigmoid loss on RR labels is biased: its expectation is not the clean loss
    biased = (1 - g) * dpo_loss(pc, pr, rc, rr, 0.1) + g * dpo_loss(pr, pc, rr, rc, 0.1)
    assert not torch.allclose(biased, clean)
