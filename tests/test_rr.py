"""Randomized response: the flip rate is 1/(1+e^eps), every label is released once."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from props.privacy.rr import coin_uniforms, flip_probability, randomized_response


@pytest.mark.parametrize("eps,g", [(0.1, 0.475), (0.5, 0.378), (1, 0.269), (2, 0.119)])
def test_flip_probability_matches_the_paper(eps, g):
    assert flip_probability(eps) == pytest.approx(g, abs=5e-4)
    # likelihood ratio of the mechanism is exactly e^eps
    assert (1 - flip_probability(eps)) / flip_probability(eps) == pytest.approx(math.exp(eps))


def test_no_flips_at_infinity():
    labels = np.array([0, 1] * 50)
    out = randomized_response(labels, math.inf, coin_uniforms([str(i) for i in range(100)], 1))
    assert (out == labels).all()


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0, 2.0])
def test_measured_flip_rate(eps):
    n = 20000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    out = randomized_response(labels, eps, coin_uniforms([str(i) for i in range(n)], 7))
    flips = int((out != labels).sum())
    assert binomtest(flips, n, flip_probability(eps)).pvalue > 1e-3
    # flips are independent of the label value
    for v in (0, 1):
        m = labels == v
        assert binomtest(int((out[m] != v).sum()), int(m.sum()),
                         flip_probability(eps)).pvalue > 1e-3


def test_release_is_seeded_and_coupled_across_eps():
    ids = [str(i) for i in range(1000)]
    u1, u2 = coin_uniforms(ids, 5), coin_uniforms(ids, 5)
    assert (u1 == u2).all()
    assert not (coin_uniforms(ids, 6) == u1).all()
    labels = np.zeros(1000, dtype=int)
    strong = randomized_response(labels, 2.0, u1)
    weak = randomized_response(labels, 0.1, u1)
    assert (weak[strong == 1] == 1).all()  # a flip at eps 2 is also a flip at eps 0.1


def test_bad_input():
    with pytest.raises(ValueError):
        flip_probability(0)
    with pytest.raises(ValueError):
        randomized_response(np.array([0, 2]), 1.0, np.array([0.5, 0.5]))
