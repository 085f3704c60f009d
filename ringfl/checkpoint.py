"""Atomic, pickle-free checkpoints.

A checkpoint is one `.npz` file: named numpy arrays plus a JSON metadata record. It is
written to a temporary file in the same directory, flushed and fsync'ed, then renamed over
the old one (`os.replace` is atomic on POSIX), so a crash at any moment leaves either the
old checkpoint or the new one, never a torn file. Loading never unpickles
(`allow_pickle=False`), so a checkpoint from an untrusted place cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.errors import RingflError

_META_KEY = "__meta__"


class CheckpointError(RingflError):
    """A checkpoint file is missing, corrupt or of the wrong shape."""


@dataclass(frozen=True)
class Checkpoint:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def digest(*arrays: np.ndarray) -> str:
    """SHA-256 (hex) over the raw bytes of the arrays, in order: the model fingerprint
    peers compare to prove they hold bit-identical models."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()


def save(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write a checkpoint atomically (temp file + fsync + rename + fsync of the directory)."""
    path = Path(path)
    if _META_KEY in arrays:
        raise CheckpointError(f"{path}: array name {_META_KEY!r} is reserved")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_bytes = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            contents: dict[str, Any] = {_META_KEY: meta_bytes, **dict(arrays)}
            np.savez(f, **contents)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by `save`; raises CheckpointError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if _META_KEY not in z.files:
                raise CheckpointError(f"{path}: not a ringfl checkpoint (no metadata)")
            meta = json.loads(z[_META_KEY].tobytes().decode())
            arrays = {k: z[k] for k in z.files if k != _META_KEY}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (
        OSError,
        ValueError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (metadata is not an object)")
    return Checkpoint(arrays=arrays, meta=meta)
