"""An attacker's harness for the secure ring sum (used by tests/test_secure_attack.py).

A coalition of peers pools exactly what it legitimately holds:

- the frames its members received (captured on the in-memory network);
- its members' own state: every 32-byte value anywhere in their machines — their own
  random draws (ephemeral keys, self-mask seeds), keys they derived, shares they opened,
  seeds that were revealed to them (a "memory dump", so the attacker does not depend on
  how the protocol names or stores things);
- every 32-byte window of the small blobs it received (revealed seeds travel there);
- its members' inputs and results.

It then tries every *linear* way to unmask: a masked word is input + Σ ±PRG(key), so any
unmasking is a linear combination (mod 2^k) of received words, masks it can expand and
values it knows. A combination that works mod 2^k works for the lowest bit too, so it is
enough to ask, over GF(2) on the lowest bit plane, whether an honest peer's encoded input
lies in the span of everything the coalition holds, on some stretch of the vector — and
whether it is *not* already in the span of what the sum legitimately reveals (the
coalition's inputs and results). Stretches are the pieces that every chunk and segment
boundary of every attempt cuts the vector into; each is hundreds of words long, so a
random vector falls into a span of m < 150 vectors by chance with probability < 2^−100.
Nonlinear attacks would have to break AES or X25519.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ringfl.collective.base import split
from ringfl.collective.events import Message
from ringfl.errors import SecureAggregationError
from ringfl.secure.aggregate import Masking, SecureRingAllReduce, unpack_step
from ringfl.secure.keys import PeerKeys
from ringfl.secure.prg import expand
from ringfl.transport.memory import Crash, MemoryNetwork, Suspect

SESSION, ROUND = 91, 3
_WINDOW_BLOBS = 160  # scan every 32-byte window of blobs up to this size


def entropy_for(seed: int, peer: int):
    """Reproducible entropy for tests (SHAKE-256 of a counter); real peers use os.urandom."""
    counter = [0]

    def draw(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(f"{seed}/{peer}/{counter[0]}".encode()).digest(n)

    return draw


def machines_for(ring, xs, keys, pubs, *, seed, masking=None, session=SESSION, round=ROUND):
    """One `SecureRingAllReduce` per peer of `ring`, with reproducible entropy."""
    return {
        p: SecureRingAllReduce(
            p,
            ring,
            xs[p],
            keys[p],
            pubs,
            session=session,
            round=round,
            masking=masking,
            entropy=entropy_for(seed, p),
        )
        for p in ring
    }


@dataclass
class Run:
    ring: list[int]
    xs: dict[int, np.ndarray]
    machines: dict[int, SecureRingAllReduce]
    frames: list[tuple[int, int, Message]]  # (sender, to, message)
    length: int
    aborted: bool


def length_for(n: int, per_piece: int = 256) -> int:
    """A vector length whose pieces (all chunk/segment cuts for n and n − 1 members) are
    each at least `per_piece` words long."""
    return 2 * n * max(n - 1, 1) * per_piece


def run(n: int, seed: int, faults: Sequence = (), masking: Masking | None = None) -> Run:
    rng = np.random.default_rng(seed)
    keys = {p: PeerKeys.from_private_bytes(rng.bytes(32)) for p in range(n)}
    pubs = {p: k.public_bytes for p, k in keys.items()}
    m = length_for(n)
    xs = {p: rng.uniform(-0.4, 0.4, m) for p in range(n)}
    ring = [int(p) for p in rng.permutation(n)]
    machines = machines_for(ring, xs, keys, pubs, seed=seed, masking=masking)
    raw: list = []
    aborted = False
    try:
        MemoryNetwork().run(machines, faults, capture=raw)
    except SecureAggregationError:
        aborted = True
    from ringfl import wire

    frames = [(s, t, wire.decode(f, max_elements=1 << 28)) for s, t, f in raw]
    return Run(ring, xs, machines, frames, m, aborted)


def sends_per_peer(r: Run) -> dict[int, int]:
    out = dict.fromkeys(r.machines, 0)
    for s, _, _ in r.frames:
        out[s] += 1
    return out


def schedules(n: int, seed: int, peers: Iterable[int] | None = None, masking=None):
    """Every crash point and every wrong-declaration point of every peer (or `peers`)."""
    clean = run(n, seed, masking=masking)
    sends = sends_per_peer(clean)
    for p in sorted(sends) if peers is None else peers:
        for k in range(sends[p] + 1):
            yield [Crash(p, k)]
            yield [Suspect(p, k)]


# -- what the coalition holds ----------------------------------------------------------


def _secrets(obj, out: set[bytes], seen: set[int], depth: int = 0) -> None:
    """Every 32-byte bytes value reachable from `obj` (its own memory)."""
    if depth > 8 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, bytes | bytearray | memoryview):
        b = bytes(obj)
        if len(b) == 32:
            out.add(b)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _secrets(k, out, seen, depth + 1)
            _secrets(v, out, seen, depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            _secrets(v, out, seen, depth + 1)
    elif type(obj).__module__.startswith("ringfl"):
        fields = dict(getattr(obj, "__dict__", {}))
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                fields[name] = getattr(obj, name)
        for v in fields.values():
            _secrets(v, out, seen, depth + 1)


def _bits(words: np.ndarray) -> np.ndarray:
    return (np.asarray(words) & 1).astype(np.uint8)


def _as_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


class _Basis:
    """A GF(2) basis of Python-int bit vectors."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}

    def reduce(self, v: int) -> int:
        while v:
            top = v.bit_length() - 1
            row = self.rows.get(top)
            if row is None:
                return v
            v ^= row
        return 0

    def add(self, v: int) -> None:
        v = self.reduce(v)
        if v:
            self.rows[v.bit_length() - 1] = v


@dataclass(frozen=True)
class Leak:
    coalition: tuple[int, ...]
    victim: int
    start: int
    stop: int


def _pieces(r: Run, sizes: set[int], segment_words: int) -> list[tuple[int, int]]:
    m = r.length
    cuts = {0, m}
    for n in sizes:
        for c in range(n):
            for a, b in split(c * m // n, (c + 1) * m // n, segment_words, 2):
                cuts |= {a, b}
    edges = sorted(cuts)
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def attack(r: Run, coalition: Iterable[int], masks: dict[bytes, np.ndarray]) -> list[Leak]:
    """Every honest peer's input stretch that `coalition` can compute beyond the sum."""
    members = tuple(sorted(coalition))
    any_machine = r.machines[members[0]]
    codec, n0 = any_machine.codec, any_machine.n0
    word_mask = (1 << codec.bits) - 1
    segment_words = any_machine.masking.segment_bytes // codec.word_dtype.itemsize
    # what it holds
    secrets: set[bytes] = set()
    for p in members:
        _secrets(r.machines[p], secrets, set())
    observed: list[tuple[int, int, np.ndarray]] = []  # (start, stop, low bits)
    sizes = {n0}
    for _, to, msg in r.frames:
        if to not in members:
            continue
        h, payload = msg.header, msg.payload
        if payload.dtype == np.uint8:
            raw = payload.tobytes()
            if len(raw) <= _WINDOW_BLOBS:
                secrets.update(raw[i : i + 32] for i in range(len(raw) - 31))
            continue
        _, epoch, _ = unpack_step(h.step)
        n = n0 - epoch
        sizes.add(n)
        m = r.length
        a, b = split(h.chunk * m // n, (h.chunk + 1) * m // n, segment_words, 2)[h.segment]
        observed.append((a, b, _bits(payload)))
    for key in secrets:
        if key not in masks:
            masks[key] = _bits(expand(key, 0, r.length, codec.word_dtype))
    own = [_bits(codec.quantize_reference(r.xs[p]) & word_mask) for p in members]
    results = [
        _bits(np.round(r.machines[p].result * 2.0**codec.frac_bits).astype(np.int64) & word_mask)
        for p in members
        if r.machines[p].result is not None
    ]
    honest = [p for p in r.machines if p not in members]
    targets = {v: _bits(codec.quantize_reference(r.xs[v]) & word_mask) for v in honest}
    leaks = []
    for a, b in _pieces(r, sizes, segment_words):
        allowed = _Basis()
        for v in own + results:
            allowed.add(_as_int(v[a:b]))
        full = _Basis()
        full.rows = dict(allowed.rows)
        for s, e, bits in observed:
            if s <= a and b <= e:
                full.add(_as_int(bits[a - s : b - s]))
        for key in secrets:
            full.add(_as_int(masks[key][a:b]))
        for v, t in targets.items():
            want = _as_int(t[a:b])
            if full.reduce(want) == 0 and allowed.reduce(want) != 0:
                leaks.append(Leak(members, v, a, b))
    return leaks


def coalitions(ring: Sequence[int]) -> list[tuple[int, ...]]:
    """Every single peer and every pair of ring neighbours."""
    n = len(ring)
    singles = [(p,) for p in ring]
    pairs = [tuple(sorted((ring[i], ring[(i + 1) % n]))) for i in range(n)] if n > 2 else []
    return singles + sorted(set(pairs))


def leaks_in(r: Run, groups: Iterable[Iterable[int]] | None = None) -> list[Leak]:
    masks: dict[bytes, np.ndarray] = {}
    out: list[Leak] = []
    for g in coalitions(r.ring) if groups is None else groups:
        out += attack(r, g, masks)
    return out
