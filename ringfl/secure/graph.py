"""The masking graph: which pairs of peers share a pairwise mask in a round.

Why not follow the ring: in the ring all-reduce a peer's ring successor receives a slice
of its masked input directly (reduce-scatter step 0) and its ring predecessor sends to
it. If the masks followed the ring order (each peer masking only with its two ring
neighbours), those two neighbours together would know every pairwise mask of the peer
between them, and — once the self masks are revealed at the end — could subtract them and
read its input. So the graph is drawn afresh every attempt from a pseudo-random
permutation of the members that every peer computes alike from public data:

    key  = HKDF-SHA256(ikm = "ringfl/v1/masking-graph", info = session ‖ round ‖
                        attempt ‖ sorted member ids)
    perm = members sorted by the AES-256-CTR keystream of `key` (one u64 per member)

and is independent of the ring order.

Collusion model and degree. A coalition holds a fraction γ (`collusion`, default 1/3) of
the N members: c = ⌊γ·N⌋ peers, fixed before the permutation of the attempt is drawn
(static corruption). Conservatively the coalition is assumed to see every masked word of
every peer; an honest peer is then *exposed* exactly when all k of its mask neighbours
are in the coalition. In the circulant below a peer's neighbours are the peers at k fixed
offsets of a uniformly random permutation, i.e. a uniformly random k-subset of the N − 1
others, so (hypergeometric, exact)

    P(a given honest peer is exposed) = C(c, k) / C(N − 1, k)

and, by the union bound over the N − c honest peers,

    P(some honest peer is exposed in an attempt) ≤ (N − c) · C(c, k) / C(N − 1, k).

`degree_for` returns the smallest k ≥ 2 that makes this at most 2^−30 (so k = c + 1 is
always enough: then no coalition member set can cover k neighbours). The bound is per
attempt: an attempt re-run draws a fresh graph, so A attempts of one round give A draws.

Shape:
- complete graph when N ≤ `complete_up_to` (default 8: at most 7 mask expansions per
  element buy resistance to any coalition of N − 2) or when the degree is ≥ N − 1;
- otherwise a k-regular circulant on the permuted order: each peer masks with the k
  peers nearest to it in the permutation (offsets ±1 … ±k/2; odd k adds the opposite
  peer and needs N even, so the default degree is rounded up to even for odd N). Mask
  cost per peer: k AES-CTR expansions per element (plus its self mask).

An explicit `degree` overrides `degree_for` (tests and experiments); `complete_up_to`
still applies to it.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Iterable
from fractions import Fraction

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ringfl.errors import ConfigError
from ringfl.secure.prg import expand

#: N at or below which the masking graph is complete whatever the degree.
COMPLETE_UP_TO = 8
#: Default coalition fraction γ of the collusion model.
COLLUSION = Fraction(1, 3)
#: Default target: log2 of the largest accepted exposure probability per attempt.
TARGET_LOG2 = -30


def _fraction(collusion: float | Fraction) -> Fraction:
    """γ as an exact fraction (a float is read as the nearest fraction with denominator
    ≤ 10^6, so 1/3 means one third); ConfigError unless 0 ≤ γ < 1."""
    if isinstance(collusion, bool) or not isinstance(collusion, numbers.Real):
        raise ConfigError(f"masking graph: collusion must be a number in [0, 1), got {collusion!r}")
    g = (
        collusion
        if isinstance(collusion, Fraction)
        else Fraction(collusion).limit_denominator(10**6)
    )
    if not 0 <= g < 1:
        raise ConfigError(f"masking graph: collusion must be in [0, 1), got {collusion!r}")
    return g


def coalition_size(n: int, collusion: float | Fraction = COLLUSION) -> int:
    """c = ⌊γ·n⌋, the number of colluding peers among n under the collusion model."""
    return math.floor(_fraction(collusion) * n)


def exposure_bound(n: int, k: int, coalition: int) -> Fraction:
    """(n − c)·C(c, k)/C(n − 1, k): the union bound, over the n − c honest peers, on the
    probability that some honest peer has all k mask neighbours among the c colluders
    (k-subset of the n − 1 others, uniformly random). Exact."""
    if not 0 <= coalition < n or not 0 <= k <= n - 1:
        raise ConfigError(
            f"exposure_bound: need 0 ≤ c < n and 0 ≤ k < n, got {n=} {k=} {coalition=}"
        )
    return Fraction((n - coalition) * math.comb(coalition, k), math.comb(n - 1, k))


def degree_for(
    n: int, collusion: float | Fraction = COLLUSION, target_log2: int = TARGET_LOG2
) -> int:
    """Smallest mask degree k ≥ 2 with

        (n − c) · C(c, k) / C(n − 1, k) ≤ 2^target_log2,   c = ⌊collusion · n⌋,

    i.e. the probability (union bound, exact hypergeometric terms) that a coalition of c
    peers holds all k mask neighbours of some honest peer in one attempt's graph is at
    most 2^target_log2 (default 2^−30). n − 1 (the complete graph) when no k < n − 1
    does; for n ≤ 2 that is n − 1 too. Always k ≤ min(n − 1, max(2, c + 1)): c + 1
    neighbours can never all collude. Parity is not applied here (see `default_degree`).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"masking graph: number of peers must be an int ≥ 0, got {n!r}")
    if isinstance(target_log2, bool) or not isinstance(target_log2, int) or target_log2 > 0:
        raise ConfigError(f"masking graph: target_log2 must be an int ≤ 0, got {target_log2!r}")
    c = coalition_size(n, collusion)
    if n <= 2:
        return max(n - 1, 0)
    target = Fraction(1, 1 << -target_log2)
    # r = C(c, k) / C(n − 1, k), built up one factor (c − i)/(n − 1 − i) at a time
    r = Fraction(c * (c - 1), (n - 1) * (n - 2))
    for k in range(2, n - 1):
        if (n - c) * r <= target:
            return k
        r *= Fraction(max(c - k, 0), n - 1 - k)
    return n - 1


def default_degree(
    n: int,
    *,
    collusion: float | Fraction = COLLUSION,
    complete_up_to: int = COMPLETE_UP_TO,
) -> int:
    """The degree `masking_graph` uses when none is given: n − 1 (complete) when
    n ≤ complete_up_to or `degree_for` reaches n − 1; else `degree_for(n, collusion)`,
    rounded up to even when n is odd (a circulant of odd degree needs n even)."""
    k = degree_for(n, collusion)
    if n % 2 and k % 2:
        k += 1
    return n - 1 if n <= complete_up_to or k >= n - 1 else k


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
    collusion: float | Fraction = COLLUSION,
) -> dict[int, frozenset[int]]:
    """Neighbours of every member in this attempt's masking graph (symmetric, no loops).

    Degree: `degree` if given, else `default_degree(N, collusion=…)` — the smallest that
    keeps the exposure probability of any honest peer under a coalition of ⌊collusion·N⌋
    at most 2^−30 (see the module docstring). Complete when N ≤ `complete_up_to` or the
    degree is ≥ N − 1. Raises `ConfigError` (naming `degree`) for a degree that cannot
    give a regular graph, and for a collusion fraction outside [0, 1).
    """
    ids = _members(members)
    n = len(ids)
    if degree is None:
        k = default_degree(n, collusion=collusion, complete_up_to=complete_up_to)
    else:
        _fraction(collusion)  # still refuse a bad value
        k = int(degree)
    if n <= 1:
        return {p: frozenset() for p in ids}
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
