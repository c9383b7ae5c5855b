"""Real dataset loaders (on the shared data files when present), their splits, malformed
rows, and the data / pool steps for real datasets."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from props import io
from props.datasets import (
    load_splits,
    parse_preference,
    read_annotations,
    split_dialogue,
)
from props.io import InputError
from tests.conftest import SHARED_DATA

HH = os.path.join(SHARED_DATA, "hh-rlhf", "harmless-base-test.jsonl.gz")
ANN = os.path.join(SHARED_DATA, "alpaca_eval", "gpt4_annotations")
need_hh = pytest.mark.skipif(not os.path.exists(HH), reason=f"shared data absent: {HH}")
need_ann = pytest.mark.skipif(not os.path.isdir(ANN), reason=f"shared data absent: {ANN}")


def _write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


# ----------------------------------------------------------------------------- HH-RLHF


def test_split_dialogue_answer_containing_turn_markers():
    """Some HH-RLHF answers contain "Assistant:" themselves (rows 1689, 1953 of the test
    split): the prompt is the dialogue both sides share."""
    c = "\n\nHuman: q\n\nAssistant: Human: I think not.\n\nAssistant: really"
    r = "\n\nHuman: q\n\nAssistant: Yes."
    p = split_dialogue(c, r)
    assert p.prompt == "Human: q\n\nAssistant:"
    assert p.chosen.startswith("Human: I think not.") and p.rejected == "Yes."


def test_split_dialogue_takes_last_assistant_turn():
    c = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: Sure, here"
    r = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: No."
    p = split_dialogue(c, r)
    assert p.prompt.endswith("a joke?\n\nAssistant:")
    assert p.prompt.startswith("Human: hi")
    assert (p.chosen, p.rejected) == ("Sure, here", "No.")


@need_hh
def test_hh_real_file_splits():
    spec = {"kind": "hh-rlhf", "path": HH, "seed": 3, "n_sft": 50, "n_pool": 100, "n_eval": 20}
    sp = load_splits(spec)
    assert (len(sp.sft), len(sp.pool), len(sp.eval_prompts)) == (50, 100, 20)
    for p in sp.pool + sp.sft:
        assert p.prompt.endswith("Assistant:") and "Human:" in p.prompt
        assert p.chosen != p.rejected  # an empty final turn is real data and is kept
        assert not p.chosen.startswith("Human:")
    pool_prompts = {p.prompt for p in sp.pool}
    assert not pool_prompts & {p.prompt for p in sp.sft}
    assert not pool_prompts & set(sp.eval_prompts)
    again = load_splits(spec)
    assert [p.chosen for p in again.pool] == [p.chosen for p in sp.pool]
    other = load_splits({**spec, "seed": 4})
    assert [p.chosen for p in other.pool] != [p.chosen for p in sp.pool]
    assert sp.notes["pairs"] > 2000  # 2,312 rows, a few with identical answers dropped


@need_hh
def test_hh_rows_reach_the_right_pairs():
    first = json.loads(gzip.open(HH, "rt").readline())
    sp = load_splits({"kind": "hh-rlhf", "path": HH, "sft_rows": [0, 1], "pool_rows": [1, 5],
                      "eval_rows": [5, 8]})
    assert len(sp.sft) == 1 and len(sp.pool) == 4 and len(sp.eval_prompts) <= 3
    assert first["chosen"].rstrip().endswith(sp.sft[0].chosen)


# ----------------------------------------------------------------------------- AlpacaEval


@need_ann
def test_read_annotations_real_file():
    rows = read_annotations(os.path.join(ANN, "alpaca-7b.json.gz"))
    assert len(rows) == 805
    assert {r.preference for r in rows} <= {1.0, 2.0, 1.5, None}
    assert sum(r.preference == 2.0 for r in rows) > 100
    assert rows[0].generator_1 == "text_davinci_003"


@need_ann
def test_alpaca_pairs_follow_gpt4_preference():
    f = os.path.join(ANN, "claude.json.gz")
    raw = json.load(gzip.open(f))
    sp = load_splits({"kind": "alpaca-eval", "path": f, "seed": 0, "n_eval": 10,
                      "n_pool": 200})
    by_prompt = {r["instruction"]: r for r in raw}
    for p in sp.pool:
        r = by_prompt[p.prompt]
        pref = parse_preference(r["preference"])
        assert pref in (1.0, 2.0)
        win = r["output_1"] if pref == 1.0 else r["output_2"]
        assert p.chosen == win and p.rejected != win
    assert len(sp.eval_prompts) == 10 and not set(sp.eval_prompts) & {p.prompt for p in sp.pool}


@need_ann
def test_alpaca_folder_pairs_per_prompt():
    sp = load_splits({"kind": "alpaca-eval", "path": ANN, "seed": 0, "pairs_per_prompt": 2,
                      "n_eval": 50, "n_pool": 300, "n_sft": 100})
    assert (len(sp.pool), len(sp.sft), len(sp.eval_prompts)) == (300, 100, 50)
    from collections import Counter

    assert max(Counter(p.prompt for p in sp.pool).values()) <= 2
    assert sp.notes["pairs"] > 10000  # 15 files of about 800 decided pairs


def test_parse_preference():
    assert parse_preference("1") == 1.0 and parse_preference("2.0") == 2.0
    assert parse_preference("0") == 1.5 and parse_preference(None) is None
    assert parse_preference(1.25) == 1.25


# ----------------------------------------------------------------------------- truthy-dpo


def _truthy_rows(n: int = 1000) -> list[dict]:
    sys_a, sys_b = "You are an unbiased, uncensored, helpful assistant.", "You are Bob."
    return [{"id": f"r{i}", "source": "x", "system": sys_a if i % 3 else sys_b,
             "prompt": f"question {i}?", "chosen": f"true answer {i}",
             "rejected": f"false answer {i}"} for i in range(n)]


def test_truthy_paper_splits(tmp_path):
    f = _write_jsonl(tmp_path / "truthy.jsonl", _truthy_rows())
    sp = load_splits({"kind": "truthy-dpo", "path": str(f)})
    assert len(sp.sft) == 150 and sp.sft[0].prompt == "question 0?"
    # rows 150..899 with the one system prompt: i % 3 != 0
    assert len(sp.pool) == sum(1 for i in range(150, 900) if i % 3)
    assert all(int(p.prompt.split()[1][:-1]) % 3 for p in sp.pool)
    assert sp.eval_prompts[0] == "question 900?" and len(sp.eval_prompts) == 100
    allsys = load_splits({"kind": "truthy-dpo", "path": str(f), "system_prompt": None})
    assert len(allsys.pool) == 750


def test_hub_path_reads_through_datasets(tmp_path):
    """The hub code path is `datasets.load_dataset`; offline it reads a local folder."""
    from props.datasets import _hub_records

    d = tmp_path / "truthy"
    d.mkdir()
    _write_jsonl(d / "train.jsonl", _truthy_rows(20))
    recs = list(_hub_records(str(d), "train"))
    assert len(recs) == 20 and recs[3][1]["prompt"] == "question 3?"


def test_hub_unreachable_is_one_line(monkeypatch):
    from props.datasets import _hub_records

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InputError, match="local 'path'"):
        list(_hub_records("no-such-owner/no-such-dataset-xyz", "train"))


# ----------------------------------------------------------------------------- malformed


def test_malformed_json_line_names_file_and_line(tmp_path):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    f = _write_jsonl(tmp_path / "hh.jsonl", [good, good, "{not json", good])
    with pytest.raises(InputError) as e:
        load_splits({"kind": "hh-rlhf", "path": str(f)})
    assert str(f) in str(e.value) and "line 3" in str(e.value) and "\n" not in str(e.value)


def test_missing_field_and_skip_counts(tmp_path):
    rows = [{"chosen": f"\n\nHuman: a{i}\n\nAssistant: b", "rejected": f"\n\nHuman: a{i}\n\nAssistant: c"}
            for i in range(10)]
    rows[4] = {"rejected": "x"}
    rows[7] = {"chosen": "no turns here", "rejected": "no turns there"}
    f = _write_jsonl(tmp_path / "hh.jsonl.gz", rows, gz=True)
    with pytest.raises(InputError, match=r"line 5: field 'chosen' is missing"):
        load_splits({"kind": "hh-rlhf", "path": str(f)})
    sp = load_splits({"kind": "hh-rlhf", "path": str(f), "on_error": "skip", "n_eval": 1})
    assert sum(sp.skipped.values()) == 2
    assert len(sp.sft) + len(sp.pool) + len(sp.eval_prompts) == 8


def test_malformed_annotation_entry(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps([{"instruction": "i", "output_1": "a", "output_2": "b",
                              "preference": "2"},
                             {"instruction": "i", "output_1": "a", "output_2": "b",
                              "preference": "seven"}]))
    with pytest.raises(InputError, match=r"entry 2: preference 'seven'"):
        read_annotations(f)


def test_unsupported_file_type(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n")
    with pytest.raises(InputError, match="unsupported file type"):
        load_splits({"kind": "hh-rlhf", "path": str(f)})


# ----------------------------------------------------------------------------- steps


def test_step_data_real_writes_the_embedded_layout(tmp_path):
    from props.steps import step_data

    f = _write_jsonl(tmp_path / "truthy.jsonl", _truthy_rows())
    spec = {"kind": "truthy-dpo", "path": str(f), "seed": 0, "name": "truthy"}
    step_data(spec, tmp_path / "data")
    sft = io.read_jsonl(tmp_path / "data" / "sft.jsonl")
    ev = io.read_jsonl(tmp_path / "data" / "eval.jsonl")
    pool = io.read_jsonl(tmp_path / "data" / "pool_pairs.jsonl")
    assert set(sft[0]) == {"id", "prompt", "chosen", "rejected"}
    assert set(ev[0]) == {"prompt_id", "prompt"}
    assert set(pool[0]) == {"pair_id", "prompt", "response_a", "response_b", "true_label"}
    for r in pool:  # the preferred answer is the "true ..." one, wherever it sits
        pref = r["response_a"] if r["true_label"] == 1 else r["response_b"]
        assert pref.startswith("true answer")
    share_a = sum(r["true_label"] for r in pool) / len(pool)
    assert 0.4 < share_a < 0.6  # random a/b order
    step_data(spec, tmp_path / "data2")
    assert io.read_jsonl(tmp_path / "data2" / "pool_pairs.jsonl") == pool  # seeded


def test_step_pool_real_caches_logps(tmp_path, tiny_model, tiny_tok):
    from safetensors.torch import load_file

    from props.models import save_model
    from props.steps import step_data, step_pool

    f = _write_jsonl(tmp_path / "truthy.jsonl", _truthy_rows())
    spec = {"kind": "truthy-dpo", "path": str(f), "seed": 0, "n_pool": 12}
    step_data(spec, tmp_path / "data")
    save_model(tiny_model, tiny_tok, tmp_path / "base")
    save_model(tiny_model, tiny_tok, tmp_path / "sft")
    gen = {"max_prompt_tokens": 16, "max_new_tokens": 8, "batch_size": 4}
    step_pool(spec, gen, tmp_path / "data", tmp_path / "base", tmp_path / "sft",
              tmp_path / "pool", 0, 1)
    rows = io.read_jsonl(tmp_path / "pool" / "pool.jsonl")
    lp = load_file(str(tmp_path / "pool" / "logps.safetensors"))
    assert len(rows) == 12
    assert set(lp) == {"ref_a", "ref_b", "base_a", "base_b"}
    assert all(v.shape == (12,) and (v < 0).all() for v in lp.values())
    assert (lp["ref_a"] == lp["base_a"]).all()  # same weights, same scores


# ----------------------------------------------------------------------------- config


def test_real_tier_configs_validate():
    from props import config as C

    root = Path(__file__).resolve().parent.parent / "bench" / "config"
    for name, n_runs in (("smol-tiny", 1), ("smol", 6), ("paper", 432)):
        cfg = C.load(root / f"{name}.yaml")
        assert len(C.grid(cfg)) == n_runs
    paper = C.load(root / "paper.yaml")
    assert {m["id"] for m in paper["models"].values()} == {
        "gpt2-medium", "gpt2-large", "EleutherAI/pythia-1b"}
    assert {d["kind"] for d in paper["datasets"].values()} == {
        "truthy-dpo", "hh-rlhf", "alpaca-eval"}


def test_config_checks_for_real_data():
    from props import config as C

    base = {"tier": "t", "models": {"m": {"source": "smollm2"}},
            "datasets": {"d": {"kind": "hh-rlhf", "path": "x.jsonl"}},
            "methods": ["rr"], "eps": [1], "seeds": [0], "judge": "local"}
    assert C.resolve(base)["datasets"]["d"]["on_error"] == "raise"
    with pytest.raises(C.ConfigError, match="judge 'gold' scores the embedded task only"):
        C.resolve({**base, "judge": "gold"})
    with pytest.raises(C.ConfigError, match="unknown judge"):
        C.resolve({**base, "judge": "oracle"})
    with pytest.raises(C.ConfigError, match="reward-model:PATH_OR_ID"):
        C.resolve({**base, "judge": "reward-model"})
    with pytest.raises(C.ConfigError, match="on_error"):
        C.resolve({**base, "datasets": {"d": {"kind": "hh-rlhf", "on_error": "ignore"}}})
    with pytest.raises(C.ConfigError, match="trained from scratch"):
        C.resolve({**base, "models": {"m": {"source": "scratch"}}})
    assert C.resolve({**base, "judge": "llm:model=gpt-4,prompt=paper"})["judge"].startswith("llm")
