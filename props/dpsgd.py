"""DPO trained with DP-SGD (opacus): an (eps, delta) guarantee for whole preference pairs.

Why it is built this way:

* The privacy unit is a pair (prompt, both responses, label).  One pair's gradient is the
  gradient of one DPO loss term, which depends on *both* responses, so clipping must see
  the pair as one sample.  Each pair is packed into one row,
  ``[prompt | chosen response | rejected response]``, with a block attention mask (each
  response sees the prompt and itself, never the other response) and position ids that
  start both responses where the prompt ends.  The row gives exactly the log-probs of two
  separate forward passes (tested), so every opacus per-sample mode (hooks, functorch,
  ghost clipping) sees one sample per pair: no reliance on the order in which autograd
  runs the backward hooks of two forwards (which ghost clipping refuses anyway), and the
  shared prompt is computed once instead of twice.
* Poisson sampling with rate q = batch_size / n (opacus ``DPDataLoader``); a logical batch
  is split into physical ones by opacus ``BatchMemoryManager``, so the logical batch size
  does not set memory; an empty logical batch is still a step (noise only), as the
  accountant assumes.
* Per-pair gradients by opacus hooks mode by default: measured on CPU it beats ghost
  clipping (two backward passes) and functorch on the tiny Llama and on SmolLM2-135M;
  ghost clipping is taken when hooks' per-pair gradients would not fit in memory and the
  model has no tied trainable weights (see `choose_grad_sample_mode`).  Llama RMSNorm
  and GPT-2 Conv1D get closed-form per-sample rules instead of functorch's vmap.
* The noise multiplier is calibrated with opacus ``get_noise_multiplier`` for the planned
  number of steps; the accountant the optimizer steps is the one whose eps is reported,
  and the ledger holds everything needed to recompute it.
* The opacus pieces (grad-sample module, DP optimizer, data loader, accountant) are
  assembled here rather than by ``PrivacyEngine.make_private``, because make_private
  fixes the sampling rate to 1 / len(loader) = 1 / ceil(n / batch_size) instead of
  batch_size / n, and the accountant must be told the rate the sampler really uses.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from props.config import ConfigError
from props.dpo import dpo_loss, orient
from props.io import InputError
from props.lm import Encoded, cosine_schedule
from props.methods import Context, Result, label_rows, register, summarise_labels
from props.runtime import derive_seed

GRAD_SAMPLE_MODES = ("auto", "ghost", "hooks", "functorch")
ACCOUNTANTS = ("prv", "rdp")


# ----------------------------------------------------------------------------- packing


def pack_pairs(chosen: Sequence[Encoded], rejected: Sequence[Encoded], pad_id: int,
               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One row per pair: shared prompt, chosen response, rejected response.

    Returns input ids, position ids, a 4-D additive attention mask (0 = visible, dtype
    minimum = hidden, the format transformers takes as a ready-made mask), and for every
    row position the index of the position whose logits predict it (`source`) and masks
    of the chosen / rejected response tokens.  When the two prompts of a pair differ, the
    row holds the two full sequences instead (nothing shared).
    """
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError("pack_pairs needs as many chosen as rejected sequences, at least one")
    rows = []
    for c, r in zip(chosen, rejected):
        shared = c.prompt_ids if c.prompt_ids == r.prompt_ids else []
        c_rest = c.response_ids if shared else c.ids
        r_rest = r.response_ids if shared else r.ids
        c_mask = [1] * len(c.response_ids) if shared else c.loss_mask
        r_mask = [1] * len(r.response_ids) if shared else r.loss_mask
        rows.append((shared, c_rest, r_rest, c_mask, r_mask))
    length = max(len(s) + len(c) + len(r) for s, c, r, _, _ in rows)
    b = len(rows)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    pos = torch.zeros((b, length), dtype=torch.long)
    seg = torch.full((b, length), -1, dtype=torch.long)  # -1 pad, 0 prompt, 1 chosen, 2 rejected
    src = torch.zeros((b, length), dtype=torch.long)
    mask_c = torch.zeros((b, length), dtype=torch.bool)
    mask_r = torch.zeros((b, length), dtype=torch.bool)
    for i, (s, c, r, cm, rm) in enumerate(rows):
        p, lc, lr = len(s), len(c), len(r)
        ids[i, :p + lc + lr] = torch.tensor(s + c + r)
        pos[i, :p + lc] = torch.arange(p + lc)
        pos[i, p + lc:p + lc + lr] = torch.arange(p, p + lr)
        seg[i, :p], seg[i, p:p + lc], seg[i, p + lc:p + lc + lr] = 0, 1, 2
        src[i] = torch.arange(length) - 1
        if p:  # both responses continue the prompt
            src[i, p + lc] = p - 1
        mask_c[i, p:p + lc] = torch.tensor(cm, dtype=torch.bool)
        mask_r[i, p + lc:p + lc + lr] = torch.tensor(rm, dtype=torch.bool)
    # a position never predicts the first token of the row
    mask_c[:, 0] = mask_r[:, 0] = False
    src.clamp_(min=0)
    idx = torch.arange(length)
    sq, sk = seg[:, :, None], seg[:, None, :]
    visible = (idx[None, :, None] >= idx[None, None, :]) & (sk >= 0) & (sq >= 0) & (
        (sk == 0) | (sk == sq))
    visible |= torch.eye(length, dtype=torch.bool)[None]  # padding sees itself: no empty row
    attn = torch.zeros((b, 1, length, length), dtype=dtype)
    attn.masked_fill_(~visible[:, None], torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": attn, "source": src,
            "mask_chosen": mask_c, "mask_rejected": mask_r}


def packed_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of the chosen and rejected response of every packed row,
    from one forward pass."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"])
    logits = out.logits
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    b, length, vocab = logp.shape
    flat = batch["source"] * vocab + batch["input_ids"]
    lp = logp.reshape(b, length * vocab).gather(1, flat)
    return ((lp * batch["mask_chosen"]).sum(-1), (lp * batch["mask_rejected"]).sum(-1))


# ----------------------------------------------------------------------------- layer rules
#
# opacus has closed-form per-sample rules for torch's own layers; transformers' Llama
# RMSNorm and GPT-2 Conv1D would otherwise fall back to functorch (a vmap over the layer per
# physical batch, a fifth of a tiny Llama's step).  Their per-sample gradients are short
# formulas, checked against functorch in the tests.


def rms_norm_grad_sample(layer, activations: list[torch.Tensor],
                         backprops: torch.Tensor) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Llama RMSNorm, y = w * (x / rms(x)): the weight's per-sample gradient is the
    output gradient times the normalised input, summed over positions."""
    x = activations[0]
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + layer.variance_epsilon)).to(x.dtype)
    gs = (backprops * normed).to(layer.weight.dtype)
    return {layer.weight: gs.reshape(gs.shape[0], -1, gs.shape[-1]).sum(1)}


def conv1d_grad_sample(layer, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[torch.nn.Parameter, torch.Tensor]:
    """GPT-2 Conv1D, y = x W + b with W of shape (in, out)."""
    a = activations[0].to(backprops.dtype)
    out = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", a, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...j->nj", backprops)
    return out


def conv1d_norm_sample(layer, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradient norms of GPT-2 Conv1D without forming the gradients (ghost
    clipping): ||sum_t a_t g_t^T||^2 = sum_{t,s} (a_t . a_s)(g_t . g_s)."""
    a = activations[0].to(backprops.dtype)
    n = a.shape[0]
    a, g = a.reshape(n, -1, a.shape[-1]), backprops.reshape(n, -1, backprops.shape[-1])
    gg = torch.bmm(g, g.transpose(1, 2))
    out = {}
    if layer.weight.requires_grad:
        aa = torch.bmm(a, a.transpose(1, 2))
        out[layer.weight] = (aa * gg).sum((1, 2)).clamp(min=0).sqrt()
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = gg.sum((1, 2)).clamp(min=0).sqrt()
    return out


def register_layer_rules() -> None:
    """Teach opacus the layers above (idempotent)."""
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.utils import register_grad_sampler, register_norm_sampler
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.pytorch_utils import Conv1D

    if LlamaRMSNorm not in GradSampleModule.GRAD_SAMPLERS:
        register_grad_sampler(LlamaRMSNorm)(rms_norm_grad_sample)
    if Conv1D not in GradSampleModule.GRAD_SAMPLERS:
        register_grad_sampler(Conv1D)(conv1d_grad_sample)
        register_norm_sampler(Conv1D)(conv1d_norm_sample)


# ----------------------------------------------------------------------------- data


@dataclass
class PairData:
    """The oriented pool: chosen / rejected sequences and their reference log-probs."""

    chosen: list[Encoded]
    rejected: list[Encoded]
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor

    @classmethod
    def from_labels(cls, enc_a: Sequence[Encoded], enc_b: Sequence[Encoded], ref_a: torch.Tensor,
                    ref_b: torch.Tensor, labels: Sequence[int]) -> PairData:
        chosen, rejected = orient(enc_a, enc_b, labels)
        lab = torch.as_tensor(list(labels)) == 1
        return cls(chosen, rejected, torch.where(lab, ref_a, ref_b).float(),
                   torch.where(lab, ref_b, ref_a).float())

    def __len__(self) -> int:
        return len(self.chosen)


# ----------------------------------------------------------------------------- opacus pieces


def _tied_trainable(model: torch.nn.Module) -> bool:
    """Whether a trainable parameter belongs to two modules (tied input/output embeddings):
    ghost clipping cannot handle a parameter used twice in one forward."""
    seen: set[int] = set()
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            if p.requires_grad:
                if id(p) in seen:
                    return True
                seen.add(id(p))
    return False


# Per-pair gradients that hooks mode may hold for one physical batch before `auto` switches
# to ghost clipping (which holds none).
PER_PAIR_GRADIENT_BUDGET = 2 * 2**30


def choose_grad_sample_mode(model: torch.nn.Module, requested: str = "auto",
                            physical_batch: int = 1,
                            budget_bytes: int = PER_PAIR_GRADIENT_BUDGET) -> str:
    """The opacus per-sample mode to run.

    Measured on CPU (`python -m props.speed dpsgd`), hooks (per-pair gradients
    materialised, one backward pass) beat ghost clipping (per-pair norms from activations
    and output gradients, then a second backward pass) on the tiny Llama and on
    SmolLM2-135M alike, so `auto` takes hooks, unless the per-pair gradients of one
    physical batch would exceed `budget_bytes` and ghost clipping is correct for the
    model (no trainable parameter shared between two modules, e.g. tied embeddings).
    """
    if requested not in GRAD_SAMPLE_MODES:
        raise ConfigError(f"config: dpsgd.grad_sample_mode must be one of "
                          f"{', '.join(GRAD_SAMPLE_MODES)}, got {requested!r}")
    tied = _tied_trainable(model)
    if requested == "ghost" and tied:
        raise ConfigError("config: dpsgd.grad_sample_mode 'ghost' cannot train tied input/output "
                          "embeddings; freeze the embeddings or use 'hooks'")
    if requested != "auto":
        return requested
    per_pair = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return "ghost" if not tied and physical_batch * per_pair > budget_bytes else "hooks"


def layer_modes(gsm) -> dict[str, int]:
    """How many trainable layers run under each per-sample technique (for the ledger)."""
    from opacus.utils.module_utils import trainable_modules

    counts: dict[str, int] = {}
    ghost = getattr(gsm, "use_ghost_clipping", False)
    for _, m in trainable_modules(gsm._module):
        if ghost and type(m) in gsm.NORM_SAMPLERS:
            k = "ghost-norm"
        elif not gsm.force_functorch and type(m) in gsm.GRAD_SAMPLERS:
            k = "hooks"
        else:
            k = "functorch"
        counts[k] = counts.get(k, 0) + 1
    return counts


class PrivatePairTrainer:
    """A policy wrapped for per-pair clipped, noised gradient steps.

    Call `backward(idx)` once per physical batch (or `backward_empty()` for an empty
    logical batch), then `step()`; with BatchMemoryManager the DP optimizer only clips
    and accumulates until the last physical batch of a logical batch, then adds noise
    once and steps.  After a step, the parameters' `.grad` hold the private gradient
    (sum of clipped per-pair gradients plus noise, divided by the expected batch size).
    """

    def __init__(self, policy: torch.nn.Module, data: PairData, pad_id: int,
                 optimizer: torch.optim.Optimizer, *, beta: float, max_grad_norm: float,
                 noise_multiplier: float, expected_batch_size: float, mode: str,
                 noise_seed: int, accountant=None, sample_rate: float | None = None):
        from opacus.grad_sample.utils import prepare_module
        from opacus.optimizers import get_optimizer_class

        register_layer_rules()
        self.data, self.pad_id, self.beta = data, pad_id, beta
        self.mode = mode
        self.dtype = next(policy.parameters()).dtype
        self.device = next(policy.parameters()).device
        extra = {"max_grad_norm": max_grad_norm} if mode == "ghost" else {}
        self.gsm = prepare_module(policy, grad_sample_mode=mode, batch_first=True,
                                  loss_reduction="mean", **extra)
        self.gsm.forbid_grad_accumulation()
        self.params = [p for p in policy.parameters() if p.requires_grad]
        gen = torch.Generator(device=self.device)
        gen.manual_seed(noise_seed)
        cls = get_optimizer_class(clipping="flat", distributed=False, grad_sample_mode=mode)
        self.optimizer = cls(optimizer, noise_multiplier=noise_multiplier,
                             max_grad_norm=max_grad_norm, expected_batch_size=expected_batch_size,
                             loss_reduction="mean", generator=gen)
        if accountant is not None:
            self.optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        self.gsm.train()

    def backward(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair clipped gradients of one physical batch; returns the pairs' DPO losses
        and whether their implicit reward ranks chosen above rejected (diagnostics)."""
        self.optimizer.zero_grad(set_to_none=True)
        d = self.data
        batch = pack_pairs([d.chosen[i] for i in idx], [d.rejected[i] for i in idx], self.pad_id,
                           self.dtype)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        pc, pr = packed_logps(self.gsm, batch)
        rc, rr = d.ref_chosen[list(idx)].to(pc), d.ref_rejected[list(idx)].to(pc)
        losses = dpo_loss(pc, pr, rc, rr, self.beta)
        with warnings.catch_warnings():
            # opacus' hooks read the gradient w.r.t. a module's output; torch warns that the
            # first layer's input (token ids) has none, which is expected here
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            if self.mode == "ghost":
                from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

                DPTensorFastGradientClipping(self.gsm, self.optimizer, losses, "mean").backward()
            else:
                losses.mean().backward()
        return losses.detach(), ((pc - rc) > (pr - rr)).detach()

    def backward_empty(self) -> None:
        """An empty Poisson batch: no pair contributes, the step adds noise only."""
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.params:
            if self.mode == "ghost":
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = p.new_zeros((0, *p.shape))

    def step(self) -> bool:
        """Optimizer step; True when it closed a logical batch (noise added, params moved)."""
        self.optimizer.step()
        return not self.optimizer._is_last_step_skipped

    def per_pair_norms(self) -> torch.Tensor | None:
        """Unclipped per-pair gradient norms of the last physical batch (ghost mode only;
        diagnostics, not private)."""
        try:
            return self.gsm.per_sample_gradient_norms.detach()
        except AttributeError:
            return None

    def close(self) -> torch.nn.Module:
        """The plain policy, with opacus' hooks and per-parameter attributes removed."""
        return self.gsm.to_standard_module()


def index_loader(n: int, sample_rate: float | None = None, seed: int = 0,
                 batches: Iterable[list[int]] | None = None):
    """Logical batches of pair indices: Poisson-sampled at `sample_rate` (opacus
    DPDataLoader), or the given fixed `batches` (tests)."""
    from opacus.data_loader import DPDataLoader, wrap_collate_with_empty
    from torch.utils.data import DataLoader, TensorDataset, default_collate

    ds = TensorDataset(torch.arange(n))
    if batches is not None:
        collate = wrap_collate_with_empty(collate_fn=default_collate, sample_empty_shapes=[(0,)],
                                          dtypes=[torch.long])
        return DataLoader(ds, batch_sampler=list(batches), collate_fn=collate)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DPDataLoader(ds, sample_rate=sample_rate, generator=gen)


def run_steps(trainer: PrivatePairTrainer, loader, steps: int, max_physical_batch_size: int,
              scheduler=None, desc: str = "dpsgd") -> dict:
    """Run `steps` logical DP-SGD steps over the loader's batches, physical batches capped
    by BatchMemoryManager.  Returns training diagnostics (computed from the private data:
    for inspection only, not covered by the guarantee)."""
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    done, sizes, losses, accs, clipped = 0, [], [], [], []
    cur_loss, cur_acc, cur_n = 0.0, 0.0, 0
    bar = tqdm(total=steps, desc=desc, mininterval=10)
    with BatchMemoryManager(data_loader=loader, max_physical_batch_size=max_physical_batch_size,
                            optimizer=trainer.optimizer) as physical:
        while done < steps:
            progressed = False
            for (idx,) in physical:
                idx = idx.tolist()
                if idx:
                    lo, ac = trainer.backward(idx)
                    cur_loss += float(lo.sum())
                    cur_acc += float(ac.float().sum())
                    cur_n += len(idx)
                    norms = trainer.per_pair_norms()
                    if norms is not None:
                        clipped.append(float((norms > trainer.optimizer.max_grad_norm).float().mean()))
                else:
                    trainer.backward_empty()
                if trainer.step():
                    progressed = True
                    done += 1
                    sizes.append(cur_n)
                    if cur_n:
                        losses.append(cur_loss / cur_n)
                        accs.append(cur_acc / cur_n)
                    cur_loss, cur_acc, cur_n = 0.0, 0.0, 0
                    if scheduler is not None:
                        scheduler.step()
                    bar.update(1)
                    if done == steps:
                        break
            if not progressed:
                raise RuntimeError("the pair loader produced no batch")
    bar.close()
    tail = max(1, len(losses) // 10)
    out = {"steps": done, "mean_batch_size": sum(sizes) / max(1, len(sizes)),
           "empty_batches": sum(1 for s in sizes if s == 0), "max_batch_size": max(sizes, default=0),
           "final_loss": sum(losses[-tail:]) / tail if losses else None,
           "final_reward_accuracy": sum(accs[-tail:]) / tail if accs else None}
    if clipped:
        out["clipped_fraction"] = sum(clipped) / len(clipped)
    return out


# ----------------------------------------------------------------------------- accounting


@functools.lru_cache(maxsize=64)
def calibrate_noise(eps: float, delta: float, sample_rate: float, steps: int,
                    accountant: str) -> float:
    """Smallest noise multiplier (to opacus' search tolerance) whose eps after `steps`
    Poisson-sampled steps is at most the target; 0 for eps = inf (clipping only)."""
    if math.isinf(eps):
        return 0.0
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(get_noise_multiplier(target_epsilon=eps, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps,
                                          accountant=accountant))


def epsilon_of(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
               accountant: str) -> float:
    """eps of `steps` Poisson-sampled Gaussian steps, recomputed from the ledger's numbers."""
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return _spent(acc, delta)


def _spent(accountant, delta: float) -> float:
    with warnings.catch_warnings():
        # RDP's note that a larger order might tighten the bound: the bound is valid as is
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(accountant.get_epsilon(delta=delta))


# ----------------------------------------------------------------------------- method


@dataclass(frozen=True)
class DPSGDSettings:
    """Hyperparameters of one DP-SGD run: dpo's, overridden by the `dpsgd` section."""

    beta: float
    lr: float
    epochs: float
    batch_size: int
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    accountant: str
    max_physical_batch_size: int
    grad_sample_mode: str
    delta: float
    freeze_embeddings: bool

    @classmethod
    def from_config(cls, cfg: dict) -> DPSGDSettings:
        dpo, dp = cfg["dpo"], cfg.get("dpsgd", {})
        s = cls(beta=dpo["beta"], lr=dp.get("lr", dpo["lr"]), epochs=dp.get("epochs", dpo["epochs"]),
                batch_size=dp.get("batch_size", dpo["batch_size"]),
                warmup_steps=dpo.get("warmup_steps", 0), weight_decay=dpo.get("weight_decay", 0.0),
                max_grad_norm=dp.get("max_grad_norm", 1.0), accountant=dp.get("accountant", "prv"),
                max_physical_batch_size=dp.get("max_physical_batch_size", 32),
                grad_sample_mode=dp.get("grad_sample_mode", "auto"),
                delta=cfg.get("privacy", {}).get("delta", 1e-5),
                freeze_embeddings=bool((cfg.get("model") or {}).get("freeze_embeddings", False)))
        if s.accountant not in ACCOUNTANTS:
            raise ConfigError(f"config: dpsgd.accountant must be one of {', '.join(ACCOUNTANTS)} "
                              f"(gdp can underestimate eps), got {s.accountant!r}")
        if s.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ConfigError(f"config: dpsgd.grad_sample_mode must be one of "
                              f"{', '.join(GRAD_SAMPLE_MODES)}, got {s.grad_sample_mode!r}")
        return s


def plan(n: int, s: DPSGDSettings) -> tuple[float, int]:
    """Sampling rate q = batch_size / n and steps = round(epochs / q)."""
    if not 0 < s.delta < 1.0 / n:
        raise InputError(f"dpsgd: delta = {s.delta} must be in (0, 1/n) = (0, {1.0 / n:.3g}) "
                         f"for {n} pairs")
    q = min(1.0, s.batch_size / n)
    return q, max(1, round(s.epochs / q))


def freeze_input_embeddings(policy: torch.nn.Module) -> int:
    """Freeze the token embeddings (with tied weights, the output head too): per-pair
    gradients of a large vocabulary are the costliest part of DP-SGD.  Returns the number
    of parameters frozen."""
    w = policy.get_input_embeddings().weight
    w.requires_grad_(False)
    return w.numel()


def train_dpsgd(policy: torch.nn.Module, data: PairData, pad_id: int, s: DPSGDSettings, eps: float,
                seed: int) -> tuple[torch.nn.Module, dict, dict]:
    """Train `policy` with DP-SGD DPO; returns (the plain trained policy, privacy ledger,
    training stats)."""
    from opacus.accountants import create_accountant

    n = len(data)
    if n == 0:
        raise InputError("dpsgd: no pairs to train on")
    q, steps = plan(n, s)
    frozen = freeze_input_embeddings(policy) if s.freeze_embeddings else 0
    mode = choose_grad_sample_mode(policy, s.grad_sample_mode,
                                   min(s.max_physical_batch_size, s.batch_size))
    sigma = calibrate_noise(eps, s.delta, q, steps, s.accountant)
    accountant = create_accountant(mechanism=s.accountant)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=s.lr,
                            weight_decay=s.weight_decay)
    sched = cosine_schedule(opt, s.warmup_steps, steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        trainer = PrivatePairTrainer(
            policy, data, pad_id, opt, beta=s.beta, max_grad_norm=s.max_grad_norm,
            noise_multiplier=sigma, expected_batch_size=q * n, mode=mode,
            noise_seed=derive_seed("dpsgd-noise", seed), accountant=accountant, sample_rate=q)
        layers = layer_modes(trainer.gsm)
        loader = index_loader(n, q, derive_seed("dpsgd-sampling", seed))
        stats = run_steps(trainer, loader, steps, s.max_physical_batch_size, sched)
    policy = trainer.close()
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(True)
    if stats["steps"] != steps or sum(h[2] for h in accountant.history) != steps:
        raise RuntimeError("dpsgd: steps taken differ from the steps the noise was calibrated for")
    eps_spent = math.inf if sigma == 0 else _spent(accountant, s.delta)
    privacy = {
        "mechanism": "dp-sgd", "unit": "pair", "eps": eps, "eps_target": eps,
        "eps_spent": eps_spent, "delta": s.delta, "accountant": accountant.mechanism(),
        "noise_multiplier": sigma, "sampling_rate": q, "steps": steps,
        "max_grad_norm": s.max_grad_norm, "expected_batch_size": q * n, "n_pairs": n,
        "sampling": "poisson", "grad_sample_mode": mode, "layer_modes": layers,
        "frozen_embedding_parameters": frozen, "secure_rng": False,
        "note": ("clipping only, no noise (eps = inf)" if sigma == 0 else
                 "(eps, delta)-DP for adding/removing one whole pair (prompt, responses, label); "
                 "noise from torch's PRNG, not a cryptographic one"),
    }
    stats = {**stats, "grad_sample_mode": mode, "layer_modes": layers, "lr": s.lr,
             "batch_size": s.batch_size, "max_physical_batch_size": s.max_physical_batch_size,
             "diagnostics_note": "final_loss, final_reward_accuracy and clipped_fraction are "
                                 "computed from the private pairs without noise: for "
                                 "inspection only, not covered by the guarantee"}
    return policy, privacy, stats


@register("dpsgd")
def run_dpsgd(ctx: Context) -> Result:
    """DPO from SFT on the true labels of every pair, trained with DP-SGD."""
    if ctx.true_labels is None:
        raise InputError("dpsgd needs the true labels of the pool")
    s = DPSGDSettings.from_config(ctx.cfg)
    labels = [int(x) for x in ctx.true_labels]
    data = PairData.from_labels(ctx.enc_a, ctx.enc_b, ctx.ref_a, ctx.ref_b, labels)
    policy, privacy, stats = train_dpsgd(ctx.policy, data, ctx.pad_id, s, ctx.eps, ctx.seed)
    rows = label_rows(ctx, range(len(labels)), 1, labels, released=False)
    out: dict[str, Any] = summarise_labels(rows)
    return Result(policy, rows, out, privacy, stats)
