"""Per-job runtime settings: thread counts and seeds, set explicitly, never implied.

Snakemake runs several jobs side by side; each job sets its own torch thread count
(from the rule's `threads:`) so that two jobs on two cores do not fight over them.
"""

from __future__ import annotations

import os
import random

import numpy as np


def set_threads(n: int) -> None:
    import torch

    n = max(1, int(n))
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any tuple of names and numbers (not Python's hash())."""
    import hashlib

    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 31) - 1)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
