"""Which all-reduce to run, by member count and buffer size, and a factory for it.

Rule (`choose_algorithm`; measured on loopback with one process per peer, see
experiments/README.md):

* N = 1: nothing to exchange (any machine returns its own data).
* N a power of two: recursive halving/doubling. It moves exactly the ring's bytes,
  2(N−1)/N·M per peer, in 2·log2 N hops instead of 2(N−1).
* N not a power of two: halving/doubling for buffers of at most `SMALL_BYTES`, where hops
  cost more than bytes (its fold sends M extra per folded pair); the ring above that,
  which stays at the bandwidth bound.

Every member must pick the same algorithm: the choice depends only on N, the length, the
dtype and the thresholds, which all members share. A member that picked another one is
rejected with a reason (the algorithm code travels in every message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ringfl.collective.allreduce import RingAllReduce, Source
from ringfl.collective.events import Machine
from ringfl.collective.planned import PlannedAllReduce
from ringfl.errors import ConfigError

#: buffers up to this many bytes use halving/doubling even when N is not a power of two
SMALL_BYTES = 1 << 20

ALGORITHMS = ("auto", "ring", "planned-ring", "bidirectional-ring", "halving-doubling")


def choose_algorithm(n: int, nbytes: int, small_bytes: int = SMALL_BYTES) -> str:
    """The algorithm `make_allreduce(algorithm="auto")` runs for `n` members and a buffer
    of `nbytes` bytes: "halving-doubling" or "ring" (see the module docstring)."""
    if n < 1 or nbytes < 0:
        raise ConfigError(f"choose_algorithm: need n ≥ 1 and nbytes ≥ 0, got {n}, {nbytes}")
    if n & (n - 1) == 0 or nbytes <= small_bytes:
        return "halving-doubling"
    return "ring"


def make_allreduce(
    peer: int,
    ring: Sequence[int],
    data: Any = None,
    *,
    algorithm: str = "auto",
    length: int | None = None,
    dtype: Any = None,
    source: Source | None = None,
    out: np.ndarray | None = None,
    session: int = 0,
    round: int = 0,
    segment_bytes: int = 1 << 20,
) -> Machine:
    """A sum all-reduce machine: `algorithm` is "auto" (`choose_algorithm`), "ring"
    (`RingAllReduce`), or a `PlannedAllReduce` algorithm ("planned-ring",
    "bidirectional-ring", "halving-doubling"). Arguments as for `RingAllReduce`."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"all-reduce algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
        )
    kw: dict[str, Any] = dict(
        length=length,
        dtype=dtype,
        source=source,
        out=out,
        session=session,
        round=round,
        segment_bytes=segment_bytes,
    )
    if algorithm == "auto":
        arr = None if data is None else np.asarray(data)
        m = arr.shape[0] if length is None and arr is not None and arr.ndim == 1 else length
        dt = np.dtype(dtype if dtype is not None else arr.dtype if arr is not None else "u1")
        if m is None:
            raise ConfigError(f"all-reduce of peer {peer}: source needs length and dtype")
        algorithm = choose_algorithm(len(list(ring)), int(m) * dt.itemsize)
    if algorithm == "ring":
        return RingAllReduce(peer, ring, data, **kw)
    name = "ring" if algorithm == "planned-ring" else algorithm
    return PlannedAllReduce(peer, ring, data, algorithm=name, **kw)


__all__ = ["ALGORITHMS", "SMALL_BYTES", "choose_algorithm", "make_allreduce"]
