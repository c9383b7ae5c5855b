"""Judges, registered by name.  A judge compares a policy answer with a reference answer
to the same prompt and returns an AlpacaEval preference: 1 (reference wins),
2 (policy wins) or 1.5 (tie), plus any scores it computed.

A config names a judge as NAME or NAME:OPTIONS, OPTIONS being `key=value,...` or one bare
value for the judge's main option:
- `gold`: the embedded task's gold reward;
- `local[:WEIGHTS.json]`: the learned local reward model (props.local_judge);
- `reward-model:PATH_OR_ID`: any transformers sequence-classification reward model;
- `llm[:model=NAME,prompt=paper|ANNOTATOR,temperature=T]`: any OpenAI-compatible
  endpoint, with the paper's 1-10 pairwise prompt or one of alpaca-eval's annotator
  configs (e.g. `prompt=alpaca_eval_gpt4`).  Key and base URL come from the environment
  (OPENAI_API_KEY, OPENAI_BASE_URL); the key is never logged or stored.

Every judge except `gold` caches its judgements by (judge, prompt, answers) in SQLite
under the cache folder ($PROPS_CACHE, default ~/.cache/props), so that re-judging never
costs a second call.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from props.io import InputError

Judge = Callable[[str, str, str], dict]
_JUDGES: dict[str, Judge] = {}
_FACTORIES: dict[str, Callable[[dict], Judge]] = {}
# The option a bare value stands for, per judge: "reward-model:/m" = path=/m.
MAIN_OPTION = {"local": "weights", "reward-model": "path", "llm": "model"}


def register(name: str):
    """A judge with no options: a plain function (prompt, reference, output) -> dict."""
    def deco(fn):
        _JUDGES[name] = fn
        return fn
    return deco


def register_factory(name: str):
    """A judge built from options: a function options -> judge."""
    def deco(fn):
        _FACTORIES[name] = fn
        return fn
    return deco


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """"llm:model=gpt-4,prompt=paper" -> ("llm", {"model": "gpt-4", "prompt": "paper"})."""
    name, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    if rest:
        if "=" not in rest:
            if name not in MAIN_OPTION:
                raise InputError(f"judge {name!r} takes no bare option ({spec!r})")
            opts[MAIN_OPTION[name]] = rest
        else:
            for part in rest.split(","):
                k, eq, v = part.partition("=")
                if not eq or not k.strip():
                    raise InputError(f"judge {spec!r}: option {part!r} is not key=value")
                opts[k.strip()] = v.strip()
    return name, opts


def get(spec: str) -> Judge:
    name, opts = parse_spec(spec)
    if name in _JUDGES and not opts:
        return _JUDGES[name]
    if name in _FACTORIES:
        return _build(spec)
    known = sorted(set(_JUDGES) | set(_FACTORIES))
    raise KeyError(f"unknown judge {spec!r} (known: {', '.join(known)})")


@functools.lru_cache(maxsize=8)
def _build(spec: str) -> Judge:
    name, opts = parse_spec(spec)
    return _FACTORIES[name](opts)


# ----------------------------------------------------------------------------- cache


def cache_path() -> Path:
    from props.models import default_cache_dir

    return default_cache_dir() / "judgements.sqlite"


class JudgementCache:
    """(judge identity, prompt, reference, output) -> judgement, in SQLite: safe for the
    several judge jobs Snakemake runs side by side."""

    def __init__(self, identity: str, path: str | Path | None = None):
        self.identity = identity
        self.path = Path(path) if path else cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, "
                        "value TEXT)")
        self.db.commit()

    def key(self, prompt: str, reference: str, output: str) -> str:
        return hashlib.sha256("\x1f".join((self.identity, prompt, reference, output))
                              .encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT value FROM judgements WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO judgements VALUES (?, ?)",
                        (key, json.dumps(value)))
        self.db.commit()


class CachedJudge:
    """Wraps a judge's compute function with the judgement cache; `hits` and `misses`
    count what the cache saved (tests check them)."""

    def __init__(self, identity: str, compute: Judge,
                 compute_many: Callable[[Sequence[tuple[str, str, str]]], list[dict]] | None = None):
        self.identity = identity
        self.compute = compute
        self.compute_many = compute_many
        self.cache = JudgementCache(identity)
        self.hits = 0
        self.misses = 0

    def __call__(self, prompt: str, reference: str, output: str) -> dict:
        return self.judge_many([(prompt, reference, output)])[0]

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[dict]:
        keys = [self.cache.key(*it) for it in items]
        out: list[dict | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        self.hits += len(items) - len(todo)
        self.misses += len(todo)
        if todo:
            new = (self.compute_many([items[i] for i in todo]) if self.compute_many
                   else [self.compute(*items[i]) for i in todo])
            for i, v in zip(todo, new):
                self.cache.put(keys[i], v)
                out[i] = v
        return out  # type: ignore[return-value]


def judge_many(judge: Judge, items: Sequence[tuple[str, str, str]]) -> list[dict]:
    """Judge many (prompt, reference, output) triples, batched when the judge can."""
    if hasattr(judge, "judge_many"):
        return judge.judge_many(items)
    return [judge(*it) for it in items]


def preference_from_scores(s_ref: float, s_out: float) -> float:
    return 2.0 if s_out > s_ref else 1.0 if s_out < s_ref else 1.5


# ----------------------------------------------------------------------------- gold


@register("gold")
def gold(prompt: str, reference: str, output: str) -> dict:
    """The embedded task's gold reward decides; equal rewards are a tie."""
    from props.task.grammar import gold_reward

    r_ref = gold_reward(reference).reward
    r_out = gold_reward(output).reward
    pref = 2.0 if r_out > r_ref else 1.0 if r_out < r_ref else 1.5
    return {"preference": pref, "score_reference": r_ref, "score_output": r_out}


# ----------------------------------------------------------------------------- local


@register_factory("local")
def local_judge(opts: dict) -> Judge:
    """The learned local reward model; weights from `weights=` or the default file (fitted
    from the shared AlpacaEval annotations on first use, see props.local_judge)."""
    from props import local_judge as L

    model = L.LocalJudge.load(opts.get("weights"))

    def many(items):
        s_ref = model.scores([p for p, _, _ in items], [r for _, r, _ in items])
        s_out = model.scores([p for p, _, _ in items], [o for _, _, o in items])
        return [{"preference": preference_from_scores(a, b), "score_reference": float(a),
                 "score_output": float(b)} for a, b in zip(s_ref, s_out)]

    return CachedJudge(f"local:{model.digest}", lambda p, r, o: many([(p, r, o)])[0], many)


# ----------------------------------------------------------------------------- reward model


class RewardModel:
    """Any transformers sequence-classification reward model: one logit (or two, the
    second meaning "good") for a (prompt, answer) pair.  A chat template, when the
    tokenizer has one, formats the pair as a user turn and an assistant turn."""

    def __init__(self, path: str, max_length: int = 1024, batch_size: int = 8):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch.float32, use_safetensors=True, trust_remote_code=False).eval()
        except OSError as e:
            raise InputError(f"cannot load reward model {path!r}: "
                             f"{str(e).splitlines()[0]}") from None
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.tok.padding_side = "right"
        self.max_length = max_length
        self.batch_size = batch_size

    def _text(self, prompt: str, answer: str) -> str | tuple[str, str]:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                tokenize=False)
        return prompt, answer

    def scores(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        import torch

        texts = [self._text(p, a) for p, a in zip(prompts, answers)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i:i + self.batch_size]
            if isinstance(chunk[0], tuple):
                enc = self.tok([c[0] for c in chunk], [c[1] for c in chunk], padding=True,
                               truncation=True, max_length=self.max_length, return_tensors="pt")
            else:
                enc = self.tok(list(chunk), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt",
                               add_special_tokens=False)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            s = logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1] - logits[:, 0]
            out += s.tolist()
        return out


@register_factory("reward-model")
def reward_model_judge(opts: dict) -> Judge:
    path = opts.get("path")
    if not path:
        raise InputError("judge reward-model needs a model: reward-model:PATH_OR_ID")
    rm = RewardModel(path, int(opts.get("max_length", 1024)))

    def many(items):
        s_ref = rm.scores([p for p, _, _ in items], [r for _, r, _ in items])
        s_out = rm.scores([p for p, _, _ in items], [o for _, _, o in items])
        return [{"preference": preference_from_scores(a, b), "score_reference": a,
                 "score_output": b} for a, b in zip(s_ref, s_out)]

    ident = f"reward-model:{path}:{_folder_digest(path)}"
    return CachedJudge(ident, lambda p, r, o: many([(p, r, o)])[0], many)


def _folder_digest(path: str) -> str:
    """Identify a local model by its weights' size and mtime (a retrained model in the same
    folder must not reuse old judgements); hub ids stand for themselves."""
    p = Path(path)
    if not p.is_dir():
        return "hub"
    parts = sorted(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}"
                   for f in p.glob("*.safetensors"))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- LLM

# The paper's head-to-head judge: the two answers in random order, each scored 1-10.
PAPER_SYSTEM = "You are a careful and impartial judge of the quality of answers written " \
               "by AI assistants."
PAPER_PROMPT = """[Question]
{question}

[The Start of Assistant 1's Answer]
{answer_1}
[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{answer_2}
[The End of Assistant 2's Answer]

Rate the helpfulness, relevance, accuracy and level of detail of the two answers above.
Give each assistant an overall score from 1 to 10, where a higher score means a better
answer.  On the first line write only the two scores, for Assistant 1 and Assistant 2,
separated by a space.  From the second line on, explain your scores briefly and without
bias: the order in which the answers were presented must not affect your judgement."""

_SCORE_LINE = re.compile(r"^\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*[,;\s]\s*(?:and\s+)?"
                         r"(\d+(?:\.\d+)?)")


def parse_paper_scores(text: str) -> tuple[float, float] | None:
    """The two scores on the judge's first non-empty line, or None."""
    for line in text.strip().splitlines():
        if line.strip():
            m = _SCORE_LINE.match(line)
            if not m:
                return None
            a, b = float(m.group(1)), float(m.group(2))
            return (a, b) if 0 <= a <= 10 and 0 <= b <= 10 else None
    return None


def swap_order(prompt: str, reference: str, output: str) -> bool:
    """Random but reproducible order per prompt: True puts the policy's answer first."""
    h = hashlib.sha256("\x1f".join(("order", prompt, reference, output)).encode()).digest()
    return bool(h[0] & 1)


class LLMJudge:
    """A judge behind any OpenAI-compatible chat-completions endpoint."""

    def __init__(self, opts: dict):
        try:
            from openai import OpenAI
        except ImportError:  # pragma: no cover - openai ships with alpaca-eval
            raise InputError("judge llm needs the openai package") from None
        key_env = opts.get("api_key_env", "OPENAI_API_KEY")
        url_env = opts.get("base_url_env", "OPENAI_BASE_URL")
        key = os.environ.get(key_env)
        if not key:
            raise InputError(f"judge llm: set {key_env} (and {url_env} for a non-OpenAI "
                             "endpoint) in the environment")
        self.client = OpenAI(api_key=key, base_url=os.environ.get(url_env) or None,
                             max_retries=int(opts.get("max_retries", 3)),
                             timeout=float(opts.get("timeout", 120)))
        self.prompt = opts.get("prompt", "paper")
        self.annotator = None if self.prompt == "paper" else load_annotator(self.prompt)
        default_model = self.annotator["model"] if self.annotator else "gpt-4"
        self.model = opts.get("model") or default_model
        default_t = 0.7 if self.annotator is None else self.annotator["temperature"]
        self.temperature = float(opts.get("temperature", default_t))
        self.max_tokens = int(opts.get("max_tokens", 256 if self.annotator is None
                                       else self.annotator["max_tokens"]))

    @property
    def identity(self) -> str:
        return f"llm:{self.model}:{self.prompt}:{self.temperature}:{self.max_tokens}"

    def _chat(self, messages: list[dict], **extra):
        return self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature,
            max_tokens=self.max_tokens, **extra)

    def __call__(self, prompt: str, reference: str, output: str) -> dict:
        swapped = swap_order(prompt, reference, output)
        first, second = (output, reference) if swapped else (reference, output)
        if self.annotator is None:
            text = PAPER_PROMPT.format(question=prompt, answer_1=first, answer_2=second)
            resp = self._chat([{"role": "system", "content": PAPER_SYSTEM},
                               {"role": "user", "content": text}])
            content = resp.choices[0].message.content or ""
            scores = parse_paper_scores(content)
            if scores is None:
                return {"preference": 1.5, "parsed": False, "swapped": swapped,
                        "raw": content[:500]}
            s_first, s_second = scores
            s_ref, s_out = (s_second, s_first) if swapped else (s_first, s_second)
            # named apart from score_reference/score_output: an unparsed answer has no
            # score, and evaluation averages those keys over every judgement
            return {"preference": preference_from_scores(s_ref, s_out), "parsed": True,
                    "swapped": swapped, "judge_score_reference": s_ref,
                    "judge_score_output": s_out}
        pref_first = self._annotate(prompt, first, second)
        if pref_first is None:
            return {"preference": 1.5, "parsed": False, "swapped": swapped}
        # pref_first is on AlpacaEval's scale for (first, second): map back to (ref, out)
        pref = 3.0 - pref_first if swapped else pref_first
        return {"preference": float(pref), "parsed": True, "swapped": swapped}

    def _annotate(self, instruction: str, output_1: str, output_2: str) -> float | None:
        import math

        from alpaca_eval import completion_parsers, utils

        a = self.annotator
        text = a["template"]
        for k, v in (("instruction", instruction), ("output_1", output_1),
                     ("output_2", output_2)):
            text = text.replace("{" + k + "}", v)
        messages = utils.prompt_to_chatml(text)
        extra = {}
        if a["logprobs"]:
            extra = {"logprobs": True, "top_logprobs": a["top_logprobs"]}
        resp = self._chat(messages, **extra)
        choice = resp.choices[0]
        parser = getattr(completion_parsers, a["parser"])
        if a["parser"] == "logprob_parser":
            completion = {"logprobs": choice.logprobs.model_dump() if choice.logprobs else {}}
        else:
            completion = choice.message.content or ""
        try:
            out = parser(completion, **a["parser_kwargs"])
        except Exception:  # an unparseable answer is a tie, as in alpaca-eval
            return None
        if not out:
            return None
        v = float(out[0])
        if math.isnan(v):
            return None
        return 1.5 if v == 0 else v


def load_annotator(name: str) -> dict:
    """An alpaca-eval annotator config (evaluators_configs/NAME/configs.yaml): its prompt
    template, model, decoding settings and completion parser.  Only configs that call an
    OpenAI-style chat completion and parse its text or log-probs are supported."""
    import yaml
    from alpaca_eval import constants

    root = Path(constants.EVALUATORS_CONFIG_DIR)
    cfg_file = root / name / "configs.yaml"
    if not cfg_file.exists():
        raise InputError(f"judge llm: no alpaca-eval annotator config {name!r} "
                         f"(looked for {cfg_file})")
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg = cfg.get(name) or next(iter(cfg.values()))
    if cfg.get("fn_completions", "openai_completions") != "openai_completions":
        raise InputError(f"judge llm: annotator {name!r} uses {cfg['fn_completions']}; only "
                         "openai_completions configs are supported")
    kw = cfg.get("completions_kwargs", {})
    if "tools" in kw or "functions" in kw:
        raise InputError(f"judge llm: annotator {name!r} uses function calling, which is "
                         "not supported; pick a text or log-prob annotator")
    return {"template": (root / cfg["prompt_template"]).read_text(),
            "model": kw.get("model_name", "gpt-4"),
            "temperature": float(kw.get("temperature", 0)),
            "max_tokens": int(kw.get("max_tokens", 100)),
            "logprobs": bool(kw.get("logprobs", False)),
            "top_logprobs": int(kw.get("top_logprobs", 5)),
            "parser": cfg.get("fn_completion_parser", "regex_parser"),
            "parser_kwargs": cfg.get("completion_parser_kwargs", {})}


@register_factory("llm")
def llm_judge(opts: dict) -> Judge:
    judge = LLMJudge(opts)
    return CachedJudge(judge.identity, judge)
