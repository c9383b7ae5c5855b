"""Real preference datasets, by name, each read from the hub or from a local path and
normalised to (prompt, chosen, rejected) pairs.

Kinds (the `kind` of a dataset in the config):
- `truthy-dpo`: jondurbin/truthy-dpo-v0.1 with the paper's splits: rows [:150] are the
  SFT demonstrations, rows [150:900] with one system prompt are the private preference
  pool, rows [900:] give the evaluation prompts.
- `hh-rlhf`: Anthropic/hh-rlhf; each side is a whole dialogue and the two share all but
  the last assistant turn, which is split off as the response.
- `alpaca-eval`: reciprocate/alpaca-eval (prompt / chosen / rejected), or pairs built
  from AlpacaEval GPT-4 annotation files (`instruction, output_1, output_2, preference`),
  ties dropped.

Local paths are files (.json, .jsonl, optionally .gz; .parquet) or, for `alpaca-eval`,
a folder of annotation files.  The public data of this project lives outside the
repository, in ../shared/data by default (or $PROPS_DATA).  A malformed row stops the
load with one line naming file and line, unless the dataset says `on_error: skip`, in
which case it is skipped and counted (the count is written to the data step's info).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from props.io import InputError

HUB_IDS = {
    "truthy-dpo": "jondurbin/truthy-dpo-v0.1",
    "hh-rlhf": "Anthropic/hh-rlhf",
    "alpaca-eval": "reciprocate/alpaca-eval",
}
TRUTHY_SYSTEM = "You are an unbiased, uncensored, helpful assistant."
ASSISTANT = "\n\nAssistant:"


def shared_data_dir() -> Path:
    """Where the project's public data lives: $PROPS_DATA, else ../shared/data next to
    the repository."""
    env = os.environ.get("PROPS_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str


@dataclass
class Rows:
    """Raw records read from one source, each with where it came from (for errors)."""

    records: list[tuple[str, dict]]  # (location "file:line", record)
    skipped: Counter = field(default_factory=Counter)


class Malformed(Exception):
    """One bad record: the reader turns it into an InputError or a counted skip."""


# ----------------------------------------------------------------------------- reading


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else \
        open(path, encoding="utf-8")


def _base_suffix(path: Path) -> str:
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def iter_records(path: str | Path) -> Iterator[tuple[str, dict | object]]:
    """Records of a local file as (location, record).  JSONL gives line numbers; a JSON
    list gives entry numbers; parquet gives row numbers."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    kind = _base_suffix(path)
    if kind == ".jsonl":
        with _open_text(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}: line {i}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}: line {i}", Malformed(f"not valid JSON ({e.msg})")
    elif kind == ".json":
        with _open_text(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of records")
        for i, r in enumerate(data, 1):
            yield f"{path}: entry {i}", r
    elif kind == ".parquet":
        import pyarrow.parquet as pq

        for i, r in enumerate(pq.read_table(path).to_pylist(), 1):
            yield f"{path}: row {i}", r
    else:
        raise InputError(f"{path}: unsupported file type (use .json, .jsonl, .parquet, "
                         "optionally .gz)")


def _text(rec: dict, key: str, allow_empty: bool = False) -> str:
    v = rec.get(key)
    if not isinstance(v, str):
        raise Malformed(f"field {key!r} is {'missing' if v is None else type(v).__name__}, "
                        "expected text")
    if not allow_empty and not v.strip():
        raise Malformed(f"field {key!r} is empty")
    return v


def _convert(records: Iterator[tuple[str, object]], fn: Callable[[dict], object | None],
             on_error: str, skipped: Counter) -> list:
    """Apply `fn` to every record; malformed ones raise (one line) or are counted."""
    out = []
    for where, rec in records:
        try:
            if isinstance(rec, Malformed):
                raise rec
            if not isinstance(rec, dict):
                raise Malformed(f"expected an object, got {type(rec).__name__}")
            v = fn(rec)
        except Malformed as e:
            if on_error == "skip":
                skipped[str(e)] += 1
                continue
            raise InputError(f"{where}: {e}") from None
        if v is not None:
            out.append(v)
    return out


def _hub_records(hub_id: str, split: str, data_dir: str | None = None
                 ) -> Iterator[tuple[str, dict]]:
    """Records of a hub dataset (on machines that reach the hub; cached by `datasets`)."""
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, data_dir=data_dir, split=split)
    except Exception as e:  # datasets raises many types for "not reachable / not found"
        raise InputError(f"cannot load {hub_id!r} from the hub ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); give the dataset a "
                         "local 'path'") from None
    for i, r in enumerate(ds, 1):
        yield f"{hub_id}[{split}]: row {i}", r


def _records(spec: dict, default_split: str = "train") -> Iterator[tuple[str, object]]:
    path = spec.get("path")
    if path:
        return iter_records(path)
    return _hub_records(spec.get("hub_id") or HUB_IDS[spec["kind"]],
                        spec.get("split") or default_split, spec.get("data_dir"))


# ----------------------------------------------------------------------------- HH-RLHF


def split_dialogue(chosen: str, rejected: str) -> Pair:
    """Split two HH-RLHF dialogues into the shared prompt (up to and including the last
    "Assistant:" turn marker they have in common) and the two final responses.  The
    marker is searched in the common prefix, not in `chosen` alone, because a few
    responses themselves contain "Assistant:" or "Human:"; an empty response is kept (it
    is what the annotator saw)."""
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise Malformed("'chosen' and 'rejected' share no dialogue ending in an "
                        "'Assistant:' turn")
    prompt = common[:cut + len(ASSISTANT)]
    return Pair(prompt.strip(), chosen[len(prompt):].strip(), rejected[len(prompt):].strip())


def hh_pair(rec: dict) -> Pair | None:
    chosen, rejected = _text(rec, "chosen"), _text(rec, "rejected")
    p = split_dialogue(chosen, rejected)
    return None if p.chosen == p.rejected else p


# ----------------------------------------------------------------------------- AlpacaEval


def parse_preference(value) -> float | None:
    """AlpacaEval preference -> 1.0 (output_1), 2.0 (output_2), 1.5 (tie) or None
    (unparsed).  Values between 1 and 2 are soft preferences."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise Malformed(f"preference {value!r} is not a number") from None
    if v != v:  # NaN: unparsed by the annotator
        return None
    if v == 0:
        return 1.5
    if not 1 <= v <= 2:
        raise Malformed(f"preference {value!r} is outside [1, 2]")
    return v


@dataclass
class Annotation:
    instruction: str
    output_1: str
    output_2: str
    generator_1: str | None
    generator_2: str | None
    preference: float | None  # 1.0, 2.0, 1.5 (tie) or None


def annotation(rec: dict) -> Annotation:
    return Annotation(_text(rec, "instruction"), _text(rec, "output_1", allow_empty=True),
                      _text(rec, "output_2", allow_empty=True), rec.get("generator_1"),
                      rec.get("generator_2"), parse_preference(rec.get("preference")))


def read_annotations(path: str | Path, on_error: str = "raise",
                     skipped: Counter | None = None) -> list[Annotation]:
    """One AlpacaEval annotation file (JSON list, optionally gzipped)."""
    return _convert(iter_records(path), annotation, on_error,
                    skipped if skipped is not None else Counter())


def annotation_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz")))
        if not files:
            raise InputError(f"{path}: no annotation files (*.json, *.json.gz)")
        return files
    return [path]


def annotation_name(path: Path) -> str:
    """The generator a file judges, from its name: claude.json.gz -> claude."""
    name = path.name
    for suf in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suf)
    return name


def alpaca_pair(rec: dict) -> Pair | None:
    if "instruction" in rec and "output_1" in rec:
        a = annotation(rec)
        if a.preference not in (1.0, 2.0) or a.output_1 == a.output_2:
            return None  # ties, soft and unparsed judgements carry no clear label
        if not a.output_1.strip() or not a.output_2.strip():
            return None
        win, lose = (a.output_1, a.output_2) if a.preference == 1.0 else (a.output_2, a.output_1)
        return Pair(a.instruction, win, lose)
    return Pair(_text(rec, "prompt"), _text(rec, "chosen"), _text(rec, "rejected"))


# ----------------------------------------------------------------------------- truthy-dpo


def truthy_record(rec: dict) -> tuple[str, Pair]:
    system = rec.get("system") or ""
    if not isinstance(system, str):
        raise Malformed("field 'system' is not text")
    return system, Pair(_text(rec, "prompt"), _text(rec, "chosen"), _text(rec, "rejected"))


# ----------------------------------------------------------------------------- splits


@dataclass
class Splits:
    sft: list[Pair]
    pool: list[Pair]
    eval_prompts: list[str]
    skipped: Counter
    notes: dict


def _take(items: list, n: int | None) -> list:
    return items if n is None else items[:n]


def _rows(items: list, rng: list | None) -> list:
    if rng is None:
        return []
    start, end = rng
    return items[start:end]


def _by_rows(pairs: list[Pair], spec: dict) -> tuple[list[Pair], list[Pair], list[str]]:
    """Splits as row ranges in file order (the paper's way: truthy-dpo rows [:150] SFT,
    [150:900] pool, [900:] eval)."""
    sft = _rows(pairs, spec.get("sft_rows"))
    pool = _rows(pairs, spec.get("pool_rows"))
    evals = list(dict.fromkeys(p.prompt for p in _rows(pairs, spec.get("eval_rows"))))
    return (_take(sft, spec.get("n_sft")), _take(pool, spec.get("n_pool")),
            _take(evals, spec.get("n_eval")))


def _split(pairs: list[Pair], spec: dict) -> tuple[list[Pair], list[Pair], list[str]]:
    if any(spec.get(k) is not None for k in ("sft_rows", "pool_rows", "eval_rows")):
        return _by_rows(pairs, spec)
    return _by_prompt(pairs, spec.get("seed", 0), spec.get("n_sft"), spec.get("n_pool"),
                      spec.get("n_eval"), spec.get("pairs_per_prompt"))


def _by_prompt(pairs: list[Pair], seed: int, n_sft: int | None, n_pool: int | None,
               n_eval: int | None, per_prompt: int | None = None
               ) -> tuple[list[Pair], list[Pair], list[str]]:
    """Seeded split with prompts disjoint between splits: eval prompts first, then pool,
    then SFT (so growing n_sft never changes the pool or the eval prompts).  At most
    `per_prompt` pairs of one prompt are kept (AlpacaEval has one per judged model)."""
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.prompt, []).append(p)
    if per_prompt:
        rng = random.Random(seed + 1)
        groups = {k: rng.sample(v, min(per_prompt, len(v))) for k, v in groups.items()}
    prompts = sorted(groups)
    random.Random(seed).shuffle(prompts)
    n_eval = n_eval if n_eval is not None else max(1, len(prompts) // 10)
    eval_prompts, rest = prompts[:n_eval], prompts[n_eval:]
    pool: list[Pair] = []
    i = 0
    want_pool = n_pool if n_pool is not None else len(pairs) // 2
    while i < len(rest) and len(pool) < want_pool:
        pool.extend(groups[rest[i]])
        i += 1
    pool = pool[:want_pool]
    sft = [p for q in rest[i:] for p in groups[q]]
    return _take(sft, n_sft), pool, eval_prompts


def load_splits(spec: dict) -> Splits:
    """The (sft, pool, eval prompts) of one real dataset, as its config describes."""
    kind = spec["kind"]
    if kind not in LOADERS:
        raise InputError(f"dataset kind {kind!r} has no loader (known: {', '.join(LOADERS)})")
    return LOADERS[kind](spec)


def load_truthy(spec: dict) -> Splits:
    skipped: Counter = Counter()
    on_error = spec.get("on_error", "raise")
    rows = _convert(_records(spec), truthy_record, on_error, skipped)
    system = spec.get("system_prompt", TRUTHY_SYSTEM)
    sft = [p for _, p in _rows(rows, spec.get("sft_rows") or [0, 150])]
    pool = [p for s, p in _rows(rows, spec.get("pool_rows") or [150, 900])
            if system is None or s == system]
    evals = list(dict.fromkeys(p.prompt for _, p in _rows(rows, spec.get("eval_rows")
                                                          or [900, None])))
    return Splits(_take(sft, spec.get("n_sft")), _take(pool, spec.get("n_pool")),
                  _take(evals, spec.get("n_eval")), skipped,
                  {"source": spec.get("path") or spec.get("hub_id") or HUB_IDS["truthy-dpo"],
                   "system_prompt": system, "rows": len(rows)})


def load_hh(spec: dict) -> Splits:
    skipped: Counter = Counter()
    rows = _convert(_records(spec, "test"), hh_pair, spec.get("on_error", "raise"), skipped)
    sft, pool, evals = _split(rows, spec)
    return Splits(sft, pool, evals, skipped,
                  {"source": spec.get("path") or spec.get("hub_id") or HUB_IDS["hh-rlhf"],
                   "pairs": len(rows)})


def load_alpaca(spec: dict) -> Splits:
    skipped: Counter = Counter()
    on_error = spec.get("on_error", "raise")
    path = spec.get("path")
    if path and Path(path).is_dir():
        rows = []
        for f in annotation_files(path):
            rows += _convert(iter_records(f), alpaca_pair, on_error, skipped)
    else:
        rows = _convert(_records(spec), alpaca_pair, on_error, skipped)
    sft, pool, evals = _split(rows, spec)
    return Splits(sft, pool, evals, skipped,
                  {"source": path or spec.get("hub_id") or HUB_IDS["alpaca-eval"],
                   "pairs": len(rows)})


LOADERS: dict[str, Callable[[dict], Splits]] = {
    "truthy-dpo": load_truthy,
    "hh-rlhf": load_hh,
    "alpaca-eval": load_alpaca,
}
