"""DP-SGD DPO: per-pair clipping against a naive loop, the clipping bound, the no-privacy
limit against the non-private step, noise-only empty batches, and the privacy ledger
against a fresh accountant.  Tiny Llama and GPT-2 models, CPU, float64 where gradients
are compared."""

from __future__ import annotations

import copy
import math
import random
import warnings

import numpy as np
import pytest
import torch

from props.config import DEFAULTS, ConfigError
from props.dpo import dpo_loss, pair_logps
from props.dpsgd import (
    DPSGDSettings,
    PairData,
    PrivatePairTrainer,
    choose_grad_sample_mode,
    conv1d_grad_sample,
    conv1d_norm_sample,
    epsilon_of,
    freeze_input_embeddings,
    index_loader,
    pack_pairs,
    packed_logps,
    rms_norm_grad_sample,
    run_steps,
    train_dpsgd,
)
from props.io import InputError
from props.lm import Encoded, collate, score_sequences, sequence_logps
from props.methods import Context, run_method

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
V = 300  # vocabulary of the random-token models


def gpt2(vocab: int = V):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                     eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


def llama(vocab: int = V):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg)


def neox(vocab: int = V):
    """Pythia's architecture (the paper config's pythia-1b)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=256,
                        hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=1, eos_token_id=2,
                        pad_token_id=0)
    return GPTNeoXForCausalLM(cfg)


MODELS = {"llama": llama, "gpt2": gpt2, "neox": neox}


def random_pairs(n: int, seed: int = 0, vocab: int = V, bos: int = 1, eos: int = 2,
                 differing_prompt: bool = True):
    rng = random.Random(seed)
    chosen, rejected = [], []
    for i in range(n):
        p = [bos] + [rng.randrange(3, vocab) for _ in range(rng.randint(2, 6))]
        q = [bos] + [rng.randrange(3, vocab) for _ in range(3)] if differing_prompt and i == 0 else p
        for out, prompt in ((chosen, p), (rejected, q)):
            out.append(Encoded(prompt, [rng.randrange(3, vocab) for _ in range(rng.randint(1, 7))]
                               + [eos]))
    g = torch.Generator().manual_seed(seed)
    ref_c = -30 + torch.randn(n, generator=g, dtype=torch.float64)
    ref_r = -30 + torch.randn(n, generator=g, dtype=torch.float64)
    return PairData(chosen, rejected, ref_c, ref_r)


def naive_pair_grads(model, data: PairData, beta: float = 0.1) -> list[list[torch.Tensor]]:
    """Each pair's DPO-loss gradient, one pair at a time, through props.lm's separate
    (unpacked) sequences."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    out = []
    for i in range(len(data)):
        lp = sequence_logps(model, collate([data.chosen[i], data.rejected[i]], 0))
        loss = dpo_loss(lp[:1], lp[1:], data.ref_chosen[i:i + 1].to(lp),
                        data.ref_rejected[i:i + 1].to(lp), beta).sum()
        out.append(list(torch.autograd.grad(loss, params)))
    return out


def norm(gs) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in gs)))


def private_sgd(model, data, mode, *, clip, sigma=0.0, expected=1.0, lr=1.0, seed=0,
                accountant=None, rate=None):
    params = [p for p in model.parameters() if p.requires_grad]
    return PrivatePairTrainer(model, data, 0, torch.optim.SGD(params, lr=lr), beta=0.1,
                              max_grad_norm=clip, noise_multiplier=sigma,
                              expected_batch_size=expected, mode=mode, noise_seed=seed,
                              accountant=accountant, sample_rate=rate)


# ----------------------------------------------------------------------------- packing


@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_packed_rows_give_the_log_probs_of_separate_sequences(arch):
    model = MODELS[arch]().double().eval()
    data = random_pairs(6)
    assert data.chosen[0].prompt_ids != data.rejected[0].prompt_ids  # unshared fallback too
    batch = pack_pairs(data.chosen, data.rejected, 0, torch.float64)
    # one row per pair, the shared prompt stored once
    assert batch["input_ids"].shape[0] == 6
    assert batch["input_ids"].shape[1] < max(len(c.ids) + len(r.ids)
                                             for c, r in zip(data.chosen, data.rejected))
    pc, pr = packed_logps(model, batch)
    ref = sequence_logps(model, collate(data.chosen + data.rejected, 0))
    torch.testing.assert_close(pc, ref[:6].to(pc), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pr, ref[6:].to(pr), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- clipping


CASES = [("llama", "hooks", False), ("llama", "functorch", False), ("llama", "ghost", True),
         ("gpt2", "hooks", False), ("gpt2", "ghost", True), ("neox", "hooks", False)]


@pytest.mark.parametrize("arch,mode,freeze", CASES)
def test_per_pair_clipped_sum_equals_naive_loop(arch, mode, freeze):
    model = MODELS[arch]().double()
    if freeze:
        freeze_input_embeddings(model)
    data = random_pairs(7)
    naive = naive_pair_grads(model, data)
    norms = sorted(norm(g) for g in naive)
    clip = (norms[2] + norms[3]) / 2  # some pairs clipped, some not
    expected = [sum(min(1.0, clip / norm(g)) * g[j] for g in naive) for j in range(len(naive[0]))]
    params = [p for p in model.parameters() if p.requires_grad]
    tr = private_sgd(model, data, mode, clip=clip)
    # one logical batch of all pairs, in physical batches of 3 (BatchMemoryManager)
    stats = run_steps(tr, index_loader(len(data), batches=[list(range(7))]), 1, 3)
    assert stats["steps"] == 1
    # the pair is the unit: clipping chosen and rejected separately, or clipping the
    # batch as a whole, would give another sum once some pairs exceed the bound
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-7)
    tr.close()


@pytest.mark.parametrize("arch,mode,freeze", [("llama", "hooks", False), ("gpt2", "ghost", True)])
def test_no_pair_contributes_more_than_the_clipping_norm(arch, mode, freeze):
    base = MODELS[arch]().double()
    if freeze:
        freeze_input_embeddings(base)
    data = random_pairs(5, seed=3)
    raw = [norm(g) for g in naive_pair_grads(base, data)]
    clip = sorted(raw)[2]
    assert max(raw) > clip
    for i in range(len(data)):
        model = copy.deepcopy(base)
        tr = private_sgd(model, data, mode, clip=clip)
        run_steps(tr, index_loader(len(data), batches=[[i]]), 1, 4)
        contrib = norm([p.grad for p in model.parameters() if p.requires_grad])
        assert contrib <= clip * (1 + 1e-6)
        assert contrib == pytest.approx(min(raw[i], clip), rel=1e-4)
        tr.close()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_no_noise_and_huge_clip_is_the_nonprivate_step(arch):
    """sigma = 0, C = 1e6: one DP-SGD step (two physical batches) moves the parameters
    exactly as props.dpo's loss (mean DPO loss of the batch, one pass over 2B rows) with
    the same plain SGD step."""
    base = MODELS[arch]().double()
    data = random_pairs(5, seed=7)
    idx = list(range(5))
    ref = copy.deepcopy(base).train()
    pc, pr = pair_logps(ref, data.chosen, data.rejected, 0)
    loss = dpo_loss(pc, pr, data.ref_chosen.to(pc), data.ref_rejected.to(pc), 0.1).mean()
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    opt.zero_grad()
    loss.backward()
    opt.step()

    model = copy.deepcopy(base)
    tr = private_sgd(model, data, "hooks", clip=1e6, expected=5.0, lr=0.5)
    run_steps(tr, index_loader(5, batches=[idx]), 1, 2)
    tr.close()
    moved = 0.0
    for (name, p), q, b in zip(model.named_parameters(), ref.parameters(), base.parameters()):
        # props.lm takes log-softmax in float32, hence the 1e-7 (moves are > 1e-4)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
        moved = max(moved, float((q - b).abs().max()))
    assert moved > 1e-4  # the step did something


def test_empty_batch_is_a_noise_only_step():
    data = random_pairs(4)
    base = llama().double()
    # no noise: nothing moves, but the step counts for the accountant
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism="rdp")
    model = copy.deepcopy(base)
    tr = private_sgd(model, data, "hooks", clip=1.0, accountant=acc, rate=0.25)
    stats = run_steps(tr, index_loader(4, batches=[[]]), 1, 2)
    assert stats["steps"] == 1 and stats["empty_batches"] == 1
    assert acc.history == [(0.0, 0.25, 1)]
    for p, b in zip(model.parameters(), base.parameters()):
        assert torch.equal(p, b)
    # with noise: each coordinate moves by N(0, (sigma C / expected batch)^2) * lr
    for mode in ("hooks", "ghost"):
        model = copy.deepcopy(base)
        if mode == "ghost":
            freeze_input_embeddings(model)
        tr = private_sgd(model, data, mode, clip=0.5, sigma=2.0, expected=2.0, seed=1)
        run_steps(tr, index_loader(4, batches=[[]]), 1, 2)
        delta = torch.cat([(b - p).flatten() for p, b in zip(model.parameters(), base.parameters())
                           if p.requires_grad])
        assert delta.std().item() == pytest.approx(2.0 * 0.5 / 2.0, rel=0.05)


def test_poisson_loader_rate_and_empty_batches():
    loader = index_loader(10, 0.1, seed=5)
    sizes = [len(b[0]) for _ in range(30) for b in loader]  # 30 x int(1/q) = 300 draws
    assert len(sizes) == 300
    assert np.mean(sizes) == pytest.approx(1.0, abs=0.2)
    assert sizes.count(0) > 50  # P(empty) = 0.9^10 = 0.35
    # the training loop takes empty batches as noise-only steps
    model = llama().double()
    tr = private_sgd(model, random_pairs(10), "hooks", clip=1.0, sigma=1.0, expected=1.0)
    stats = run_steps(tr, index_loader(10, 0.1, seed=5), 12, 4)
    assert stats["steps"] == 12 and stats["empty_batches"] >= 1


# ----------------------------------------------------------------------------- layer rules


def test_layer_rules_match_functorch():
    from opacus.grad_sample.functorch import ft_compute_per_sample_gradient
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    norm_layer = LlamaRMSNorm(8).double()
    norm_layer.weight.data.uniform_(0.5, 1.5)
    conv = Conv1D(5, 8).double()
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    for layer, rule, out_dim in ((norm_layer, rms_norm_grad_sample, 8), (conv, conv1d_grad_sample, 5)):
        g = torch.randn(3, 4, out_dim, dtype=torch.float64)
        ours = rule(layer, [x], g)
        ref = ft_compute_per_sample_gradient(layer, [x], g)
        assert set(ours) == set(ref)
        for p in ours:
            torch.testing.assert_close(ours[p], ref[p])
        if layer is conv:
            norms = conv1d_norm_sample(layer, [x], g)
            for p in norms:
                torch.testing.assert_close(norms[p], ref[p].flatten(1).norm(dim=1))


# ----------------------------------------------------------------------------- the method


def make_ctx(tok, model, *, n=24, eps=1.0, accountant="prv", freeze=False, mode="auto",
             batch_size=8, epochs=1.0):
    rng = random.Random(1)
    vocab = len(tok)
    enc_a, enc_b = [], []
    for _ in range(n):
        p = [tok.bos_token_id] + [rng.randrange(3, vocab) for _ in range(rng.randint(3, 8))]
        enc_a.append(Encoded(p, [rng.randrange(3, vocab) for _ in range(rng.randint(2, 8))]
                             + [tok.eos_token_id]))
        enc_b.append(Encoded(p, [rng.randrange(3, vocab) for _ in range(rng.randint(2, 8))]
                             + [tok.eos_token_id]))
    ref_a = score_sequences(model, enc_a, tok.pad_token_id)
    ref_b = score_sequences(model, enc_b, tok.pad_token_id)
    labels = np.array([rng.randint(0, 1) for _ in range(n)])
    cfg = copy.deepcopy({k: DEFAULTS[k] for k in ("dpo", "dpsgd", "privacy")})
    cfg["dpo"].update(batch_size=batch_size, epochs=epochs, lr=1e-3, warmup_steps=0)
    cfg["dpsgd"].update(accountant=accountant, max_physical_batch_size=3, grad_sample_mode=mode)
    cfg["model"] = {"name": "tiny", "freeze_embeddings": freeze}
    return Context(cfg=cfg, eps=eps, seed=0, policy=model, tok=tok,
                   rows=[{"pair_id": f"p{i}"} for i in range(n)], enc_a=enc_a, enc_b=enc_b,
                   ref_a=ref_a, ref_b=ref_b, base_a=None, base_b=None, true_labels=labels,
                   released=labels.copy())


LEDGER_KEYS = {"mechanism", "unit", "eps_target", "eps_spent", "delta", "accountant",
               "noise_multiplier", "sampling_rate", "steps", "max_grad_norm", "eps"}


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_ledger_eps_is_the_accountants_and_within_target(tiny_tok, tiny_model, accountant):
    before = [p.detach().clone() for p in tiny_model.parameters()]
    ctx = make_ctx(tiny_tok, tiny_model, eps=1.0, accountant=accountant)
    res = run_method("dpsgd", ctx)
    led = res.privacy
    assert LEDGER_KEYS <= set(led)
    assert (led["mechanism"], led["unit"], led["accountant"]) == ("dp-sgd", "pair", accountant)
    assert led["eps"] == led["eps_target"] == 1.0 and led["delta"] == 1e-5
    assert led["sampling_rate"] == pytest.approx(8 / 24)
    assert led["steps"] == round(1.0 / (8 / 24)) == res.stats["steps"]
    assert led["grad_sample_mode"] == "hooks"  # tied trainable embeddings: no ghost
    recomputed = epsilon_of(led["noise_multiplier"], led["sampling_rate"], led["steps"],
                            led["delta"], led["accountant"])
    assert led["eps_spent"] == pytest.approx(recomputed, rel=1e-9)
    # within the target, and the noise is not wastefully large (opacus' search tolerance)
    assert 1.0 - 0.05 <= led["eps_spent"] <= 1.0
    # the returned policy is the plain model, trained
    pol = res.policy
    assert type(pol).__name__ == "LlamaForCausalLM" and not hasattr(pol, "_module")
    assert not any(hasattr(p, "grad_sample") for p in pol.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(pol.parameters(), before))
    assert res.label_summary["n_pairs"] == 24 and res.label_summary["accuracy"] == 1.0
    assert all(r["released_label"] is None for r in res.label_rows)


def test_eps_inf_clips_without_noise(tiny_tok, tiny_model):
    res = run_method("dpsgd", make_ctx(tiny_tok, tiny_model, eps=math.inf))
    led = res.privacy
    assert led["noise_multiplier"] == 0.0 and math.isinf(led["eps_spent"])
    assert math.isinf(led["eps_target"]) and led["steps"] == 3


def test_frozen_embeddings_and_explicit_ghost_mode(tiny_tok, tiny_model):
    emb = tiny_model.get_input_embeddings().weight.detach().clone()
    ctx = make_ctx(tiny_tok, tiny_model, eps=math.inf, freeze=True, mode="ghost")
    res = run_method("dpsgd", ctx)
    assert res.privacy["grad_sample_mode"] == "ghost"
    assert res.privacy["layer_modes"].get("ghost-norm", 0) > 0
    assert res.privacy["frozen_embedding_parameters"] == emb.numel()
    assert torch.equal(res.policy.get_input_embeddings().weight, emb)
    assert all(p.requires_grad for p in res.policy.parameters())  # plain model again


def test_auto_mode_takes_hooks_unless_per_pair_gradients_overflow(tiny_model):
    per_pair = sum(p.numel() * 4 for p in tiny_model.parameters())
    # tied trainable embeddings: ghost clipping is not correct, whatever the memory
    assert choose_grad_sample_mode(tiny_model, "auto", 64, budget_bytes=per_pair) == "hooks"
    freeze_input_embeddings(tiny_model)
    assert choose_grad_sample_mode(tiny_model, "auto", 1, budget_bytes=per_pair) == "hooks"
    assert choose_grad_sample_mode(tiny_model, "auto", 64, budget_bytes=per_pair) == "ghost"
    assert choose_grad_sample_mode(tiny_model, "functorch") == "functorch"


def test_gpt2_trains_with_dpsgd():
    model = gpt2()
    data = random_pairs(12, differing_prompt=False)
    cfg = {"dpo": {**DEFAULTS["dpo"], "batch_size": 4, "epochs": 1, "warmup_steps": 0},
           "dpsgd": {**DEFAULTS["dpsgd"], "max_physical_batch_size": 2},
           "privacy": {"delta": 1e-5}, "model": {"freeze_embeddings": False}}
    before = [p.detach().clone() for p in model.parameters()]
    policy, led, stats = train_dpsgd(model, data, 0, DPSGDSettings.from_config(cfg), math.inf,
                                     seed=0)
    assert led["steps"] == 3 and led["grad_sample_mode"] == "hooks"
    assert led["layer_modes"] == {"hooks": 16}  # Conv1D and LayerNorm by closed-form rules
    assert stats["steps"] == 3
    assert any(not torch.equal(p, b) for p, b in zip(policy.parameters(), before))


def test_bad_settings_are_one_line_errors(tiny_tok, tiny_model):
    cfg = {"dpo": DEFAULTS["dpo"], "dpsgd": {**DEFAULTS["dpsgd"], "accountant": "gdp"},
           "privacy": {"delta": 1e-5}}
    with pytest.raises(ConfigError, match="accountant"):
        DPSGDSettings.from_config(cfg)
    with pytest.raises(ConfigError, match="ghost"):
        choose_grad_sample_mode(tiny_model, "ghost")  # tied trainable embeddings
    ctx = make_ctx(tiny_tok, tiny_model, n=24)
    ctx.cfg["privacy"]["delta"] = 0.05  # not below 1/n
    with pytest.raises(InputError, match="delta"):
        run_method("dpsgd", ctx)
