"""Secure (masked) ring all-reduce as a sans-I/O state machine: `SecureRingAllReduce`.

Every value that leaves a peer is masked; the peers learn only the sum of the inputs of
the peers that contributed (`members`). Design (details and threat model in
docs/security.md):

1. SHARES: each peer draws a fresh ephemeral X25519 key e_i and self-mask seed b_i for
   this round and sends e_i's public key. The lead of the coming attempt (public:
   ring[0] for attempt 0, then chosen by SYNC) also Shamir-shares its b_i t-of-N, seals
   share j for peer j (AES-256-GCM, key from the long-term X25519 keys + HKDF, purpose
   "share-enc"; the associated data carries e_i's public key, which authenticates it)
   and appends the sealed shares. Only a lead's seed can ever be revealed, so the other
   peers skip the split and the long-term key agreements. A ring all-gather moves the
   blobs.
2. SUM (attempt a): each peer encodes its float delta to fixed point in Z_{2^k} and adds
   Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij) over its masking-graph neighbours j (s_ij from
   the ephemeral keys + HKDF, purpose "mask"; graph drawn per round and attempt,
   `ringfl.secure.graph`); the attempt's *lead* (a peer that led no earlier attempt,
   the first in ring order at first) also adds its self mask PRG(b_lead). This happens
   lazily, segment by segment, through the `source` hook of `RingAllReduce`, which then
   runs the integer ring all-reduce. Pairwise masks cancel in the sum; the lead's self
   mask keeps the sum masked until the contributors are fixed.
3. SUMMED: a ring all-gather of one-byte tokens: afterwards every member knows that every
   member holds the masked sum, so the set of contributors is fixed (committed).
4. REVEAL: a ring all-gather in which the lead reveals b_lead (or, if the lead died after
   contributing, every live peer reveals its share of b_lead and Shamir rebuilds it).
5. FINISH: a ring all-gather of one-byte tokens, then each peer removes PRG(b_lead) and
   decodes. This last lap guarantees that a peer finishes only when every live peer
   already knows b_lead, so a finished peer is never needed for anyone's recovery.

Dropouts. The driver reports lost peers with `peers_lost`; every live peer then starts a
new epoch (epoch = number of peers known lost) with a SYNC all-gather of its progress
among the survivors (ring order minus the lost peers) and all decide alike:
- some member committed, or every survivor holds the sum of the newest attempt any of
  them started: keep that sum (contributors fixed) and (re)run REVEAL;
- else re-run SHARES (carrying the new lead's sealed shares) and then the SUM among the
  survivors, led by a peer that led none of the earlier attempts. Survivors mask
  afresh without the lost peers, so pairwise masks with a lost peer never have to be
  rebuilt: no pairwise secret is ever revealed, and the only secret ever revealed is
  the self mask of the committed attempt's lead, which masks no other attempt's sum.
  This gives the guarantees of the double masking of Bonawitz et al. (2017) — a peer
  wrongly declared lost keeps its input secret; an abandoned sum stays masked — while
  unmasking costs one mask expansion instead of N.
- A peer that already knows b_lead sends it to its new ring neighbours (SEEDS, flooded
  along the ring) and finishes.
Fewer than t live peers: `SecureAggregationError`, and no self-mask seed is revealed.

The recovery relies on the driver telling every live peer about a loss consistently (as
`MemoryNetwork` does: at a quiet point, the same lost peers to everyone). A peer that
hears of a loss from a SYNC message first adopts it. A driver that suspects live peers
(e.g. one timeout for all) ends the round with `SecureAggregationError` — safe, but no
sum.

Messages: kind `Kind.SECURE`; the header's `step` packs (stage, epoch, step), the inner
all-reduce's chunk/segment fields are kept, all-gathers put the origin peer in `chunk`.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ringfl.collective.allreduce import RingAllReduce, ring_positions
from ringfl.collective.events import Action, Done, Header, Kind, Message, Send
from ringfl.errors import ConfigError, SecureAggregationError, WireError
from ringfl.secure import shamir
from ringfl.secure.fixedpoint import CHUNK_ELEMENTS, FixedPoint, default_frac_bits
from ringfl.secure.graph import COMPLETE_UP_TO, masking_graph
from ringfl.secure.keys import (
    KEY_BYTES,
    PeerKeys,
    decode_public_key,
    derive_pairwise,
    key_agreement,
)
from ringfl.secure.prg import MaskStreamer

# Stages, in protocol order within an epoch (a message of a later stage is held back).
SYNC, SHARES, SUM, SUMMED, REVEAL, FINISH, SEEDS = 1, 2, 3, 4, 5, 6, 7
_STAGE_NAMES = {1: "SYNC", 2: "SHARES", 3: "SUM", 4: "SUMMED", 5: "REVEAL", 6: "FINISH", 7: "SEEDS"}
_EPOCH_BITS, _STEP_BITS = 11, 18
_MAX_EPOCH = (1 << _EPOCH_BITS) - 1
_MAX_PENDING = 1 << 20

#: dtype → name for the headers of the words and blobs this machine sends (looking up
#: `dtype.name` costs more than the rest of building a small message).
_DTYPE_NAMES = {np.dtype(t): np.dtype(t).name for t in (np.uint8, np.uint32, np.uint64)}

_SYNC_HEAD = struct.Struct("<B3xiiiII")  # flags, started, held, committed, n dead, n led
_HAS_SHARES, _COMMITTED = 1, 2  # _HAS_SHARES is informational: new attempts re-run SHARES


def pack_step(stage: int, epoch: int, step: int) -> int:
    if not (0 < stage < 8 and 0 <= epoch <= _MAX_EPOCH and 0 <= step < 1 << _STEP_BITS):
        raise ConfigError(f"secure step out of range: stage {stage} epoch {epoch} step {step}")
    return (stage << (_EPOCH_BITS + _STEP_BITS)) | (epoch << _STEP_BITS) | step


def unpack_step(value: int) -> tuple[int, int, int]:
    return (
        value >> (_EPOCH_BITS + _STEP_BITS),
        (value >> _STEP_BITS) & _MAX_EPOCH,
        value & ((1 << _STEP_BITS) - 1),
    )


@dataclass(frozen=True)
class Masking:
    """Secure-aggregation settings; every peer of a ring must use the same.

    bits: word size k (32 or 64). clip: inputs are clipped to [−clip, clip] (counted).
    frac_bits: fixed-point fractional bits f (default: the most that N·clip·2^f < 2^(k−1)
    allows). degree / complete_up_to: masking graph (`ringfl.secure.graph`).
    threshold: t of the t-of-N sharing and the fewest survivors that may finish
    (default ⌊N/2⌋ + 1). segment_bytes: all-reduce segment size. eager_bytes: a
    contribution of at most this many bytes (words) is encoded and masked in one pass per
    mask neighbour when the SUM starts, and its segments are slices of that array; a
    larger one is masked segment by segment as the all-reduce asks for it (the words are
    identical either way; this only trades memory for per-segment set-up cost).
    """

    bits: int = 32
    clip: float = 1.0
    frac_bits: int | None = None
    degree: int | None = None
    complete_up_to: int = COMPLETE_UP_TO
    threshold: int | None = None
    segment_bytes: int = 1 << 20
    eager_bytes: int = 1 << 20

    def codec(self, n_peers: int) -> FixedPoint:
        f = (
            default_frac_bits(n_peers, self.clip, self.bits)
            if self.frac_bits is None
            else self.frac_bits
        )
        return FixedPoint(n_peers, f, self.clip, self.bits)

    def threshold_for(self, n_peers: int) -> int:
        t = shamir.default_threshold(n_peers) if self.threshold is None else self.threshold
        return shamir.check_threshold(t, n_peers)


class _Gather:
    """Ring all-gather of one uint8 blob per ring member. At step s a member sends its
    successor the blob that originated s hops upstream of it; n − 1 steps."""

    def __init__(self, me: int, ring: list[int], own: np.ndarray) -> None:
        self.me = me
        self.ring = ring
        self.n = n = len(ring)
        self.pos = ring.index(me)
        self.succ = ring[(self.pos + 1) % n]
        self.pred = ring[(self.pos - 1) % n]
        self.blobs: dict[int, np.ndarray] = {me: own}

    @property
    def complete(self) -> bool:
        return len(self.blobs) == self.n

    def first(self) -> list[tuple[int, int, np.ndarray]]:
        return [] if self.n == 1 else [(0, self.me, self.blobs[self.me])]

    def check(self, sender: int, step: int, origin: int) -> None:
        if sender != self.pred:
            raise WireError(f"from peer {sender}, expected ring predecessor {self.pred}")
        if step >= self.n - 1:
            raise WireError(f"step {step} ≥ {self.n - 1}")
        want = self.ring[(self.pos - 1 - step) % self.n]
        if origin != want:
            raise WireError(f"blob of peer {origin} at step {step}, expected peer {want}")
        if origin in self.blobs:
            raise WireError(f"duplicate blob of peer {origin}")

    def take(self, step: int, origin: int, blob: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        self.blobs[origin] = blob
        return [(step + 1, origin, blob)] if step + 2 < self.n else []


class SecureRingAllReduce:
    """Masked ring all-reduce of `data` (1-D float32/float64) over `ring`, delivering
    `Done(sum)`: the exact sum of the contributors' fixed-point inputs (clipped to
    ±clip, rounded to 2^−f), decoded to the dtype of `data`, bit-identical on every
    live contributor.

    keys: this peer's long-term X25519 key pair. public_keys: every ring member's public
    key (raw 32 bytes or the topology-file text). session/round: as in the ring
    all-reduce; a (session, round) must never be reused with the same keys.
    After `Done`: `members` (contributors, ring order; divide by len(members) for the
    average), `clipped` (this peer's inputs clipped), `attempts`, `bytes_sent`.
    `data` must stay unchanged until the machine is done (it is encoded lazily).
    `entropy(n)` gives n random bytes for the ephemeral key and self-mask seed (default
    `os.urandom`; Shamir coefficients always come from the OS generator).

    N = 1: nothing can be masked; the input is returned as is, with a `RuntimeWarning`.
    """

    kind = Kind.SECURE
    kinds = (Kind.SECURE,)

    def __init__(
        self,
        peer: int,
        ring: Sequence[int],
        data: Any,
        keys: PeerKeys,
        public_keys: Mapping[int, bytes | str],
        *,
        session: int,
        round: int,
        masking: Masking | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.ring, self.position = ring_positions(peer, ring)
        self.peer = int(peer)
        self.session = int(session)
        self.round = int(round)
        self.masking = masking = Masking() if masking is None else masking
        x = np.asarray(data)
        if x.ndim != 1 or x.dtype not in (np.float32, np.float64):
            raise ConfigError(
                f"secure all-reduce of peer {peer}: data must be 1-D float32/float64, "
                f"got {x.dtype} {x.shape}"
            )
        self.data = np.ascontiguousarray(x)
        self.length = x.shape[0]
        self.n0 = n = len(self.ring)
        self.codec = masking.codec(n)
        self.threshold = masking.threshold_for(n)
        if not isinstance(keys, PeerKeys):
            raise ConfigError(f"secure all-reduce of peer {peer}: keys must be PeerKeys")
        self.keys = keys
        self.public_keys: dict[int, bytes] = {}
        for p in self.ring:
            if p not in public_keys:
                raise ConfigError(f"secure all-reduce: no public_key for peer {p}")
            self.public_keys[p] = decode_public_key(public_keys[p], where=f"public_key of peer {p}")
        if self.public_keys[self.peer] != keys.public_bytes:
            raise ConfigError(
                f"secure all-reduce: public_key of peer {peer} does not match its private key"
            )
        self._entropy = entropy
        self._index = {p: i for i, p in enumerate(self.ring)}  # Shamir index = i + 1
        # progress
        self.dead: set[int] = set()
        self.epoch = 0
        self.stage = 0
        self._done = False
        self._pending: list[tuple[int, int, int, Message]] = []
        self._gather: _Gather | None = None
        self._inner: RingAllReduce | None = None
        self._attempt = -1  # the SUM attempt under way or last run (= its epoch)
        self._attempt_members: list[int] = []
        self._sum_attempt = -1  # attempt whose masked sum this peer holds
        self._masked_sum: np.ndarray | None = None
        self._committed = -1
        self._sum_members: list[int] = []
        self._lead_seed: bytes | None = None  # self-mask seed of the committed sum's lead
        self._next_lead = self.ring[0]
        self._led: set[int] = set()  # leads of the attempts this peer started
        self._attempt_lead = -1
        self._sum_lead = -1
        self._bundles: dict[int, bytes] = {}  # lead → its sealed shares, as received
        self._eph_pub: dict[int, bytes] = {}
        self._my_shares: dict[int, bytes] = {}
        self._pair_keys: dict[int, bytes] = {}
        self._long_term_shared: dict[int, bytes] = {}
        self._clipped: dict[int, int] = {}
        self._fresh_buffers = False
        self._scratch: np.ndarray | None = None
        work = np.float32 if (x.dtype == np.float32 and self.codec.bits == 32) else np.float64
        self._float_scratch = np.empty(min(self.length, CHUNK_ELEMENTS), dtype=work)
        self._streamer = MaskStreamer()
        self.result: np.ndarray | None = None
        self.members: tuple[int, ...] = ()
        self.clipped = 0
        self.attempts = 0
        self.bytes_sent = 0
        self.messages_sent = 0
        self.rejected: list[str] = []  # reasons for dropped held-back messages
        self.mask_neighbours = 0
        if n > 1:
            self._make_round_secrets()

    # -- set-up ---------------------------------------------------------------------------

    def _make_round_secrets(self) -> None:
        raw = self._entropy(KEY_BYTES)
        self._eph = X25519PrivateKey.from_private_bytes(bytes(raw))
        eph_pub = self._eph.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._self_seed = bytes(self._entropy(KEY_BYTES))
        self._shares_blob: bytes | None = None  # sealed shares of the self seed, once made
        self._eph_pub[self.peer] = eph_pub

    def _sealed_shares(self) -> bytes:
        """Shamir shares of this peer's self-mask seed, share j sealed for peer j (made
        once, only if this peer is chosen to lead an attempt; resent unchanged)."""
        if self._shares_blob is not None:
            return self._shares_blob
        eph_pub = self._eph_pub[self.peer]
        shares = shamir.split_secret(self._self_seed, self.threshold, self.n0)
        parts = []
        for p in self.ring:
            if p == self.peer or p in self.dead:  # random filler: the wire looks uniform
                parts.append(bytes(self._entropy(shamir.SEALED_BYTES)))
                continue
            key = self._share_key(p, sender=self.peer)
            parts.append(
                shamir.seal_share(
                    key,
                    shares[self._index[p]],
                    session=self.session,
                    round=self.round,
                    sender=self.peer,
                    recipient=p,
                    context=eph_pub,
                )
            )
        self._my_shares[self.peer] = shares[self._index[self.peer]]
        self._shares_blob = b"".join(parts)
        return self._shares_blob

    def _share_blob_bytes(self, origin: int) -> int:
        """Length of `origin`'s SHARES blob: its ephemeral public key, plus the sealed
        shares of its self seed if it leads the coming attempt."""
        extra = shamir.SEALED_BYTES * self.n0 if origin == self._next_lead else 0
        return KEY_BYTES + extra

    def _share_key(self, other: int, *, sender: int) -> bytes:
        shared = self._long_term_shared.get(other)
        if shared is None:  # one agreement per peer serves both directions
            shared = key_agreement(self.keys, self.public_keys[other], other)
            self._long_term_shared[other] = shared
        return derive_pairwise(
            shared,
            self.peer,
            self.public_keys[self.peer],
            other,
            self.public_keys[other],
            session=self.session,
            round=self.round,
            purpose="share-enc",
            sender=sender,
        )

    def _pair_key(self, other: int) -> bytes:
        key = self._pair_keys.get(other)
        if key is None:
            key = derive_pairwise(
                key_agreement(self._eph, self._eph_pub[other], other),
                self.peer,
                self._eph_pub[self.peer],
                other,
                self._eph_pub[other],
                session=self.session,
                round=self.round,
                purpose="mask",
            )
            self._pair_keys[other] = key
        return key

    # -- Machine protocol ---------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def start(self) -> list[Action]:
        if self.n0 == 1:
            warnings.warn(
                f"secure all-reduce of peer {self.peer}: a ring of one peer cannot mask; "
                "returning the input unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
            self.members = (self.peer,)
            return [self._finish(self.data.copy())]
        out: list[Action] = []
        self._enter_shares(out)
        self._drain(out)
        return out

    def expecting(self) -> frozenset[int]:
        if self._done:
            return frozenset()
        if self.stage == SUM and self._inner is not None:
            return self._inner.expecting()
        if self._gather is not None and not self._gather.complete:
            return frozenset({self._gather.pred})
        return frozenset()

    def receive(self, message: Message) -> list[Action]:
        h = message.header
        name = f"secure all-reduce of peer {self.peer}"
        if self._done:
            raise WireError(f"{name} already finished; message from {h.sender}")
        if h.kind != Kind.SECURE:
            raise WireError(f"{name}: message kind {h.kind!r}, expected SECURE")
        if h.session != self.session or h.round != self.round:
            raise WireError(
                f"{name}: session/round {h.session}/{h.round}, expected {self.session}/{self.round}"
            )
        if h.sender not in self._index or h.sender == self.peer:
            raise WireError(f"{name}: sender {h.sender} is not another ring member")
        if h.sender in self.dead:
            raise WireError(f"{name}: message from peer {h.sender}, which was declared lost")
        p = message.payload
        if p.ndim != 1 or p.shape[0] != h.length or _DTYPE_NAMES.get(p.dtype) != h.dtype:
            raise WireError(f"{name}: payload does not match its header")
        stage, epoch, step = unpack_step(h.step)
        if stage not in _STAGE_NAMES:
            raise WireError(f"{name}: unknown stage {stage}")
        out: list[Action] = []
        if stage == SEEDS:
            self._on_seeds(message, out)
            return out
        if stage == SYNC and epoch > self.epoch:
            dead = self._parse_sync(message).dead
            if not dead <= self.dead:
                self._new_epoch(dead - self.dead, out)
                self._drain(out)
            if self._done:
                return out
        if epoch < self.epoch or (epoch == self.epoch and stage < self.stage):
            raise WireError(
                f"{name}: stale {_STAGE_NAMES[stage]} message of epoch {epoch} from "
                f"{h.sender} (now epoch {self.epoch}, {_STAGE_NAMES.get(self.stage, '-')})"
            )
        if epoch > self.epoch or stage > self.stage:
            if len(self._pending) >= _MAX_PENDING:
                raise WireError(f"{name}: too many messages held back")
            self._pending.append((epoch, stage, step, message))
            return out
        self._dispatch(stage, step, message, out)
        self._drain(out)
        return out

    def peers_lost(self, peers: frozenset[int]) -> list[Action]:
        new = {int(p) for p in peers if int(p) in self._index} - self.dead
        if not new or self._done:
            return []
        out: list[Action] = []
        self._new_epoch(new, out)
        self._drain(out)
        return out

    # -- plumbing -------------------------------------------------------------------------

    def _send(
        self,
        out: list[Action],
        to: int,
        stage: int,
        step: int,
        chunk: int,
        segment: int,
        payload: np.ndarray,
    ) -> None:
        header = Header(
            Kind.SECURE,
            self.session,
            self.round,
            pack_step(stage, self.epoch, step),
            chunk,
            segment,
            self.peer,
            _DTYPE_NAMES.get(payload.dtype) or payload.dtype.name,
            payload.shape[0],
        )
        self.bytes_sent += payload.nbytes
        self.messages_sent += 1
        out.append(Send(to, Message(header, payload)))

    def _finish(self, result: np.ndarray) -> Done:
        self._done = True
        self.result = result
        self._pending.clear()
        return Done(result)

    def _drain(self, out: list[Action]) -> None:
        """Deliver held-back messages that the current (epoch, stage) can now take."""
        while not self._done and self._pending:
            now = (self.epoch, self.stage)
            keep: list[tuple[int, int, int, Message]] = []
            ready = None
            for item in self._pending:
                if ready is None and (item[0], item[1]) == now:
                    ready = item
                elif (item[0], item[1]) < now:
                    self.rejected.append(f"stale held-back message from {item[3].header.sender}")
                else:
                    keep.append(item)
            self._pending = keep
            if ready is None:
                return
            try:
                self._dispatch(ready[1], ready[2], ready[3], out)
            except WireError as exc:
                self.rejected.append(str(exc))

    def _dispatch(self, stage: int, step: int, message: Message, out: list[Action]) -> None:
        if stage == SUM:
            self._on_sum(step, message, out)
            return
        g = self._gather
        if g is None:
            raise WireError(f"no all-gather under way for stage {_STAGE_NAMES[stage]}")
        h = message.header
        try:
            g.check(h.sender, step, h.chunk)
        except WireError as exc:
            raise WireError(f"secure {_STAGE_NAMES[stage]} of peer {self.peer}: {exc}") from None
        blob = message.payload
        if blob.dtype != np.uint8:
            raise WireError(f"secure {_STAGE_NAMES[stage]}: payload must be uint8")
        self._check_blob(stage, h.chunk, blob)
        for s, origin, b in g.take(step, h.chunk, blob):
            self._send(out, g.succ, stage, s, origin, 0, b)
        if g.complete:
            self._gather_complete(stage, out)

    def _check_blob(self, stage: int, origin: int, blob: np.ndarray) -> None:
        n = blob.shape[0]
        if stage == SHARES:
            want = self._share_blob_bytes(origin)
            raw = blob.tobytes()
            have = self._eph_pub.get(origin)
            known = self._bundles.get(origin)
            if (have is not None and have != raw[:KEY_BYTES]) or (
                known is not None and n == want > KEY_BYTES and known != raw[KEY_BYTES:]
            ):
                raise SecureAggregationError(f"peer {origin} sent two different share blobs")
        elif stage == REVEAL:
            want = self._reveal_length(origin)
        elif stage in (SUMMED, FINISH):
            want = 1
        else:  # SYNC: validated by parsing
            self._parse_blob_sync(blob, origin)
            return
        if n != want:
            raise WireError(
                f"secure {_STAGE_NAMES[stage]}: blob of peer {origin} has {n} bytes, expected {want}"
            )

    def _start_gather(
        self, stage: int, ring: list[int], own: np.ndarray, out: list[Action]
    ) -> None:
        self.stage = stage
        self._gather = g = _Gather(self.peer, ring, own)
        for s, origin, b in g.first():
            self._send(out, g.succ, stage, s, origin, 0, b)
        if g.complete:
            self._gather_complete(stage, out)

    def _gather_complete(self, stage: int, out: list[Action]) -> None:
        if stage == SHARES:
            self._shares_complete(out)
        elif stage == SUMMED:
            self._committed = self._attempt
            self._enter_reveal(out)
        elif stage == REVEAL:
            self._reveal_complete(out)
        elif stage == FINISH:
            out.append(self._finish(self._unmask()))
        elif stage == SYNC:
            self._sync_complete(out)

    def _live(self) -> list[int]:
        return [p for p in self.ring if p not in self.dead]

    # -- SHARES ---------------------------------------------------------------------------

    def _enter_shares(self, out: list[Action]) -> None:
        own = self._eph_pub[self.peer]
        if self._next_lead == self.peer:
            own += self._sealed_shares()
        self._start_gather(SHARES, self._live(), np.frombuffer(own, dtype=np.uint8), out)

    def _absorb_bundles(self) -> None:
        """Open this peer's shares in the blobs gathered so far (SHARES stage)."""
        g = self._gather
        if g is None or self.stage != SHARES:
            return
        for origin, blob in g.blobs.items():
            if origin == self.peer:
                continue
            data = blob.tobytes()
            eph_pub = data[:KEY_BYTES]
            self._eph_pub.setdefault(origin, eph_pub)
            if len(data) == KEY_BYTES or origin in self._my_shares:
                continue
            at = KEY_BYTES + shamir.SEALED_BYTES * self._index[self.peer]
            self._my_shares[origin] = shamir.open_share(
                self._share_key(origin, sender=origin),
                data[at : at + shamir.SEALED_BYTES],
                session=self.session,
                round=self.round,
                sender=origin,
                recipient=self.peer,
                context=eph_pub,
            )
            self._bundles[origin] = data[KEY_BYTES:]

    def _shares_complete(self, out: list[Action]) -> None:
        self._absorb_bundles()
        self._enter_sum(out)

    # -- SUM ------------------------------------------------------------------------------

    def _enter_sum(self, out: list[Action]) -> None:
        self.stage = SUM
        self._gather = None
        self._attempt = a = self.epoch
        self.attempts += 1
        members = self._live()
        self._attempt_members = members
        self._clipped[a] = 0
        graph = masking_graph(
            members,
            session=self.session,
            round=self.round,
            attempt=a,
            degree=self.masking.degree,
            complete_up_to=self.masking.complete_up_to,
        )
        nbrs = sorted(graph[self.peer])
        self.mask_neighbours = len(nbrs)
        self._attempt_lead = lead = self._next_lead
        self._led.add(lead)
        add = [self._pair_key(j) for j in nbrs if j > self.peer]
        if lead == self.peer:
            add.append(self._self_seed)
        sub = [self._pair_key(j) for j in nbrs if j < self.peer]
        wd = self.codec.word_dtype
        codec, x, streamer = self.codec, self.data, self._streamer
        if self.length * wd.itemsize <= self.masking.eager_bytes:
            # Small contribution: one pass per mask neighbour instead of a cipher set-up
            # per segment and neighbour; the all-reduce only reads the slices.
            masked = np.empty(self.length, dtype=wd)
            self._clipped[a] = codec.encode_into(x, masked, self._float_scratch)
            streamer.apply(masked, 0, add, sub)
            masked.flags.writeable = False

            def source(start: int, stop: int) -> np.ndarray:
                return masked[start:stop]

        else:
            source = self._lazy_source(a, add, sub)
        self._run_sum(members, source, out)

    def _lazy_source(
        self, a: int, add: list[bytes], sub: list[bytes]
    ) -> Callable[[int, int], np.ndarray]:
        wd = self.codec.word_dtype
        codec, x, streamer = self.codec, self.data, self._streamer

        def source(start: int, stop: int) -> np.ndarray:
            n = stop - start
            if self._fresh_buffers:  # sent zero-copy: must not be reused
                buf = np.empty(n, dtype=wd)
            else:  # added to the partial sum at once by the all-reduce
                if self._scratch is None or self._scratch.shape[0] < n:
                    self._scratch = np.empty(n, dtype=wd)
                buf = self._scratch[:n]
            self._clipped[a] += codec.encode_into(x[start:stop], buf, self._float_scratch)
            streamer.apply(buf, start, add, sub)
            return buf

        return source

    def _run_sum(
        self, members: list[int], source: Callable[[int, int], np.ndarray], out: list[Action]
    ) -> None:
        wd = self.codec.word_dtype
        self._inner = RingAllReduce(
            self.peer,
            members,
            length=self.length,
            dtype=wd,
            source=source,
            session=self.session,
            round=self.round,
            segment_bytes=self.masking.segment_bytes,
        )
        self._fresh_buffers = True
        try:
            acts = self._inner.start()
        finally:
            self._fresh_buffers = False
        self._inner_actions(acts, out)

    def _on_sum(self, step: int, message: Message, out: list[Action]) -> None:
        inner = self._inner
        if inner is None:
            raise WireError("no sum under way")
        h = message.header
        inner_header = Header(
            Kind.ALLREDUCE,
            h.session,
            h.round,
            step,
            h.chunk,
            h.segment,
            h.sender,
            h.dtype,
            h.length,
        )
        acts = inner.receive(Message(inner_header, message.payload))
        self._inner_actions(acts, out)

    def _inner_actions(self, acts: list[Action], out: list[Action]) -> None:
        for a in acts:
            if isinstance(a, Send):
                h = a.message.header
                self._send(out, a.to, SUM, h.step, h.chunk, h.segment, a.message.payload)
            else:
                self._masked_sum = a.result
                self._sum_attempt = self._attempt
                self._sum_members = list(self._attempt_members)
                self._sum_lead = self._attempt_lead
                self._start_gather(SUMMED, self._attempt_members, np.ones(1, np.uint8), out)

    # -- REVEAL / FINISH ------------------------------------------------------------------

    def _reveal_length(self, origin: int) -> int:
        if self._sum_lead in self.dead:
            return KEY_BYTES  # everyone reveals its share of the lost lead's seed
        return KEY_BYTES if origin == self._sum_lead else 1

    def _enter_reveal(self, out: list[Action]) -> None:
        lead = self._sum_lead
        if lead in self.dead:
            part = self._my_shares[lead]
        elif lead == self.peer:
            part = self._self_seed
        else:
            part = b"\x01"
        self._start_gather(REVEAL, self._live(), np.frombuffer(part, dtype=np.uint8), out)

    def _reveal_complete(self, out: list[Action]) -> None:
        assert self._gather is not None
        blobs = {p: b.tobytes() for p, b in self._gather.blobs.items()}
        lead = self._sum_lead
        if lead in blobs:
            self._lead_seed = blobs[lead]
        else:
            shares = {self._index[p] + 1: b for p, b in blobs.items()}
            self._lead_seed = shamir.combine_shares(shares, self.threshold)
        self._start_gather(FINISH, self._live(), np.ones(1, np.uint8), out)

    def _unmask(self) -> np.ndarray:
        assert self._masked_sum is not None and self._lead_seed is not None
        words = self._masked_sum
        result = np.empty(self.length, dtype=self.data.dtype)
        scratch = np.empty(min(self.length, CHUNK_ELEMENTS), dtype=words.dtype)
        for a in range(0, self.length, CHUNK_ELEMENTS):
            b = min(self.length, a + CHUNK_ELEMENTS)
            w = scratch[: b - a]
            # words[a:b] − mask into scratch: the sum itself may still be on its way out
            # (zero-copy sends) and must not be written
            self._streamer.fill(self._lead_seed, w, a)
            np.subtract(words[a:b], w, out=w)
            self.codec.decode(w, out=result[a:b])
        self.members = tuple(self._sum_members)
        self.clipped = self._clipped.get(self._sum_attempt, 0)
        return result

    # -- SEEDS (recovery shortcut) -------------------------------------------------------------

    def _seeds_payload(self) -> np.ndarray:
        assert self._lead_seed is not None
        dead = sorted(self.dead)
        head = struct.pack(f"<iI{len(dead)}I", self._sum_attempt, len(dead), *dead)
        return np.frombuffer(head + self._lead_seed, dtype=np.uint8)

    def _flood_seeds(self, out: list[Action], skip: int | None = None) -> None:
        live = self._live()
        if len(live) > 1:
            i = live.index(self.peer)
            payload = self._seeds_payload()
            for to in dict.fromkeys((live[(i + 1) % len(live)], live[(i - 1) % len(live)])):
                if to != skip:
                    self._send(out, to, SEEDS, 0, 0, 0, payload)
        out.append(self._finish(self._unmask()))

    def _on_seeds(self, message: Message, out: list[Action]) -> None:
        raw = message.payload.tobytes() if message.payload.dtype == np.uint8 else b""
        if len(raw) < 8:
            raise WireError("secure SEEDS: malformed payload")
        attempt, ndead = struct.unpack_from("<iI", raw)
        if self._masked_sum is None or attempt != self._sum_attempt:
            raise WireError(f"secure SEEDS for attempt {attempt}, this peer holds no such sum")
        if len(raw) != 8 + 4 * ndead + KEY_BYTES:
            raise WireError("secure SEEDS: bad payload length")
        dead = set(struct.unpack_from(f"<{ndead}I", raw, 8))
        if self.peer in dead or not dead <= set(self._index):
            raise WireError("secure SEEDS: bad list of lost peers")
        self._lead_seed = raw[8 + 4 * ndead :]
        self.dead |= dead
        self._flood_seeds(out, skip=message.header.sender)

    # -- recovery -------------------------------------------------------------------------

    def _new_epoch(self, new: set[int], out: list[Action]) -> None:
        self.dead |= new
        if self.peer in self.dead:
            raise SecureAggregationError(
                f"secure all-reduce: peer {self.peer} was declared lost by the others"
            )
        if self._lead_seed is not None:  # this peer can finish; make sure the others can too
            self._flood_seeds(out)
            return
        live = self._live()
        if len(live) < self.threshold:
            self._done = True
            raise SecureAggregationError(
                f"secure all-reduce (round {self.round}): only {len(live)} of {self.n0} peers "
                f"left, fewer than the threshold {self.threshold}; aborting without revealing "
                "anything"
            )
        self.epoch = len(self.dead)
        if self.epoch > _MAX_EPOCH:
            raise SecureAggregationError("secure all-reduce: too many recovery epochs")
        self._absorb_bundles()
        self._inner = None
        flags = (_HAS_SHARES if all(p in self._eph_pub for p in live) else 0) | (
            _COMMITTED if self._committed >= 0 else 0
        )
        dead, led = sorted(self.dead), sorted(self._led)
        head = _SYNC_HEAD.pack(
            flags, self._attempt, self._sum_attempt, self._committed, len(dead), len(led)
        )
        blob = head + struct.pack(f"<{len(dead)}I{len(led)}I", *dead, *led)
        self._start_gather(SYNC, live, np.frombuffer(blob, dtype=np.uint8), out)

    def _parse_blob_sync(self, blob: np.ndarray, origin: int) -> _SyncState:
        raw = blob.tobytes()
        if len(raw) < _SYNC_HEAD.size:
            raise WireError(f"secure SYNC: blob of peer {origin} too short")
        flags, started, held, committed, ndead, nled = _SYNC_HEAD.unpack_from(raw)
        if len(raw) != _SYNC_HEAD.size + 4 * (ndead + nled):
            raise WireError(f"secure SYNC: blob of peer {origin} has a bad length")
        ids = struct.unpack_from(f"<{ndead + nled}I", raw, _SYNC_HEAD.size)
        dead, led = frozenset(ids[:ndead]), frozenset(ids[ndead:])
        if not (dead | led) <= set(self._index):
            raise WireError(f"secure SYNC: blob of peer {origin} names unknown peers")
        return _SyncState(flags, started, held, committed, dead, led)

    def _parse_sync(self, message: Message) -> _SyncState:
        if message.payload.dtype != np.uint8:
            raise WireError("secure SYNC: payload must be uint8")
        return self._parse_blob_sync(message.payload, message.header.sender)

    def _sync_complete(self, out: list[Action]) -> None:
        """Decide the next stage from the survivors' states (the same on every peer)."""
        assert self._gather is not None
        states = [self._parse_blob_sync(b, p) for p, b in self._gather.blobs.items()]
        if any(s.dead != self.dead for s in states):
            union = set().union(*(s.dead for s in states)) - self.dead
            if union:
                self._new_epoch(union, out)
                return
            raise WireError("secure SYNC: inconsistent lists of lost peers")
        committed = {s.committed for s in states if s.flags & _COMMITTED}
        if len(committed) > 1:
            raise SecureAggregationError(f"secure all-reduce: peers committed to {committed}")
        # A sum can only have completed anywhere for an attempt every survivor started,
        # so `latest` is the newest attempt that may exist; only it may be committed
        # (revealing the self masks of an older, larger set would unmask a newer sum).
        latest = max(s.started for s in states)
        if committed or (latest >= 0 and all(s.held == latest for s in states)):
            c = committed.pop() if committed else latest
            if self._sum_attempt != c:
                raise SecureAggregationError(
                    f"secure all-reduce: peer {self.peer} lacks the committed sum {c}"
                )
            self._committed = c
            self._enter_reveal(out)
        else:
            # The new attempt's self mask comes from a peer that led no attempt whose sum
            # may exist (every survivor took part in any such attempt, so knows its lead).
            used = set().union(*(s.led for s in states))
            fresh = [p for p in self._live() if p not in used]
            if not fresh:
                raise SecureAggregationError("secure all-reduce: no peer left to lead an attempt")
            # Always a SHARES lap first: the new lead has never shared its seed in a
            # finished lap (it led nothing), and survivors may lack ephemeral keys.
            self._next_lead = fresh[0]
            self._enter_shares(out)


@dataclass(frozen=True)
class _SyncState:
    flags: int
    started: int  # newest SUM attempt this peer started (−1: none)
    held: int  # attempt of the masked sum it holds (−1: none)
    committed: int
    dead: frozenset[int]
    led: frozenset[int]  # leads of the attempts it started
