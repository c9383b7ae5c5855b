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
        MethodInfo("rr-debiased", "randomized-response", "label", True,
                   "unbiased (robust / rDPO) DPO loss on RR(eps) labels"),
        MethodInfo("props", "randomized-response", "label", True,
                   "PROPS: K stages; stage k's labels fuse RR with M_{k-1}'s labels by MAP"),
        MethodInfo("props-fusion", "randomized-response", "label", True,
                   "PROPS with per-pair posterior MAP, trusting the labeler only where a "
                   "confidence bound says it beats the released labels"),
        MethodInfo("rr-prior", "randomized-response-with-prior", "label", True,
                   "RR with a prior from the previous stage's model (Ghazi et al. 2021)"),
        MethodInfo("dpsgd", "dp-sgd", "pair", True,
                   "DPO with DP-SGD (opacus): per-pair clipping, Gaussian noise, accountant"),
    ]
}

# A config names a judge as NAME or NAME:OPTIONS (see props.judges.parse_spec), e.g.
# "local", "reward-model:/models/rm", "llm:model=gpt-4-0613,prompt=paper".
JUDGES = ("gold", "local", "reward-model", "llm")
DATASET_KINDS = ("embedded", "truthy-dpo", "hh-rlhf", "alpaca-eval")

# Where each method's implementation lives (imported on first use, so that importing the
# registry stays cheap).
METHOD_MODULES: dict[str, str] = {
    "dpo": "props.methods",
    "rr": "props.methods",
    "rr-debiased": "props.label_methods",
    "props": "props.label_methods",
    "props-fusion": "props.label_methods",
    "rr-prior": "props.label_methods",
    "dpsgd": "props.dpsgd",
}


# PROPS labeler scores (props.label_methods computes them; tables list them)
LABELER_SCORES = ("loglik", "loglik_norm", "implicit_reward", "base_ratio")
