"""Answer features from SmolLM2-135M-Instruct, for the local judge.

The instruction goes in the model's chat template as the user turn and the answer
follows as the assistant turn; one forward pass gives, over the answer's tokens, the
mean hidden state at a few layers and the answer's mean and spread of token
log-likelihood.  Both are what a small instruct model "thinks" of the answer as a reply
to that instruction, which sentence embeddings of the answer alone cannot see.

Only the first `max_prompt` tokens of the instruction and the first `max_answer` tokens
of the answer are read: that bounds the cost (about 1,000 tokens/s on two CPU cores) and
the lengths themselves are known to the judge through its surface features.  Features are
kept in SQLite keyed by everything that changes them, so no answer is read twice.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LM_NAME = "SmolLM2-135M-Instruct"
LAYERS = (10, 20, 30)
MAX_PROMPT = 96
MAX_ANSWER = 160
HIDDEN = 576


# Layout of a feature vector: the mean hidden state at each of LAYERS, then these.
LOGPROB_NAMES = ("lm_mean_logprob", "lm_std_logprob", "lm_low_logprob_share")
DIM = len(LAYERS) * HIDDEN + len(LOGPROB_NAMES)


class LMFeatureCache:
    """(instruction, answer) -> feature vector, in SQLite, shared between jobs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS feat (key TEXT PRIMARY KEY, vec BLOB)")
        self.db.commit()

    @staticmethod
    def key(instruction: str, answer: str) -> str:
        tag = f"{LM_NAME}\x1f{LAYERS}\x1f{MAX_PROMPT}\x1f{MAX_ANSWER}"
        return hashlib.sha256(f"{tag}\x1f{instruction}\x1f{answer}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            q = f"SELECT key, vec FROM feat WHERE key IN ({','.join('?' * len(chunk))})"
            for k, v in self.db.execute(q, chunk):
                out[k] = np.frombuffer(v, dtype=np.float32)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO feat VALUES (?, ?)",
                            [(k, v.astype(np.float32).tobytes()) for k, v in items.items()])
        self.db.commit()


class LMFeaturizer:
    """Batched, length-sorted forward passes of SmolLM2 over (instruction, answer) pairs."""

    def __init__(self, cache_path: str | Path | None = None, batch_tokens: int = 4096,
                 log_every: int = 0):
        from props.models import default_cache_dir

        self.cache = LMFeatureCache(cache_path or default_cache_dir() / "lm_features.sqlite")
        self.batch_tokens = batch_tokens
        self.log_every = log_every
        self._model = None
        self._tok = None

    def _load(self):
        if self._model is None:
            from props.models import load_smollm2

            self._model, self._tok = load_smollm2()
            self._model.eval()
        return self._model, self._tok

    def token_ids(self, instruction: str, answer: str) -> tuple[list[int], int]:
        """The model's input and the index where the answer's tokens start."""
        _, tok = self._load()
        instr = tok(instruction, add_special_tokens=False)["input_ids"][:MAX_PROMPT]
        prompt = tok.apply_chat_template([{"role": "user", "content": tok.decode(instr)}],
                                         add_generation_prompt=True, tokenize=True)
        if hasattr(prompt, "keys"):  # a BatchEncoding on some transformers versions
            prompt = prompt["input_ids"]
        ans = tok(answer.strip(), add_special_tokens=False)["input_ids"][:MAX_ANSWER]
        return list(prompt) + list(ans), len(prompt)

    def _forward(self, batch: list[tuple[list[int], int]]) -> np.ndarray:
        import torch

        model, tok = self._load()
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        n = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), n), pad, dtype=torch.long)
        att = torch.zeros((len(batch), n), dtype=torch.long)
        for i, (seq, _) in enumerate(batch):
            ids[i, :len(seq)] = torch.tensor(seq)
            att[i, :len(seq)] = 1
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=att, output_hidden_states=True)
            logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
            tok_lp = logp.gather(-1, ids[:, 1:, None])[..., 0]  # log p(token t | < t)
        feats = []
        for i, (seq, start) in enumerate(batch):
            end = len(seq)
            if end <= start:  # empty answer: all-zero features
                feats.append(np.zeros(DIM, np.float32))
                continue
            hs = [out.hidden_states[layer][i, start:end].mean(0) for layer in LAYERS]
            lp = tok_lp[i, start - 1:end - 1]
            feats.append(np.concatenate(
                [torch.cat(hs).numpy(),
                 np.array([lp.mean().item(), lp.std(unbiased=False).item(),
                           (lp < -5).float().mean().item()], np.float32)]))
        return np.stack(feats)

    def features(self, instructions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        keys = [LMFeatureCache.key(i, a) for i, a in zip(instructions, answers)]
        have = self.cache.get_many(sorted(set(keys)))
        todo = {}
        for k, i, a in zip(keys, instructions, answers):
            if k not in have and k not in todo:
                todo[k] = (i, a)
        if todo:
            items = [(k, self.token_ids(i, a)) for k, (i, a) in todo.items()]
            items.sort(key=lambda kv: len(kv[1][0]))
            t0, done, start = time.time(), 0, 0
            while start < len(items):
                stop = start + 1
                while (stop < len(items)
                       and (stop - start + 1) * len(items[stop][1][0]) <= self.batch_tokens):
                    stop += 1
                chunk = items[start:stop]
                f = self._forward([x for _, x in chunk])
                new = {k: f[j] for j, (k, _) in enumerate(chunk)}
                self.cache.put_many(new)
                have.update(new)
                before, done, start = done, done + len(chunk), stop
                if self.log_every and (done // self.log_every != before // self.log_every
                                       or done == len(items)):
                    print(f"[props] LM features: {done}/{len(items)} new answers "
                          f"({time.time() - t0:.0f}s)", flush=True)
        return (np.stack([have[k] for k in keys]).astype(np.float64) if keys
                else np.zeros((0, DIM)))
