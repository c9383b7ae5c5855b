"""Shared fixtures: a tiny tokenizer and tiny Llama built in seconds, offline."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


@pytest.fixture(scope="session")
def writer_texts():
    from props.task.grammar import Writer

    w = Writer(random.Random(0))
    return [f"{w.prompt()} {w.review()}" for _ in range(500)]


@pytest.fixture(scope="session")
def tiny_tok(tmp_path_factory, writer_texts):
    from props.models import load_tokenizer
    from props.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(writer_texts, 300, d)
    return load_tokenizer(d)


@pytest.fixture()
def tiny_model(tiny_tok):
    """A fresh, randomly initialised 2-layer Llama (seeded)."""
    import torch

    from props.models import build_scratch

    torch.manual_seed(0)
    spec = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    return build_scratch(spec, tiny_tok)
