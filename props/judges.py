"""Judges, registered by name.  A judge compares a policy answer with a reference answer
to the same prompt and returns an AlpacaEval preference: 1 (reference wins),
2 (policy wins) or 1.5 (tie), plus any scores it computed."""

from __future__ import annotations

from collections.abc import Callable

Judge = Callable[[str, str, str], dict]
_JUDGES: dict[str, Judge] = {}


def register(name: str):
    def deco(fn):
        _JUDGES[name] = fn
        return fn
    return deco


def get(name: str) -> Judge:
    if name not in _JUDGES:
        raise KeyError(f"unknown judge {name!r} (known: {', '.join(_JUDGES)})")
    return _JUDGES[name]


@register("gold")
def gold(prompt: str, reference: str, output: str) -> dict:
    """The embedded task's gold reward decides; equal rewards are a tie."""
    from props.task.grammar import gold_reward

    r_ref = gold_reward(reference).reward
    r_out = gold_reward(output).reward
    pref = 2.0 if r_out > r_ref else 1.0 if r_out < r_ref else 1.5
    return {"preference": pref, "score_reference": r_ref, "score_output": r_out}
