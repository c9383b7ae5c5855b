"""Evaluation of one run: judge its answers against the SFT reference's answers.

Win-rate and its standard error come from `alpaca_eval.metrics.get_winrate` (percent,
ties count half), so the numbers mean what AlpacaEval's numbers mean.
"""

from __future__ import annotations

import numpy as np

from props import judges


def winrate(preferences: list[float]) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from alpaca_eval.metrics import get_winrate

    out = get_winrate([{"preference": p} for p in preferences])
    return {"win_rate": float(out["win_rate"]), "win_rate_se": float(out["standard_error"]),
            "wins": int(out["n_wins"]), "losses": int(out["n_wins_base"]),
            "ties": int(out["n_draws"]), "n": int(out["n_total"])}


def _se(x) -> float:
    """Standard error of a mean over prompts (nan with fewer than two)."""
    x = np.asarray(x, dtype=float)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def evaluate_run(judge_name: str, policy_gens: list[dict], reference_gens: list[dict]):
    judge = judges.get(judge_name)
    ref = {g["prompt_id"]: g for g in reference_gens}
    missing = [g["prompt_id"] for g in policy_gens if g["prompt_id"] not in ref]
    if missing:
        raise ValueError(f"reference has no answer for prompt {missing[0]!r}")
    rows = []
    for g in policy_gens:
        r = ref[g["prompt_id"]]
        j = judge(g["prompt"], r["output"], g["output"])
        rows.append({"prompt_id": g["prompt_id"], "judge": judge_name, "output_1": r["output"],
                     "output_2": g["output"], **j})
    ev = winrate([r["preference"] for r in rows])
    kl = np.array([g["logp_policy"] - g["logp_ref"] for g in policy_gens])
    ev.update({
        "judge": judge_name,
        "kl_to_sft": float(kl.mean()),
        "kl_to_sft_se": float(kl.std(ddof=1) / np.sqrt(len(kl))) if len(kl) > 1 else float("nan"),
        "mean_length": float(np.mean([g["n_tokens"] for g in policy_gens])),
        "mean_length_se": _se([g["n_tokens"] for g in policy_gens]),
        "mean_length_reference": float(np.mean([ref[g["prompt_id"]]["n_tokens"]
                                                 for g in policy_gens])),
        "mean_length_reference_se": _se([ref[g["prompt_id"]]["n_tokens"] for g in policy_gens]),
    })
    if "score_output" in rows[0]:
        ev["mean_reward"] = float(np.mean([r["score_output"] for r in rows]))
        ev["mean_reward_se"] = _se([r["score_output"] for r in rows])
        ev["mean_reward_reference"] = float(np.mean([r["score_reference"] for r in rows]))
        ev["mean_reward_reference_se"] = _se([r["score_reference"] for r in rows])
    if judge_name == "gold":
        from props.task.grammar import is_well_formed

        ev["well_formed"] = float(np.mean([is_well_formed(g["output"]) for g in policy_gens]))
    return rows, ev
