"""Bulk ring sums: a fault-free round's ring sum for every party at once, for the
simulator at scale (hundreds to tens of thousands of parties in one process).

A ring all-reduce over N parties is 2N(N − 1) messages (the secure sum adds four
all-gather laps, N(N − 1) messages each): 8·10^6 messages per round at N = 1,000 and
2·10^8 at N = 10,000 for the plain sum, too many to pass one by one through Python. When
nothing can go wrong in a round (no crash, partition, offline party or straggler the
deadlines would declare), the outcome of the message-level run is known in closed form,
and this module computes it directly — the same bits, the same virtual times:

- **Plain ring** (`plain_ring_sum`): element e of chunk c is summed in ring order starting
  at the chunk's owner, ((x_c + x_c+1) + x_c+2) + …, exactly as `RingAllReduce` adds, one
  vectorised step per ring position.
- **Secure ring** (`secure_ring_sum`): every party's secrets are built with the real
  building blocks — fresh ephemeral X25519 keys, the collusion-sized masking graph
  (`secure.graph`), HKDF pairwise mask keys, the attempt's self-mask committee with its
  Shamir shares sealed for and opened by every party, AES-CTR masks (`secure.prg`) — and
  the words are summed modulo 2^k. The pairwise masks cancel in that sum when both ends
  of every edge derive the same key, which is checked, so their keystreams are not
  generated; the committee's self masks are added, removed once (every party would
  remove the same masks) and the sum checked against the plain encodings, so a key or
  mask that does not cancel is an error, not a silent wrong model. The key work does not
  depend on the inputs (`SecurePrep`): the simulator runs it in steps while it waits for
  its training workers, and `SecurePrep.sum` does what is left.
- **Time and bytes** (`ring_schedule`): the message-level network's timing model (one
  FIFO NIC per party, size / bandwidth + latency per link; a party forwards a message
  when it has it and has started; late starters hold what arrives) run as a recurrence
  over ring steps, vectorised over parties: the same arrival times, bytes and messages,
  and each party's longest silence (what the failure detector would see).

Tests check all three against `MemoryNetwork` running the real machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ringfl.collective.base import segment_elements, split
from ringfl.secure import shamir
from ringfl.secure.aggregate import Masking, committee
from ringfl.secure.keys import KEY_BYTES, PeerKeys, decode_public_key
from ringfl.secure.prg import MaskStreamer
from ringfl.secure.shares import AttemptSecrets, LongTermKeys
from ringfl.transport.memory import MemoryNetwork
from ringfl.wire import HEADER_SIZE


@dataclass
class Schedule:
    """Per ring position: when it finished, payload bytes and messages it sent, and its
    longest silence (time without an accepted message, from its start)."""

    finished_at: np.ndarray
    bytes_sent: np.ndarray
    messages: np.ndarray
    silence: np.ndarray


@dataclass(frozen=True)
class Gather:
    """A ring all-gather lap: `blob_bytes[i]` is the blob of ring position i."""

    blob_bytes: np.ndarray


@dataclass(frozen=True)
class AllReduce:
    """A ring all-reduce of `length` elements of `itemsize` bytes in `segment_bytes`
    segments (as `RingAllReduce`)."""

    length: int
    itemsize: int
    segment_bytes: int = 1 << 20


class _Ring:
    """The vectorised clock of one ring: position r sends to position r + 1."""

    def __init__(
        self,
        net: MemoryNetwork,
        ring: Sequence[int],
        start_at: np.ndarray,
        link_factor: Mapping[tuple[int, int], float],
    ) -> None:
        n = self.n = len(ring)
        lat = np.empty(n)
        inv_bw = np.empty(n)
        for r, p in enumerate(ring):
            q = ring[(r + 1) % n]
            link = net.link(p, q)
            f = link_factor.get((min(p, q), max(p, q)), 1.0)
            lat[r] = f * link.latency_s
            inv_bw[r] = f / link.bandwidth_Bps
        self.lat, self.f_over_bw = lat, inv_bw
        self.start = start_at.astype(np.float64)
        self.enter = self.start.copy()
        self.nic = np.zeros(n)
        self.last = self.start.copy()
        self.silence = np.zeros(n)
        self.bytes = np.zeros(n, dtype=np.int64)
        self.messages = np.zeros(n, dtype=np.int64)

    def send(self, ready: np.ndarray, size: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Every position r with `valid[r]` sends `size[r]` payload bytes once it is
        `ready`; returns the arrival times indexed by the receiving position (−inf where
        nothing arrives). `_send_all` when every position sends."""
        start = np.maximum(ready, self.nic)
        end = start + (size + HEADER_SIZE) * self.f_over_bw
        arrive = end + self.lat
        self.nic = np.where(valid, end, self.nic)
        self.bytes += np.where(valid, size, 0)
        self.messages += valid
        arrive = np.where(valid, arrive, -np.inf)
        got = np.roll(arrive, 1)  # position r + 1 receives what r sent
        accepted = np.maximum(got, self.start)  # a late starter takes it when it starts
        ok = got > -np.inf
        self.silence = np.where(ok, np.maximum(self.silence, accepted - self.last), self.silence)
        self.last = np.where(ok, np.maximum(self.last, accepted), self.last)
        return got

    def _send_all(self, ready: np.ndarray, size: np.ndarray) -> np.ndarray:
        """`send` when every position sends: the same arithmetic with fewer temporaries
        (a ring of N positions takes O(N) such steps, each O(N): at 30,000 parties this
        loop was most of a round's simulated communication)."""
        end = np.maximum(ready, self.nic)
        cost = np.add(size, HEADER_SIZE)
        end += cost * self.f_over_bw
        got = np.empty(self.n)  # position r + 1 receives what r sent
        np.add(end[:-1], self.lat[:-1], out=got[1:])
        got[0] = end[-1] + self.lat[-1]
        self.nic = end
        self.bytes += size
        self.messages += 1
        accepted = np.maximum(got, self.start)  # a late starter takes it when it starts
        np.maximum(self.silence, accepted - self.last, out=self.silence)
        np.maximum(self.last, accepted, out=self.last)
        return got

    def gather(self, stage: Gather) -> None:
        n = self.n
        if n == 1:
            return
        blob = np.asarray(stage.blob_bytes, dtype=np.int64)
        twice = np.concatenate([blob, blob])  # rotations of `blob` are views into it
        prev = None
        for s in range(n - 1):
            size = twice[n - s : 2 * n - s]  # position r forwards the blob of position r − s
            ready = self.enter if prev is None else np.maximum(prev, self.enter)
            prev = self._send_all(ready, size)
        assert prev is not None
        self.enter = prev

    def allreduce(self, stage: AllReduce) -> None:
        n, m = self.n, stage.length
        if n == 1:
            return
        per = segment_elements(stage.segment_bytes, np.dtype(f"u{stage.itemsize}"))
        segs = [split(c * m // n, (c + 1) * m // n, per, 2) for c in range(n)]
        k_max = max(len(s) for s in segs)
        sizes = np.full((n, k_max), -1, dtype=np.int64)
        for c, ss in enumerate(segs):
            sizes[c, : len(ss)] = [(b - a) * stage.itemsize for a, b in ss]
        everyone = np.all(sizes >= 0, axis=0).tolist()  # does every chunk have segment k?
        twice = np.concatenate([sizes, sizes])  # rotations of `sizes` are views into it
        prev: list[np.ndarray] = []  # per segment: when each position got it
        for s in range(2 * (n - 1)):
            # position r sends chunk (r − shift) mod n: the chunks' sizes rotated by shift
            shift = (s if s < n - 1 else s - n) % n
            size = twice[n - shift : 2 * n - shift]
            new = []
            for k in range(k_max):
                ready = np.maximum(prev[k], self.enter) if prev else self.enter
                if everyone[k]:
                    new.append(self._send_all(ready, size[:, k]))
                else:
                    valid = size[:, k] >= 0
                    new.append(self.send(ready, np.maximum(size[:, k], 0), valid))
            prev = new
        self.enter = prev[0] if k_max == 1 else np.maximum.reduce(prev)


def ring_schedule(
    net: MemoryNetwork,
    ring: Sequence[int],
    stages: Sequence[Gather | AllReduce],
    start_at: Mapping[int, float] | None = None,
    link_factor: Mapping[tuple[int, int], float] | None = None,
) -> Schedule:
    """The virtual times, bytes and messages of `stages` run one after another around
    `ring` on `net`, each party starting at `start_at` (see the module docstring)."""
    start = np.array([float((start_at or {}).get(p, 0.0)) for p in ring])
    lf = {(min(a, b), max(a, b)): f for (a, b), f in (link_factor or {}).items()}
    clock = _Ring(net, ring, start, lf)
    for st in stages:
        if isinstance(st, Gather):
            clock.gather(st)
        else:
            clock.allreduce(st)
    return Schedule(clock.enter, clock.bytes, clock.messages, clock.silence)


class RingSum:
    """The sum `RingAllReduce` gives every member, bit for bit, from the n inputs added
    one at a time in ring order (`add`), without holding them all: chunk c is summed in
    ring order starting at its owner, ((x_c + x_c+1) + …) + x_c−1. A chunk's head
    (positions c … n − 1) is added as those inputs arrive; the parts of position i after
    its own chunk wait for the end (about half of the inputs' size in all)."""

    def __init__(self, n: int, length: int, dtype: np.dtype | type) -> None:
        if n < 1:
            raise ValueError("RingSum: at least one input")
        self.n, self.length = n, length
        self.bounds = [c * length // n for c in range(n + 1)]
        self.out = np.empty(length, dtype=dtype)
        self._tails: list[np.ndarray] = []  # position i's chunks i+1 … n−1
        self._added = 0

    def add(self, x: np.ndarray) -> None:
        """The input of the next ring position (read now, not kept)."""
        i, b = self._added, self.bounds
        if i == self.n:
            raise ValueError(f"RingSum: all {self.n} inputs are in")
        if x.shape != (self.length,) or x.dtype != self.out.dtype:
            raise ValueError(
                f"RingSum: input {i} is {x.dtype} {x.shape}, expected "
                f"{self.out.dtype} ({self.length},)"
            )
        out = self.out
        out[b[i] : b[i + 1]] = x[b[i] : b[i + 1]]  # chunk i starts at its owner
        np.add(out[: b[i]], x[: b[i]], out=out[: b[i]])  # the heads of chunks 0 … i−1
        if i + 1 < self.n:
            self._tails.append(x[b[i + 1] :].copy())
        self._added += 1

    def result(self) -> np.ndarray:
        """The sum, once every input is in: each chunk's tail, positions 0 … c − 1 in order."""
        if self._added != self.n:
            raise ValueError(f"RingSum: {self._added} of {self.n} inputs are in")
        out, b = self.out, self.bounds
        for i, tail in enumerate(self._tails):
            np.add(out[b[i + 1] :], tail, out=out[b[i + 1] :])
        self._tails = []
        return out


def plain_ring_sum(rows: np.ndarray) -> np.ndarray:
    """`RingSum` of the rows of a matrix: `rows[i]` is the input of ring position i."""
    summed = RingSum(rows.shape[0], rows.shape[1], rows.dtype)
    for x in rows:
        summed.add(x)
    return summed.result()


@dataclass
class SecureParty:
    """What a party brings to a secure sum: its long-term keys, its input, and its
    source of randomness for the round's secrets (None: the OS)."""

    keys: PeerKeys
    data: np.ndarray
    entropy: Callable[[int], bytes] | None = None


@dataclass
class SecureSum:
    """The outcome of `secure_ring_sum`: the decoded sum (every member gets these bits),
    each party's clipped count, the committee, the masking graph's degree, and seconds
    spent on keys/shares and on masks."""

    result: np.ndarray
    clipped: dict[int, int]
    committee: list[int]
    degree: int
    seconds: dict[str, float] = field(default_factory=dict)


class SecurePrep:
    """The part of one fault-free bulk secure sum that does not depend on the inputs: the
    SHARES stage (every party's fresh secrets, the committee's seeds Shamir-shared, sealed
    for and opened by every party) and the pairwise-key check. `steps()` does it a party
    at a time, so a driver can run it while it waits for something else (the simulator:
    for local training in worker processes); `sum` does what is left, then the SUM.

    `keys`: each party's long-term keys; `entropy`: its source of randomness for the
    round's secrets (missing or None: the OS); `long_term`: see `secure_ring_sum`."""

    def __init__(
        self,
        ring: Sequence[int],
        keys: Mapping[int, PeerKeys],
        public_keys: Mapping[int, bytes | str],
        *,
        session: int,
        round: int,
        masking: Masking,
        entropy: Mapping[int, Callable[[int], bytes] | None] | None = None,
        long_term: dict[int, LongTermKeys] | None = None,
    ) -> None:
        import os

        t0 = time.perf_counter()
        self.members = [int(p) for p in ring]
        self.session, self.round, self.masking = session, round, masking
        self.codec = masking.codec(len(self.members))
        self.threshold = masking.threshold_for(len(self.members))
        self.graph = masking.graph(self.members, session=session, round=round, attempt=0)
        self.committee = committee(
            self.members, self.graph, self.threshold, session=session, round=round, attempt=0
        )
        self._pubs = {
            p: decode_public_key(public_keys[p], where=f"public_key of peer {p}")
            for p in self.members
        }
        self._keys = keys
        self._rand = {p: (entropy or {}).get(p) or os.urandom for p in self.members}
        self._long_term = {} if long_term is None else long_term
        self.secrets: dict[int, AttemptSecrets] = {}
        self._work = self._prepare()
        self.ahead_s = 0.0  # seconds of `steps()` run before `sum` (by a waiting driver)
        self.keys_s = time.perf_counter() - t0  # seconds of the rest, in `sum`

    def steps(self) -> Iterator[None]:
        """The preparation, one short step (one party's work, ≈ k key agreements) per
        item; exhausting it is optional (`sum` finishes it)."""
        end = object()
        while True:
            t0 = time.perf_counter()
            step = next(self._work, end)
            self.ahead_s += time.perf_counter() - t0
            if step is end:
                return
            yield

    def _prepare(self) -> Iterator[None]:
        members, comm, graph = self.members, self.committee, self.graph
        secrets, rand, lts = self.secrets, self._rand, self._long_term
        index = {p: i for i, p in enumerate(members)}
        for p in members:
            secrets[p] = AttemptSecrets(p, 0, rand[p], session=self.session, round=self.round)
        # SHARES: ephemeral public keys (a party needs its mask neighbours' and the
        # committee's), and the committee's seeds, Shamir-shared and sealed for each party
        for p in members:
            s = secrets[p]
            for q in (*graph[p], *comm):
                s.eph_publics[q] = secrets[q].eph_public
        for p in members:
            if p not in lts or lts[p].keys is not self._keys[p]:
                lts[p] = LongTermKeys(p, self._keys[p], self._pubs)
        sealed = {}
        for c in comm:
            sealed[c] = secrets[c].sealed_shares(
                members, set(members), self.threshold, lts[c], rand[c]
            )
            yield
        for p in members:
            lt = lts[p]
            for c in comm:
                if c != p:
                    secrets[p].open_share(c, sealed[c], index[p], lt)
            if len(secrets[p].my_shares) != len(comm):
                raise RuntimeError(f"secure bulk sum: peer {p} lacks a committee share")
            yield
        # Pairwise masks: both ends of an edge derive one key, so its two keystreams (one
        # added, one subtracted) cancel in the sum. Deriving every key from both ends and
        # comparing is that cancellation, checked; generating the 2·|E| keystreams only to
        # add zero cost ~N·k·M words of AES (3·10^9 per round at N = 1,000) and was dropped.
        for p in members:
            for j in graph[p]:
                if j > p and secrets[p].pair_key(j) != secrets[j].pair_key(p):
                    raise RuntimeError(
                        f"secure bulk sum: peers {p} and {j} derived different mask keys"
                    )
            yield

    def sum(self, data: Callable[[int], np.ndarray]) -> SecureSum:
        """Finish the preparation, then the SUM: every party's words (`data(p)`, read at
        once, so a caller may hand out one reused buffer), the committee's self masks on
        theirs, the sum modulo 2^k, the masks removed."""
        t0 = time.perf_counter()
        for _ in self._work:
            pass
        t1 = time.perf_counter()
        members, comm, codec, secrets = self.members, self.committee, self.codec, self.secrets
        wd = codec.word_dtype
        first = data(members[0])  # its shape and dtype; its words are read in turn below
        dtype, length = first.dtype, first.shape[0]
        words = np.empty(length, dtype=wd)
        acc = np.zeros(length, dtype=wd)
        plain = np.zeros(length, dtype=wd)
        streamer = MaskStreamer()
        clipped = {}
        scratch = None
        for p in members:
            x = np.ascontiguousarray(data(p))
            if x.shape != (length,):
                raise ValueError(f"secure bulk sum: peer {p} has {x.shape}, expected ({length},)")
            work = np.float32 if (x.dtype == np.float32 and codec.bits == 32) else np.float64
            if scratch is None or scratch.dtype != work:
                scratch = np.empty(min(length, 1 << 18), dtype=work)
            clipped[p] = codec.encode_into(x, words, scratch)
            plain += words
            if p in comm:
                streamer.apply(words, 0, [secrets[p].self_seed], ())
            acc += words
        # REVEAL / FINISH: the committee's seeds come out; every party removes the same masks
        streamer.apply(acc, 0, (), [secrets[c].self_seed for c in comm])
        if not np.array_equal(acc, plain):
            raise RuntimeError("secure bulk sum: the self masks did not cancel")
        result = codec.decode(acc, dtype=dtype)
        t2 = time.perf_counter()
        degree = max((len(v) for v in self.graph.values()), default=0)
        return SecureSum(
            result,
            clipped,
            list(comm),
            degree,
            {
                "keys_s": self.keys_s + t1 - t0,
                "keys_ahead_s": self.ahead_s,
                "mask_s": t2 - t1,
                "sum_s": 0.0,
            },
        )


def secure_ring_sum(
    ring: Sequence[int],
    parties: Mapping[int, SecureParty],
    public_keys: Mapping[int, bytes | str],
    *,
    session: int,
    round: int,
    masking: Masking,
    long_term: dict[int, LongTermKeys] | None = None,
) -> SecureSum:
    """One fault-free attempt of the secure sum over `ring` (see the module docstring):
    the same result as `SecureRingAllReduce` on every member. `long_term`: each party's
    `LongTermKeys` (its cached X25519 agreements), kept by the caller across rounds as a
    real peer keeps its own; filled in here for parties without one."""
    prep = SecurePrep(
        ring,
        {p: parties[p].keys for p in ring},
        public_keys,
        session=session,
        round=round,
        masking=masking,
        entropy={p: parties[p].entropy for p in ring},
        long_term=long_term,
    )
    return prep.sum(lambda p: parties[p].data)


def secure_stages(
    ring: Sequence[int], length: int, masking: Masking, committee_members: Sequence[int]
) -> list[Gather | AllReduce]:
    """The message laps of one fault-free secure sum attempt over `ring`: SHARES (the
    ephemeral key, plus the sealed shares on the committee), SUM, SUMMED, REVEAL (the
    seed on the committee), FINISH."""
    n = len(ring)
    on = np.array([p in set(committee_members) for p in ring])
    codec = masking.codec(n)
    return [
        Gather(np.where(on, KEY_BYTES + shamir.SEALED_BYTES * n, KEY_BYTES)),
        AllReduce(length, codec.word_dtype.itemsize, masking.segment_bytes),
        Gather(np.ones(n, dtype=np.int64)),
        Gather(np.where(on, 1 + KEY_BYTES, 1)),
        Gather(np.ones(n, dtype=np.int64)),
    ]


__all__ = [
    "AllReduce",
    "Gather",
    "Schedule",
    "SecureParty",
    "SecurePrep",
    "SecureSum",
    "RingSum",
    "plain_ring_sum",
    "ring_schedule",
    "secure_ring_sum",
    "secure_stages",
]
