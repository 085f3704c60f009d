"""Tables of numbers shared between the driver and the worker processes it started:
anonymous memory files (Linux `memfd_create`), passed to a worker as a file descriptor
over its private socket, mapped by both. No name exists in the file system, so nothing
is left behind when a process dies: the memory is freed when the last mapping goes.
Only raw numbers cross this way; nothing is unpickled from it.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike


def available() -> bool:
    """True where shared tables can be made (Linux)."""
    return hasattr(os, "memfd_create")


@dataclass(frozen=True)
class TableSpec:
    """What a worker needs to map a table: its shape and dtype (numpy's name)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class SharedTable:
    """A numpy array in an anonymous memory file (`fd`); pages are allocated when first
    written. The array stays valid as long as it is referenced, even after `close`."""

    def __init__(self, shape: tuple[int, ...], dtype: DTypeLike, tag: str) -> None:
        self.spec = TableSpec(tuple(int(s) for s in shape), np.dtype(dtype).name)
        self.fd: int | None = os.memfd_create(f"ringfl-{tag}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, max(self.spec.nbytes, 1))
        self.array = attach(self.fd, self.spec)

    def close(self) -> None:
        """Close the file descriptor (the mapping lives on while referenced)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def attach(fd: int, spec: TableSpec) -> np.ndarray:
    """Map the table behind `fd` (read-write, shared)."""
    mm = mmap.mmap(fd, max(spec.nbytes, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    count = int(np.prod(spec.shape, dtype=np.int64))
    return np.frombuffer(mm, dtype=spec.dtype, count=count).reshape(spec.shape)


__all__ = ["SharedTable", "TableSpec", "attach", "available"]
