"""Atomic file output and small JSON helpers.

Every file the pipeline writes goes through these functions: the content is written to a
temporary file in the same folder and renamed into place, so an interrupted job never
leaves a half-written output that a later step (or Snakemake) would take as finished.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input (config, data, arguments): reported as one line, exit code 2."""


def _default(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """Make floats JSON-safe: inf/nan are written as strings, as the contracts say."""
    if isinstance(o, float):
        if math.isinf(o):
            return "inf" if o > 0 else "-inf"
        if math.isnan(o):
            return "nan"
        return o
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        return _clean(o.item())
    return o


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; move it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=True, default=_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def read_json_input(path: str | os.PathLike) -> Any:
    """Read a JSON file given by the user: a missing or malformed file is one InputError."""
    try:
        return read_json(path)
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(_clean(r), default=_default) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {i}: not valid JSON ({e.msg})") from None
    return rows


def parse_eps(value: str | float | int) -> float:
    """Parse an epsilon: a positive number or 'inf'."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a positive number or 'inf', got {value!r}") from None
    if not eps > 0 or math.isnan(eps):
        raise InputError(f"eps must be > 0, got {value!r}")
    return eps


def eps_tag(eps: float) -> str:
    """Folder-name form of eps: 'inf', '0.1', '2' (no trailing .0)."""
    if math.isinf(eps):
        return "inf"
    return f"{eps:g}"
