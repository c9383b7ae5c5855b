"""Language-model plumbing shared by every step: encoding, batching, log-probs, training
loops for pre-training and SFT, and seeded generation.

Sequences are right-padded for training and scoring, with explicit position ids of shape
(batch, length): GPT-2-style models need them for per-sample gradients to stay per
sample (opacus), and passing them everywhere keeps scoring identical between the
private and non-private paths.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class Encoded:
    """One (prompt, response) pair as token ids; the loss covers the response only."""

    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    @property
    def loss_mask(self) -> list[int]:
        return [0] * len(self.prompt_ids) + [1] * len(self.response_ids)


def encode_prompt(tok, prompt: str, max_prompt_tokens: int) -> list[int]:
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = ids[-max_prompt_tokens:] if max_prompt_tokens else ids
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return bos + ids


def encode_response(tok, response: str, max_response_tokens: int) -> list[int]:
    ids = tok(" " + response, add_special_tokens=False)["input_ids"]
    if max_response_tokens:
        ids = ids[: max_response_tokens - 1]
    return ids + [tok.eos_token_id]


def encode(tok, prompt: str, response: str, max_prompt_tokens: int = 64,
           max_response_tokens: int = 64) -> Encoded:
    return Encoded(encode_prompt(tok, prompt, max_prompt_tokens),
                   encode_response(tok, response, max_response_tokens))


def collate(seqs: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with attention mask, loss mask and explicit position ids."""
    length = max(len(s.ids) for s in seqs)
    b = len(seqs)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attn = torch.zeros((b, length), dtype=torch.long)
    loss_mask = torch.zeros((b, length), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.ids)
        input_ids[i, :n] = torch.tensor(s.ids)
        attn[i, :n] = 1
        loss_mask[i, :n] = torch.tensor(s.loss_mask)
    position_ids = torch.arange(length).unsqueeze(0).expand(b, length).contiguous()
    return {"input_ids": input_ids, "attention_mask": attn, "loss_mask": loss_mask,
            "position_ids": position_ids}


def token_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probability of each next token, masked to the loss positions: (batch, len-1)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"])
    logits = out.logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    lp = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return lp * batch["loss_mask"][:, 1:]


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each sequence's response tokens: (batch,)."""
    return token_logps(model, batch).sum(-1)


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def score_sequences(model, seqs: Sequence[Encoded], pad_id: int, batch_size: int = 128,
                    desc: str | None = None) -> torch.Tensor:
    """Summed response log-probs of many sequences, in order (float64 on CPU)."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    it = range(0, len(seqs), batch_size)
    for start in tqdm(it, desc=desc, disable=desc is None, mininterval=5):
        idx = order[start:start + batch_size]
        batch = to_device(collate([seqs[i] for i in idx], pad_id), dev)
        out.append((idx, sequence_logps(model, batch).double().cpu()))
    res = torch.empty(len(seqs), dtype=torch.float64)
    for idx, v in out:
        res[idx] = v
    return res


def cosine_schedule(optimizer, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def shuffled_batches(n: int, batch_size: int, steps: int, seed: int):
    """Index batches for `steps` steps: epochs of seeded permutations, cut into batches
    that may straddle an epoch boundary (every example is seen once per epoch)."""
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            perm = list(range(n))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:batch_size], order[batch_size:]
        yield idx


def train_lm(model, examples: Sequence[Encoded], pad_id: int, *, epochs: float, batch_size: int,
             lr: float, warmup_steps: int, seed: int, weight_decay: float = 0.0,
             max_grad_norm: float = 1.0, desc: str = "train") -> list[float]:
    """Next-token training on the masked positions (whole text for pre-training, the
    response for SFT).  Returns the loss of every step."""
    dev = next(model.parameters()).device
    n = len(examples)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(1, int(round(epochs * steps_per_epoch)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = cosine_schedule(opt, warmup_steps, total)
    model.train()
    losses: list[float] = []
    bar = tqdm(total=total, desc=desc, mininterval=10)
    for idx in shuffled_batches(n, batch_size, total, seed):
        batch = to_device(collate([examples[i] for i in idx], pad_id), dev)
        lp = token_logps(model, batch)
        mask = batch["loss_mask"][:, 1:]
        loss = -(lp.sum() / mask.sum().clamp(min=1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update(1)
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def generate(model, tok, prompts: Sequence[str], *, max_prompt_tokens: int, max_new_tokens: int,
             temperature: float, seed: int, batch_size: int = 64,
             desc: str = "generate") -> list[Encoded]:
    """Seeded generation.  temperature 0 is greedy; otherwise plain ancestral sampling
    (no top-k / top-p), so that samples follow the policy exactly and the KL estimate
    built on them is unbiased."""
    model.eval()
    dev = next(model.parameters()).device
    pad = tok.pad_token_id
    eos = tok.eos_token_id
    results: list[Encoded] = []
    for b, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc=desc, mininterval=10)):
        chunk = [encode_prompt(tok, p, max_prompt_tokens) for p in prompts[start:start + batch_size]]
        length = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, c in enumerate(chunk):
            ids[i, length - len(c):] = torch.tensor(c)
            attn[i, length - len(c):] = 1
        torch.manual_seed((seed * 1_000_003 + b) % (1 << 62))
        kw = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 \
            else dict(do_sample=False)
        out = model.generate(input_ids=ids.to(dev), attention_mask=attn.to(dev),
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                             **kw)
        for i, c in enumerate(chunk):
            gen = out[i, length:].tolist()
            if eos in gen:
                gen = gen[: gen.index(eos) + 1]
            else:
                gen = [t for t in gen if t != pad]
            results.append(Encoded(c, gen))
    return results


def decode_response(tok, enc: Encoded) -> str:
    return tok.decode(enc.response_ids, skip_special_tokens=True).strip()
