"""Which all-reduce to run, by member count and buffer size, and a factory for it.

Rule (`choose_algorithm`; measured on loopback with one process per peer, see
experiments/README.md):

* N = 1: nothing to exchange (any machine returns its own data).
* N a power of two: recursive halving/doubling, at every size. It moves exactly the
  ring's bytes, 2(N−1)/N·M per peer, in 2·log2 N hops instead of 2(N−1).
* N not a power of two: halving/doubling for buffers of at most `SMALL_BYTES`, the planned
  ring (one message per chunk when chunks are small) above that. Halving/doubling then
  folds N − p members into the p = 2^⌊log2 N⌋ others: two more hops, and the folded pairs
  send M more bytes than the bound (1.5× the bound at N = 6). In a cost model with hop
  latency α and bandwidth B it wins while M ≲ α·B (hops saved × α > bytes added / B): on a
  loaded loopback box (α ≈ ms) it was still faster at 40 MB, on a LAN (α ≈ 0.1 ms, 10 Gb/s)
  the crossover is near 1 MiB, hence the default.

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

#: buffers up to this many bytes use halving/doubling even when N is not a power of two
SMALL_BYTES = 1 << 20
#: largest message of the planned algorithms when `segment_bytes` is not given (see
#: `planned_segment_bytes`)
PLANNED_SEGMENT_BYTES = 8 << 20
#: smallest default message size of the planned algorithms (1 MiB, as gloo's ring)
PLANNED_MIN_SEGMENT_BYTES = 1 << 20
#: message size of the classic `RingAllReduce` when `segment_bytes` is not given
RING_SEGMENT_BYTES = 1 << 20
ALGORITHMS = ("auto", "ring", "planned-ring", "bidirectional-ring", "halving-doubling")


def choose_algorithm(n: int, nbytes: int, small_bytes: int = SMALL_BYTES) -> str:
    """The algorithm `make_allreduce(algorithm="auto")` runs for `n` members and a buffer
    of `nbytes` bytes: "halving-doubling" or "planned-ring" (see the module docstring)."""
    if n < 1 or nbytes < 0:
        raise ValueError(f"choose_algorithm: need n ≥ 1 and nbytes ≥ 0, got {n}, {nbytes}")
    if n & (n - 1) == 0 or nbytes <= small_bytes:
        return "halving-doubling"
    return "planned-ring"


def planned_segment_bytes(nbytes: int) -> int:
    """Default message size of a planned all-reduce of `nbytes` bytes: an eighth of the
    buffer, clamped to [1 MiB, 8 MiB]. Small buffers keep 1 MiB messages that pipeline
    within a step; big ones (10^7 float32 = 40 MB: 5 MB messages, one per block of
    halving/doubling at N = 8) send few large messages, because each ZeroMQ message costs
    a peer more than gloo pays for one (see `make_allreduce`). Every member computes the
    same value from the same length."""
    return min(PLANNED_SEGMENT_BYTES, max(PLANNED_MIN_SEGMENT_BYTES, nbytes // 8))


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
    segment_bytes: int | None = None,
) -> Machine:
    """A sum all-reduce machine: `algorithm` is "auto" (`choose_algorithm`), "ring"
    (`RingAllReduce`), or a `PlannedAllReduce` algorithm ("planned-ring",
    "bidirectional-ring", "halving-doubling"). Arguments as for `RingAllReduce`.

    `segment_bytes` is the largest message payload; by default `planned_segment_bytes`
    (1–8 MiB by buffer size) for the planned algorithms and `RING_SEGMENT_BYTES` (1 MiB)
    for "ring". Per message, a ZeroMQ peer pays fixed costs that gloo's in-place receives do not (a frame
    allocation, wake-ups of its I/O and Python threads, a tracked zero-copy send):
    with 5–8 MB instead of 1 MiB messages ringfl used 41–42 instead of 46–54 ms CPU per
    peer for 10^7 float32 at N = 4 and 8 (gloo: 30–39), see experiments/README.md."""
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"all-reduce algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
        )
    arr = None if data is None else np.asarray(data)
    m = arr.shape[0] if length is None and arr is not None and arr.ndim == 1 else length
    dt = dtype if dtype is not None else arr.dtype if arr is not None else None
    if m is None or dt is None:
        raise ValueError(f"all-reduce of peer {peer}: give data, or source with length and dtype")
    nbytes = int(m) * np.dtype(dt).itemsize
    if algorithm == "auto":
        algorithm = choose_algorithm(len(list(ring)), nbytes)
    if segment_bytes is None:
        segment_bytes = RING_SEGMENT_BYTES if algorithm == "ring" else planned_segment_bytes(nbytes)
    kw: dict[str, Any] = dict(
        length=length,
        dtype=dtype,
        source=source,
        out=out,
        session=session,
        round=round,
        segment_bytes=segment_bytes,
    )
    if algorithm == "ring":
        return RingAllReduce(peer, ring, data, **kw)
    name = "ring" if algorithm == "planned-ring" else algorithm
    return PlannedAllReduce(peer, ring, data, algorithm=name, **kw)


__all__ = [
    "ALGORITHMS",
    "PLANNED_MIN_SEGMENT_BYTES",
    "PLANNED_SEGMENT_BYTES",
    "RING_SEGMENT_BYTES",
    "SMALL_BYTES",
    "choose_algorithm",
    "make_allreduce",
    "planned_segment_bytes",
]
