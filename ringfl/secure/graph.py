"""The masking graph: which pairs of peers share a pairwise mask in a round.

Why not follow the ring: in the ring all-reduce a peer's ring successor receives a slice
of its masked input directly (reduce-scatter step 0) and its ring predecessor sends to
it. If the masks followed the ring order (each peer masking only with its two ring
neighbours), those two neighbours together would know every pairwise mask of the peer
between them, and — once the self masks are revealed at the end — could subtract them and
read its input. So the graph is drawn afresh every round from a pseudo-random
permutation of the members that every peer computes alike from public data:

    key  = HKDF-SHA256(ikm = "ringfl/v1/masking-graph", info = session ‖ round ‖
                        attempt ‖ sorted member ids)
    perm = members sorted by the AES-256-CTR keystream of `key` (one u64 per member)

and is independent of the ring order.

Shape:
- complete graph when N ≤ `complete_up_to` (default 8) or when the degree would be
  ≥ N − 1: then only a coalition of all N − 1 other peers can unmask a peer;
- otherwise a k-regular circulant on the permuted order: each peer masks with the k
  peers nearest to it in the permutation (offsets ±1 … ±k/2; odd k adds the opposite
  peer and needs N even). Default k = 2⌈log2 N⌉ (e.g. 14 at N = 100, 20 at N = 1000), the
  O(log N) degree of SecAgg+ (Bell et al. 2020): mask cost per peer grows as log N, not
  N. A peer is then exposed only if all k of its (random, per-round) mask neighbours and
  an observer of its frames collude; for a fixed coalition holding a fraction γ of the
  peers that happens to some peer in a round with probability ≲ N·γ^k.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ringfl.errors import ConfigError
from ringfl.secure.prg import expand

COMPLETE_UP_TO = 8


def default_degree(n: int) -> int:
    """2⌈log2 n⌉ (at least 2)."""
    return max(2, 2 * math.ceil(math.log2(max(n, 2))))


def _members(members: Iterable[int]) -> list[int]:
    ids = sorted(int(m) for m in members)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"masking graph: members {ids} list a peer twice")
    return ids


def permutation(members: Iterable[int], *, session: int, round: int, attempt: int = 0) -> list[int]:
    """The members in the shared pseudo-random order of this (session, round, attempt)."""
    ids = _members(members)
    info = struct.pack("<QII", session, round, attempt) + struct.pack(f"<{len(ids)}I", *ids)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        b"ringfl/v1/masking-graph"
    )
    keys = expand(key, 0, len(ids), np.uint64)
    order = np.argsort(keys, kind="stable")
    return [ids[i] for i in order]


def masking_graph(
    members: Iterable[int],
    *,
    session: int,
    round: int,
    attempt: int = 0,
    degree: int | None = None,
    complete_up_to: int = COMPLETE_UP_TO,
) -> dict[int, frozenset[int]]:
    """Neighbours of every member in this round's masking graph (symmetric, no loops).

    Raises `ConfigError` (naming `degree`) for a degree that cannot give a regular graph.
    """
    ids = _members(members)
    n = len(ids)
    if n <= 1:
        return {p: frozenset() for p in ids}
    k = default_degree(n) if degree is None else int(degree)
    if k < 2 and n > 2:
        raise ConfigError(f"masking graph: degree must be ≥ 2, got {k}")
    if n <= complete_up_to or k >= n - 1:
        full = frozenset(ids)
        return {p: full - {p} for p in ids}
    if k % 2 and n % 2:
        raise ConfigError(f"masking graph: odd degree {k} needs an even number of peers, got {n}")
    perm = permutation(ids, session=session, round=round, attempt=attempt)
    offsets = list(range(1, k // 2 + 1))
    if k % 2:
        offsets.append(n // 2)
    out: dict[int, set[int]] = {p: set() for p in ids}
    for pos, p in enumerate(perm):
        for d in offsets:
            q = perm[(pos + d) % n]
            out[p].add(q)
            out[q].add(p)
    return {p: frozenset(s) for p, s in out.items()}
