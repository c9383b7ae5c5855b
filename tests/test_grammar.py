"""The embedded task: exact grammar, gold reward that degenerate text cannot win."""

import random

import pytest

from props.task.build import bt_label, build_splits
from props.task.grammar import VOCAB, Writer, gold_reward, is_sentence, is_well_formed


@pytest.mark.parametrize("s,ok", [
    ("the film is good", True),
    ("the film is not very good", True),
    ("a very long boring movie hates my hero", True),
    ("our cast fails badly", True),
    ("the film good", False),            # no verb
    ("film is good", False),             # no determiner
    ("the film is not", False),          # dangling negation
    ("the the film is good", False),
    ("the very film is good", False),    # intensifier without adjective
    ("the film is good good", False),
    ("joy gift pleasure", False),
])
def test_recogniser(s, ok):
    assert is_sentence(s.split()) is ok


def test_writer_output_is_always_well_formed():
    w = Writer(random.Random(1))
    for _ in range(500):
        assert is_well_formed(w.review())
        assert is_sentence(w.prompt().split()[:-1])


def test_reward_rewards_sentiment_and_punishes_degenerate_text():
    good = gold_reward("the superb hero loves the perfect finale .").reward
    bad = gold_reward("the awful film ruins the boring ending .").reward
    assert good > 0.8 and bad < -0.5
    # strings of positive words, invented words, fragments and repeats all lose
    assert gold_reward("great great wonderful superb").reward == -1.0
    assert gold_reward("the film is greatest .").reward == -1.0
    assert gold_reward("").reward == -1.0
    once = gold_reward("the film is great .").reward
    twice = gold_reward("the film is great . the film is great .").reward
    assert twice < once  # a repeated sentence scores -1: repetition cannot farm reward
    assert gold_reward("the film is great . the film").reward < once  # trailing fragment
    # averaging: adding a neutral sentence dilutes rather than adds
    assert gold_reward("the film is great . the film ends .").reward < once


def test_vocab_is_closed():
    assert "." in VOCAB and len(VOCAB) == len(set(VOCAB))


def test_bt_label_follows_its_probability():
    rng = random.Random(0)
    n = 20000
    ones = sum(bt_label(0.3, 0.1, 0.2, rng.random()) for _ in range(n))
    p = 1 / (1 + 2.718281828459045 ** (-(0.3 - 0.1) / 0.2))
    assert abs(ones / n - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_splits_are_disjoint_and_seeded():
    spec = {"seed": 3, "n_corpus": 50, "n_sft": 40, "n_pool": 60, "n_eval": 30,
            "bt_temperature": 0.2}
    a, b = build_splits(spec), build_splits(spec)
    assert a == b
    ev = {r["prompt"] for r in a["eval"]}
    pool = {r["prompt"] for r in a["pool_prompts"]}
    sft = {r["prompt"] for r in a["sft"]}
    assert not ev & pool and not ev & sft and not pool & sft
    assert len(a["pool_prompts"]) == 60 and len({r["pair_id"] for r in a["pool_prompts"]}) == 60
    for r in a["sft"]:
        assert r["chosen"] != r["rejected"] or gold_reward(r["chosen"]) == gold_reward(r["rejected"])
