"""What exists, by name: methods, judges, dataset kinds, model sources.

Kept free of heavy imports so that the workflow can validate a config quickly; the
implementations are looked up by the same names in `props.methods`, `props.judges` ...
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    mechanism: str  # the privacy mechanism, as written in the ledger
    unit: str | None  # protected unit: "label", "pair" or None (no privacy)
    private: bool  # False: runs only at eps = inf
    description: str


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo("dpo", "none", None, False, "DPO on the true labels (no privacy, eps = inf)"),
        MethodInfo("rr", "randomized-response", "label", True,
                   "DPO (sigmoid loss) on RR(eps) labels, as in the released code"),
    ]
}

JUDGES = ("gold",)
DATASET_KINDS = ("embedded",)
