"""The label-DP methods end to end on a tiny model and a tiny synthetic pool: label rows and
their invariants, one read of each released label, stage k labelled by M_{k-1}."""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch

from props import label_methods as LM
from props import labeling as L
from props.io import InputError
from props.lm import encode, score_sequences
from props.methods import Context, run_method
from props.privacy.rr import coin_uniforms, flip_probability, randomized_response

torch.set_num_threads(1)  # the suite's tests run single-threaded on shared cores

N_PAIRS = 24
MULTI_STAGE = ("props", "props-fusion", "rr-prior")
ALL = MULTI_STAGE + ("rr-debiased",)


class CountingReleased:
    """Stands in for ctx.released: counts reads per pair and refuses bulk reads, so a
    method that looks at a label twice, or at all labels at once, is caught."""

    def __init__(self, arr: np.ndarray):
        self.arr = np.asarray(arr)
        self.counts: Counter = Counter()

    def __getitem__(self, i):
        if not isinstance(i, (int, np.integer)):
            raise AssertionError(f"bulk read of released labels: {i!r}")
        self.counts[int(i)] += 1
        return self.arr[i]

    def __len__(self) -> int:
        return len(self.arr)

    def __array__(self, *a, **k):
        raise AssertionError("bulk read of released labels")


def _fingerprint(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.fixture()
def make_ctx(tiny_tok, tiny_model, writer_texts):
    from props.models import build_scratch

    def make(eps: float = 0.5, stages: int = 2, score: str = "loglik", with_truth: bool = True,
             with_base: bool = True, prior: str = "implicit_reward",
             n_pairs: int = N_PAIRS) -> Context:
        texts = writer_texts[:3 * n_pairs]
        rows = [{"pair_id": f"p{i:03d}", "prompt": texts[3 * i][:20],
                 "response_a": texts[3 * i + 1][:60], "response_b": texts[3 * i + 2][:30]}
                for i in range(n_pairs)]
        enc_a = [encode(tiny_tok, r["prompt"], r["response_a"], 16, 24) for r in rows]
        enc_b = [encode(tiny_tok, r["prompt"], r["response_b"], 16, 24) for r in rows]
        policy = copy.deepcopy(tiny_model)
        pad = tiny_tok.pad_token_id
        ref_a, ref_b = score_sequences(policy, enc_a, pad), score_sequences(policy, enc_b, pad)
        torch.manual_seed(1)
        base = build_scratch({"hidden_size": 32, "num_layers": 2, "num_heads": 4,
                              "intermediate_size": 64}, tiny_tok)
        base_a, base_b = score_sequences(base, enc_a, pad), score_sequences(base, enc_b, pad)
        true = np.array([i % 2 for i in range(n_pairs)])
        released = randomized_response(true, eps, coin_uniforms([r["pair_id"] for r in rows], 7))
        cfg = {"dpo": {"beta": 0.1, "lr": 1e-3, "epochs": 1, "batch_size": 8, "warmup_steps": 1,
                       "weight_decay": 0.0, "max_grad_norm": 1.0},
               "props": {"stages": stages, "labeler_score": score, "confidence": 0.95,
                         "prior_score": prior}}
        return Context(cfg=cfg, eps=eps, seed=3, policy=policy, tok=tiny_tok, rows=rows,
                       enc_a=enc_a, enc_b=enc_b, ref_a=ref_a, ref_b=ref_b,
                       base_a=base_a if with_base else None, base_b=base_b if with_base else None,
                       true_labels=true if with_truth else None, released=released)

    return make


def _parts(ctx: Context, stages: int = 2) -> list[np.ndarray]:
    return L.partitions(len(ctx.rows), stages, L.partition_seed([r["pair_id"] for r in ctx.rows]))


@pytest.mark.parametrize("method", ALL)
def test_label_rows_and_ledger(make_ctx, method, monkeypatch):
    ctx = make_ctx(eps=0.5)
    released = ctx.released.copy()

    def no_new_noise(*a, **k):
        raise AssertionError("a method drew new RR noise")

    monkeypatch.setattr("props.privacy.rr.randomized_response", no_new_noise)
    monkeypatch.setattr("props.privacy.rr.coin_uniforms", no_new_noise)
    counting = CountingReleased(released)
    ctx.released = counting
    res = run_method(method, ctx)

    rows = res.label_rows
    ids = [r["pair_id"] for r in rows]
    assert sorted(ids) == sorted(r["pair_id"] for r in ctx.rows)  # every pair exactly once
    pos = {r["pair_id"]: i for i, r in enumerate(ctx.rows)}
    for r in rows:
        assert set(r) >= {"pair_id", "stage", "released_label", "model_label", "final_label",
                          "true_label"}
        i = pos[r["pair_id"]]
        assert r["final_label"] in (0, 1)
        assert r["true_label"] == ctx.true_labels[i]
        assert r["released_label"] in (None, int(released[i]))
    # each released label read at most once; a pair whose row shows it was read exactly once
    assert max(counting.counts.values()) == 1
    shown = {pos[r["pair_id"]] for r in rows if r["released_label"] is not None}
    assert set(counting.counts) == shown
    if method != "rr-prior":
        assert shown == set(range(N_PAIRS))

    if method == "rr-debiased":
        assert {r["stage"] for r in rows} == {1}
        assert all(r["final_label"] == r["released_label"] for r in rows)
    else:
        parts = _parts(ctx)
        for k, part in enumerate(parts, start=1):
            got = sorted(pos[r["pair_id"]] for r in rows if r["stage"] == k)
            assert got == part.tolist()
        for r in rows:
            if r["stage"] == 1:  # stage 1: released labels, no labeler
                assert r["final_label"] == r["released_label"] and r["model_label"] is None
            else:
                assert r["model_label"] in (0, 1)
        s = res.label_summary
        assert set(s["accuracy_per_stage"]) == {"1", "2"}
        assert set(s["labeler_accuracy_per_stage"]) == {"2"}
        assert set(s["trusted_share_per_stage"]) == {"1", "2"}
        assert s["trusted_share_per_stage"]["1"] == 0.0
        st2 = [r for r in rows if r["stage"] == 2]
        lab_acc = np.mean([r["model_label"] == r["true_label"] for r in st2])
        assert s["labeler_accuracy_per_stage"]["2"] == pytest.approx(lab_acc)
        fin_acc = np.mean([r["final_label"] == r["true_label"] for r in st2])
        assert s["accuracy_per_stage"]["2"] == pytest.approx(fin_acc)
        if method != "rr-prior":  # rr-prior estimates only on pairs it released through RR
            assert 0 < s["labeler_error_estimate_per_stage"]["2"] < 0.5
        assert len(res.stats["stages"]) == 2
    p = res.privacy
    assert p["unit"] == "label" and p["eps"] == 0.5 and p["delta"] == 0.0
    assert p["mechanism"] == ("randomized-response-with-prior" if method == "rr-prior"
                              else "randomized-response")


def test_props_stage_k_labelled_by_previous_model(make_ctx, monkeypatch):
    """Stage 2 is scored by M_1 (the policy as stage 1 left it, not SFT), its model labels
    are M_1's argmax, and stage 2 continues from M_1 with the SFT reference."""
    ctx = make_ctx(eps=1.0)
    sft_fp = _fingerprint(ctx.policy)
    calls: list[dict] = []
    real_train, real_score = LM.train_dpo, LM.response_logps

    def spy_train(model, a, b, ref_a, ref_b, labels, *args, **kw):
        start = _fingerprint(model)
        out = real_train(model, a, b, ref_a, ref_b, labels, *args, **kw)
        calls.append({"kind": "train", "start": start, "end": _fingerprint(model),
                      "copy": copy.deepcopy(model), "ref_a": ref_a.clone(), "n": len(labels),
                      "settings": args[1], "labels": list(labels)})
        return out

    def spy_score(model, c, idx):
        calls.append({"kind": "score", "fp": _fingerprint(model), "idx": np.array(idx)})
        return real_score(model, c, idx)

    monkeypatch.setattr(LM, "train_dpo", spy_train)
    monkeypatch.setattr(LM, "response_logps", spy_score)
    res = run_method("props", ctx)
    assert [c["kind"] for c in calls] == ["train", "score", "train"]
    t1, sc, t2 = calls
    parts = _parts(ctx)
    assert torch.equal(t1["start"], sft_fp)  # stage 1 from SFT
    assert not torch.equal(t1["end"], sft_fp)
    assert torch.equal(sc["fp"], t1["end"])  # the labeler is M_1
    assert sc["idx"].tolist() == parts[1].tolist()
    assert torch.equal(t2["start"], t1["end"])  # stage 2 continues from M_1
    assert torch.equal(t2["ref_a"], torch.as_tensor(ctx.ref_a)[torch.as_tensor(parts[1])])
    assert t1["settings"] == t2["settings"] == ctx.dpo_settings  # matched hyperparameters
    assert t1["n"] + t2["n"] == N_PAIRS
    # M_1's argmax, recomputed independently from the saved copy of M_1
    pad = ctx.pad_id
    m1 = t1["copy"]
    lp_a = score_sequences(m1, [ctx.enc_a[i] for i in parts[1]], pad).numpy()
    lp_b = score_sequences(m1, [ctx.enc_b[i] for i in parts[1]], pad).numpy()
    by_id = {r["pair_id"]: r for r in res.label_rows}
    model_labels = [by_id[ctx.rows[i]["pair_id"]]["model_label"] for i in parts[1]]
    assert model_labels == (lp_a > lp_b).astype(int).tolist()
    # and the stage-2 labels trained on are the MAP combination of those votes
    released = ctx.released[parts[1]]
    g = flip_probability(1.0)
    est = L.estimate_error_rate(np.array(model_labels), released, g)
    expected = L.map_combine(released, np.array(model_labels), g, est.clipped)
    assert t2["labels"] == expected.tolist()
    assert res.label_summary["labeler_error_estimate_raw_per_stage"]["2"] == pytest.approx(est.raw)


def test_rr_prior_never_reads_release_of_prior_pairs(make_ctx, monkeypatch):
    ctx = make_ctx(eps=0.1, prior="loglik")  # threshold 0.525: margins of a few nats beat it
    read: list[int] = []
    real = LM.read_released

    def spy(c, idx):
        read.extend(int(i) for i in idx)
        return real(c, idx)

    monkeypatch.setattr(LM, "read_released", spy)
    res = run_method("rr-prior", ctx)
    pos = {r["pair_id"]: i for i, r in enumerate(ctx.rows)}
    prior_pairs = {pos[r["pair_id"]] for r in res.label_rows
                   if r["stage"] == 2 and r["released_label"] is None}
    assert prior_pairs, "the test needs pairs released from the prior"
    assert not prior_pairs & set(read)
    assert len(read) == len(set(read)) == N_PAIRS - len(prior_pairs)
    for r in res.label_rows:
        if pos[r["pair_id"]] in prior_pairs:
            assert r["final_label"] == r["model_label"]
    share = res.label_summary["trusted_share_per_stage"]["2"]
    assert share == pytest.approx(len(prior_pairs) / len(_parts(ctx)[1]))


def test_rr_prior_at_eps_inf_reads_every_label(make_ctx):
    ctx = make_ctx(eps=math.inf)
    res = run_method("rr-prior", ctx)
    assert all(r["released_label"] is not None for r in res.label_rows)
    assert all(r["final_label"] == r["true_label"] for r in res.label_rows)


@pytest.mark.parametrize("eps", [0.5, math.inf])
def test_rr_debiased_uses_flip_rate(make_ctx, monkeypatch, eps):
    ctx = make_ctx(eps=eps)
    seen = {}
    real = LM.train_dpo

    def spy(*a, **kw):
        seen.update(kw, labels=list(a[5]))
        return real(*a, **kw)

    monkeypatch.setattr(LM, "train_dpo", spy)
    res = run_method("rr-debiased", ctx)
    assert seen["flip_rate"] == pytest.approx(flip_probability(eps))
    assert seen["labels"] == ctx.released.tolist()
    assert res.stats["flip_rate"] == seen["flip_rate"]


@pytest.mark.parametrize("method", MULTI_STAGE)
def test_eps_inf_trains_on_true_labels(make_ctx, method):
    ctx = make_ctx(eps=math.inf)
    res = run_method(method, ctx)
    assert res.label_summary["accuracy"] == 1.0
    assert res.privacy["mechanism"] == "none"


def test_fusion_labels_follow_trust(make_ctx):
    ctx = make_ctx(eps=2.0)
    res = run_method("props-fusion", ctx)
    st2 = [r for r in res.label_rows if r["stage"] == 2]
    changed = [r for r in st2 if r["final_label"] != r["released_label"]]
    # a label differs from its release only where the labeler was trusted
    share = res.label_summary["trusted_share_per_stage"]["2"]
    assert len(changed) <= round(share * len(st2))
    assert res.label_summary["per_stage"]["2"]["changed"] == len(changed)
    assert res.label_summary["confidence"] == 0.95


def test_three_stages_cover_pool(make_ctx):
    ctx = make_ctx(eps=1.0, stages=3)
    res = run_method("props", ctx)
    stages = Counter(r["stage"] for r in res.label_rows)
    assert sorted(stages) == [1, 2, 3] and sum(stages.values()) == N_PAIRS
    assert set(res.label_summary["labeler_accuracy_per_stage"]) == {"2", "3"}


def test_labeler_scores(make_ctx):
    """Each score on the SFT policy itself: implicit_reward is then exactly 0, base_ratio is
    the SFT-vs-base margin, loglik_norm divides by response length."""
    ctx = make_ctx()
    idx = np.arange(6)
    ll = LM.labeler_margin(ctx, idx, "loglik")
    ref_m = (ctx.ref_a - ctx.ref_b).numpy()[:6]
    np.testing.assert_allclose(ll, ref_m, rtol=1e-6, atol=1e-6)
    # zero up to float32 rounding of log-probs near -100 (one ulp there is 1.5e-5; a
    # recomputation on a loaded machine may take another summation order)
    ulp = np.spacing(np.float32(np.abs(ctx.ref_a.numpy()).max()))
    np.testing.assert_allclose(LM.labeler_margin(ctx, idx, "implicit_reward"), 0.0,
                               atol=8 * ulp)
    base_m = ((ctx.ref_a - ctx.base_a) - (ctx.ref_b - ctx.base_b)).numpy()[:6]
    np.testing.assert_allclose(LM.labeler_margin(ctx, idx, "base_ratio"), base_m, atol=8 * ulp)
    la = np.array([len(ctx.enc_a[i].response_ids) for i in idx])
    lb = np.array([len(ctx.enc_b[i].response_ids) for i in idx])
    norm = ctx.ref_a.numpy()[:6] / la - ctx.ref_b.numpy()[:6] / lb
    np.testing.assert_allclose(LM.labeler_margin(ctx, idx, "loglik_norm"), norm, atol=1e-6)
    with pytest.raises(InputError):
        LM.labeler_margin(make_ctx(with_base=False), idx, "base_ratio")
    with pytest.raises(InputError):
        LM.labeler_margin(ctx, idx, "nonsense")


def test_without_truth_rows_have_no_true_label(make_ctx):
    ctx = make_ctx(with_truth=False, score="implicit_reward")
    res = run_method("props", ctx)
    assert all(r["true_label"] is None for r in res.label_rows)
    assert "accuracy_per_stage" not in res.label_summary
    assert "labeler_accuracy_per_stage" not in res.label_summary


def test_rr_prior_probability_scale(make_ctx):
    """The prior is sigmoid(beta h) for reward margins (DPO's Bradley-Terry model) and
    sigmoid(margin) for likelihood margins; a pair gets the prior's label exactly when that
    probability beats e^eps / (1 + e^eps)."""
    ctx = make_ctx(eps=1.0)  # threshold 0.731 = sigmoid(1)
    idx = np.arange(4)
    margin = np.array([15.0, -15.0, 5.0, -5.0])  # beta = 0.1: sigmoid(1.5), sigmoid(0.5)
    lab = LM.prior_stage(ctx, idx, margin)
    assert lab.trusted.tolist() == [True, True, False, False]
    assert lab.final[:2].tolist() == [1, 0] and lab.released[:2].tolist() == [-1, -1]
    assert lab.released[2:].tolist() == ctx.released[2:4].tolist()
    ctx = make_ctx(eps=1.0, prior="loglik")  # now sigmoid(5) > 0.731 as well
    assert LM.prior_stage(ctx, idx, margin).trusted.all()


def test_fusion_trusts_a_strong_labeler_in_the_method(make_ctx, monkeypatch):
    """With a labeler that is right almost always (its margin is stood in for), stage 2's
    labels move from the released ones towards the truth, and only where trusted."""
    ctx = make_ctx(eps=1.0, n_pairs=120)
    rng = np.random.default_rng(0)
    truth = ctx.true_labels

    def strong_margins(c, idx, kinds):
        m = 4.0 * (2 * truth[idx] - 1) + rng.normal(size=len(idx))
        return {k: m for k in kinds}

    monkeypatch.setattr(LM, "labeler_margins", strong_margins)
    res = run_method("props-fusion", ctx)
    st2 = [r for r in res.label_rows if r["stage"] == 2]
    changed = [r for r in st2 if r["final_label"] != r["released_label"]]
    assert changed and all(r["final_label"] == r["true_label"] for r in changed)
    s = res.label_summary
    assert s["per_stage"]["2"]["labeler_informative"]
    assert s["trusted_share_per_stage"]["2"] >= len(changed) / len(st2) > 0
    rel_acc = np.mean([r["released_label"] == r["true_label"] for r in st2])
    assert s["accuracy_per_stage"]["2"] > rel_acc


def test_margin_accuracy_truth_table():
    truth = np.array([1, 0, 1, 0, 1, 0])
    margin = np.array([2.0, -1.0, -3.0, 0.5, 0.0, 0.0])
    # right, right, wrong, wrong, tie, tie
    assert LM.margin_accuracy(margin, truth) == pytest.approx((1 + 1 + 0 + 0 + 0.5 + 0.5) / 6)


@pytest.mark.parametrize("score", ["loglik", "implicit_reward"])
def test_stage2_reports_every_labeler_score(make_ctx, score):
    """Stage 2 records how each labeler score would have labelled it; the one in use
    agrees with the labeler's own accuracy (its votes are the margin's sign)."""
    ctx = make_ctx(eps=0.5, score=score)
    res = run_method("props", ctx)
    st = res.label_summary["per_stage"]
    assert "labeler_accuracy_by_score" not in st["1"]
    by = st["2"]["labeler_accuracy_by_score"]
    assert set(by) == set(LM.LABELER_SCORES)
    assert by[score] == pytest.approx(st["2"]["labeler_accuracy"])
    assert all(0.0 <= v <= 1.0 for v in by.values())
