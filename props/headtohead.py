"""Head-to-head comparison of two runs' answers to the same prompts (the paper's headline:
PROPS against randomized response and against DP-SGD at the same eps and seed).

The judge sees both answers.  Which one it sees first is randomised per prompt (seeded
by the seed and the prompt id), because an LLM judge favours a position; for a symmetric
judge such as the gold reward the order changes nothing, and the randomisation is then
harmless.  The win-rate of A over B (ties count half) and its standard error come from
`props.evaluate.winrate`, i.e. from `alpaca_eval.metrics.get_winrate`, so they mean what
the win-rates against the SFT reference mean.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd

from props import io
from props.io import InputError

HEADLINE_PAIRS: tuple[tuple[str, str], ...] = (("props", "rr"), ("props", "dpsgd"))
"""(A, B) method pairs of the headline comparison, A first.  Only the pairs whose two
methods are both in a configuration's `methods` list are run; the order here is the
order of table 2 and of the figure."""

RESULT_KEYS = ("model", "dataset", "a", "b", "eps", "seed", "judge", "n", "wins", "ties",
               "losses", "win_rate", "win_rate_se")

_RUN_PATH = re.compile(r"runs/(?P<model>[^/]+)/(?P<dataset>[^/]+)/(?P<method>[^/]+)/"
                       r"eps(?P<eps>[^/]+)/seed(?P<seed>[0-9]+)/[^/]+$")


def pairs_for(methods: list[str]) -> list[tuple[str, str]]:
    """The headline pairs whose two methods are both in `methods`."""
    return [(a, b) for a, b in HEADLINE_PAIRS if a in methods and b in methods]


def run_of(path: str | Path) -> dict:
    """Run coordinates from a run directory path (results/runs/model/dataset/method/epsE/
    seedS/file); empty when the path does not have that shape."""
    m = _RUN_PATH.search(Path(path).as_posix())
    return m.groupdict() if m else {}


def a_first(seed: int, prompt_id: str) -> bool:
    """Whether A's answer is shown first for this prompt: a fair coin, fixed by the seed
    and the prompt id (the same for every pair of methods, so comparisons share it)."""
    from props.runtime import derive_seed

    return random.Random(derive_seed("headtohead-order", seed, prompt_id)).random() < 0.5


def compare(judge_name: str, gens_a: list[dict], gens_b: list[dict], seed: int,
            judge=None) -> tuple[list[dict], dict]:
    """Judge A's and B's answers prompt by prompt.  Returns the per-prompt judgements and
    the result: A's wins, ties, B's wins, A's win-rate over B (percent) and its SE, and
    the mean score of each side when the judge scores answers."""
    from props import judges
    from props.evaluate import winrate

    if judge is None:
        try:
            judge = judges.get(judge_name)
        except KeyError as e:
            raise InputError(str(e).strip("\"'")) from None
    if not gens_a or not gens_b:
        raise InputError("head-to-head: a generations file is empty")
    by_b = {g["prompt_id"]: g for g in gens_b}
    ids_a = [g["prompt_id"] for g in gens_a]
    if len(set(ids_a)) != len(ids_a) or len(by_b) != len(gens_b):
        raise InputError("head-to-head: a generations file lists a prompt twice")
    if set(ids_a) != set(by_b):
        only = sorted(set(ids_a) ^ set(by_b))[0]
        raise InputError(f"head-to-head: the two runs answered different prompts "
                         f"(e.g. {only!r} is in one file only)")
    order, items = [], []
    for ga in gens_a:
        gb = by_b[ga["prompt_id"]]
        if ga["prompt"] != gb["prompt"]:
            raise InputError(f"head-to-head: prompt {ga['prompt_id']!r} differs between the runs")
        first_is_a = a_first(seed, ga["prompt_id"])
        first, second = (ga, gb) if first_is_a else (gb, ga)
        order.append(first_is_a)
        items.append((ga["prompt"], first["output"], second["output"]))
    # batched when the judge can batch (an LLM endpoint); one call per prompt otherwise
    many = getattr(judges, "judge_many", None)
    verdicts = many(judge, items) if many else [judge(*it) for it in items]
    rows = []
    for ga, first_is_a, j in zip(gens_a, order, verdicts):
        gb = by_b[ga["prompt_id"]]
        p = float(j["preference"])  # 1: first wins, 2: second wins, 1.5: tie
        pref_a = 3.0 - p if first_is_a else p  # 2: A wins, 1: B wins
        row = {"prompt_id": ga["prompt_id"], "judge": judge_name, "a_first": first_is_a,
               "output_a": ga["output"], "output_b": gb["output"], "preference": pref_a,
               "raw_preference": p}
        if "score_output" in j and "score_reference" in j:
            s_first, s_second = j["score_reference"], j["score_output"]
            row["score_a"], row["score_b"] = ((s_first, s_second) if first_is_a
                                              else (s_second, s_first))
        rows.append(row)
    res = winrate([r["preference"] for r in rows])
    res["judge"] = judge_name
    res["n_a_first"] = int(sum(r["a_first"] for r in rows))
    res["order"] = "randomised per prompt (seeded by seed and prompt id)"
    if "score_a" in rows[0]:
        sa = np.array([r["score_a"] for r in rows], dtype=float)
        sb = np.array([r["score_b"] for r in rows], dtype=float)
        res["mean_score_a"], res["mean_score_b"] = float(sa.mean()), float(sb.mean())
    for side, gens in (("a", gens_a), ("b", gens_b)):
        if all("n_tokens" in g for g in gens):
            res[f"mean_length_{side}"] = float(np.mean([g["n_tokens"] for g in gens]))
    return rows, res


def step_headtohead(judge_name: str, gen_a: Path, gen_b: Path, out: Path,
                    judgements: Path | None = None, meta: dict | None = None,
                    seed: int | None = None, threads: int = 1) -> dict:
    """`props headtohead`: compare two runs' generations; write the result JSON and the
    per-prompt judgements (JSONL).  Run coordinates not given are read from the paths;
    `threads` bounds a judge that runs a model on this machine."""
    from props.runtime import set_threads

    set_threads(threads)
    meta = {k: v for k, v in (meta or {}).items() if v is not None}
    ra, rb = run_of(gen_a), run_of(gen_b)
    for key in ("model", "dataset", "eps", "seed"):
        if key not in meta and key in ra:
            meta[key] = ra[key]
    meta.setdefault("a", ra.get("method", Path(gen_a).parent.name))
    meta.setdefault("b", rb.get("method", Path(gen_b).parent.name))
    if seed is None:
        seed = int(meta.get("seed", 0))
    meta["seed"] = seed
    if "eps" in meta:
        meta["eps"] = io.parse_eps(meta["eps"])
    rows, res = compare(judge_name, io.read_jsonl(gen_a), io.read_jsonl(gen_b), seed)
    result = {**meta, **res, "generations_a": str(gen_a), "generations_b": str(gen_b)}
    if judgements is None:
        judgements = Path(out).with_suffix(".judgements.jsonl")
    io.write_jsonl(judgements, rows)
    io.write_json(out, result)
    print(f"[props] headtohead: {meta['a']} vs {meta['b']}: {res['wins']}/{res['ties']}/"
          f"{res['losses']} (win-rate {res['win_rate']:.1f} ± {res['win_rate_se']:.1f}) -> {out}",
          flush=True)
    return result


def load_results(paths: list[str | Path]) -> pd.DataFrame:
    """Head-to-head result files as one frame, one row per (pair, eps, seed)."""
    rows = []
    for p in paths:
        r = io.read_json_input(p)
        missing = [k for k in RESULT_KEYS if k not in (r if isinstance(r, dict) else {})]
        if missing:
            raise InputError(f"{p}: missing key {missing[0]!r} (not a head-to-head result?)")
        rows.append({k: r.get(k) for k in (*RESULT_KEYS, "mean_score_a", "mean_score_b")})
    df = pd.DataFrame(rows, columns=[*RESULT_KEYS, "mean_score_a", "mean_score_b"])
    if len(df):
        df["eps"] = df["eps"].map(io.parse_eps).astype(float)
        df["seed"] = df["seed"].astype(int)
    return df


def summarise(h2h: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, a, b, eps): wins / ties / losses summed over seeds, and A's
    head-to-head win-rate as mean ± SE over seeds (over prompts with one seed)."""
    from props.aggregate import seed_stat

    out = []
    keys = ["model", "dataset", "a", "b", "eps"]
    for k, g in h2h.groupby(keys, sort=True):
        mean, se, n_seeds = seed_stat(g, "win_rate", "win_rate_se")
        out.append({**dict(zip(keys, k)), "wins": int(g["wins"].sum()),
                    "ties": int(g["ties"].sum()), "losses": int(g["losses"].sum()),
                    "n": int(g["n"].sum()), "win_rate": mean,
                    "win_rate_se": se, "n_seeds": n_seeds})
    cols = [*keys, "wins", "ties", "losses", "n", "win_rate", "win_rate_se", "n_seeds"]
    return pd.DataFrame(out, columns=cols)


def ratio_ci(a: np.ndarray, b: np.ndarray, a_se: float = math.nan, b_se: float = math.nan,
             level: float = 0.95) -> tuple[float, float, float, str]:
    """Ratio of mean win-rates mean(a) / mean(b) with a confidence interval by the delta
    method.  With paired seeds (n >= 2) the variances and the covariance of the two means
    are estimated from the seeds and the interval uses Student's t with n - 1 degrees of
    freedom; with one seed the per-run standard errors over prompts are used (independent,
    normal quantile).  Returns (ratio, low, high, how); nan where undefined."""
    from scipy import stats

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n = len(a)
    if n == 0 or len(b) != n:
        return math.nan, math.nan, math.nan, "no paired runs"
    ma, mb = float(a.mean()), float(b.mean())
    if mb <= 0:
        return math.nan, math.nan, math.nan, "baseline win-rate is 0"
    r = ma / mb
    if n >= 2:
        va, vb = a.var(ddof=1) / n, b.var(ddof=1) / n
        cov = float(np.cov(a, b, ddof=1)[0, 1]) / n
        q = float(stats.t.ppf(0.5 + level / 2, n - 1))
        how = f"delta method over {n} paired seeds, t({n - 1})"
    else:
        va, vb, cov = a_se ** 2, b_se ** 2, 0.0
        q = float(stats.norm.ppf(0.5 + level / 2))
        how = "delta method, one seed: SEs over prompts"
    var = (va - 2 * r * cov + r * r * vb) / (mb * mb)
    if not math.isfinite(var):
        return r, math.nan, math.nan, how
    se = math.sqrt(max(var, 0.0))
    return r, max(r - q * se, 0.0), r + q * se, how
