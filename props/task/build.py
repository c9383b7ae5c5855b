"""Build the embedded task's splits and its preference pool.

Splits (all from one seeded writer, prompts disjoint between splits):
- corpus: prompt + review texts for pre-training the tiny base model;
- sft: public demonstration pairs with Bradley-Terry labels; SFT trains on the chosen
  response (the paper's SFT on preferred responses), disjoint from the private pool;
- pool: prompts of the private preference pool (responses are added by `make_pool`,
  because some response sources are models);
- eval: held-out prompts for evaluation.

"Human" labels follow a Bradley-Terry model on the gold reward,
P(a preferred) = sigmoid((r_a - r_b) / T), so they carry realistic noise while the label
of every pair is known.
"""

from __future__ import annotations

import math
import random

import numpy as np

from props.task.grammar import Writer, gold_reward


def bt_label(r_a: float, r_b: float, temperature: float, u: float) -> int:
    """1 if a is preferred, drawn with probability sigmoid((r_a - r_b)/T) using uniform u."""
    p = 1.0 / (1.0 + math.exp(-(r_a - r_b) / temperature))
    return int(u < p)


def _unique_prompts(w: Writer, n: int, taken: set[str]) -> list[str]:
    out = []
    tries = 0
    while len(out) < n:
        p = w.prompt()
        tries += 1
        if p not in taken:
            taken.add(p)
            out.append(p)
        elif tries > 50 * n + 10000:
            # the prompt space is finite; past this point repeats are allowed
            out.append(p)
    return out


def build_splits(spec: dict) -> dict[str, list[dict]]:
    rng = random.Random(spec["seed"])
    w = Writer(rng)
    taken: set[str] = set()
    eval_prompts = _unique_prompts(w, spec["n_eval"], taken)
    pool_prompts = _unique_prompts(w, spec["n_pool"], taken)
    sft_prompts = _unique_prompts(w, spec["n_sft"], set(taken))
    T = spec["bt_temperature"]
    sft = []
    for i, p in enumerate(sft_prompts):
        a, b = w.review(), w.review()
        ra, rb = gold_reward(a).reward, gold_reward(b).reward
        lab = bt_label(ra, rb, T, rng.random())
        sft.append({"id": f"sft{i}", "prompt": p, "chosen": a if lab else b,
                    "rejected": b if lab else a})
    corpus = [{"prompt": w.prompt(), "response": w.review()} for _ in range(spec["n_corpus"])]
    # Writer responses for the pool are drawn now (for both slots) so that the pool is the
    # same whichever sources the config picks; model sources replace them later.
    pool = [{"pair_id": f"p{i}", "prompt": p, "writer_a": w.review(), "writer_b": w.review(),
             "u_label": rng.random(), "u_swap": rng.random()}
            for i, p in enumerate(pool_prompts)]
    evals = [{"prompt_id": f"e{i}", "prompt": p} for i, p in enumerate(eval_prompts)]
    return {"corpus": corpus, "sft": sft, "pool_prompts": pool, "eval": evals}


def assemble_pool(prompts: list[dict], responses: dict[str, list[str]], sources: list[str],
                  temperature: float) -> list[dict]:
    """Pool rows from per-source responses.  `responses[src]` holds, for model sources, one
    sample per slot and pair laid out as [slot a for all pairs] + [slot b for all pairs]."""
    n = len(prompts)
    rows = []
    for i, p in enumerate(prompts):
        picks = []
        for slot, src in enumerate(sources):
            if src == "writer":
                picks.append(p["writer_a"] if slot == 0 else p["writer_b"])
            else:
                picks.append(responses[src][slot * n + i])
        srcs = list(sources)
        if p["u_swap"] < 0.5:  # random order: the position carries no information
            picks.reverse()
            srcs.reverse()
        ra, rb = gold_reward(picks[0]).reward, gold_reward(picks[1]).reward
        rows.append({"pair_id": p["pair_id"], "prompt": p["prompt"], "response_a": picks[0],
                     "response_b": picks[1], "source_a": srcs[0], "source_b": srcs[1],
                     "reward_a": ra, "reward_b": rb,
                     "true_label": bt_label(ra, rb, temperature, p["u_label"])})
    return rows


def label_agreement_with_reward(rows: list[dict]) -> float:
    """Share of labelled pairs whose label agrees with the gold reward (ties excluded)."""
    agree = [int((r["reward_a"] > r["reward_b"]) == bool(r["true_label"]))
             for r in rows if r["reward_a"] != r["reward_b"]]
    return float(np.mean(agree)) if agree else float("nan")
