"""Secure (masked) ring all-reduce as a sans-I/O state machine: `SecureRingAllReduce`.

Every value that leaves a peer is masked; the peers learn only the sum of the inputs of
the peers that contributed (`members`). Double masking after Bonawitz et al. (2017),
run around a ring; docs/security.md has the threat model and the argument.

One attempt a (a = the epoch, i.e. the number of peers known lost when it starts):

1. SHARES: every live peer draws a fresh ephemeral X25519 key and a fresh self-mask
   seed b_i^a (`ringfl.secure.shares`) and sends the ephemeral public key; a peer on the
   attempt's self-mask *committee* (min(t, k + 1) members picked by the attempt's public
   permutation; t = threshold, k = graph degree) also sends its seed's Shamir shares,
   sealed for each peer. A ring all-gather moves the blobs.
2. SUM: y_i = enc(x_i) + Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij) [+ PRG(b_i) on the
   committee], over i's neighbours j in the attempt's masking graph; an integer ring
   all-reduce adds the y_i. Pairwise masks cancel; the committee's self masks keep the
   full sum masked, and no single peer — nor any coalition missing one committee
   member — can remove them.
3. SUMMED: a lap of tokens; afterwards every member knows that every member holds the
   masked sum: the contributors are fixed (committed).
4. REVEAL: each live committee member reveals its seed; for a committee member lost
   after contributing, every live peer reveals its share and Shamir rebuilds the seed.
5. FINISH: a lap of tokens, then every peer subtracts the committee's self masks and
   decodes. A finished peer is never needed for anyone's recovery.

Losses open a new epoch: a SYNC lap among the survivors exchanges progress, and all
decide alike: keep the newest attempt's sum if some survivor committed or every survivor
holds it (then REVEAL), else run a new attempt without the lost peers (fresh keys, fresh
seeds). Only the committed attempt's seeds are ever revealed, so a sum of an abandoned
attempt stays masked by seeds that no coalition below the threshold can rebuild, and a
peer declared lost (rightly or not) before the commit keeps its input secret.

Fewer than max(t, min_contributors) live peers: `SecureAggregationError`, nothing
revealed. A peer that already knows the committed seeds and hears of a loss sends them
to its new ring neighbours (SEEDS) and finishes.

Transitions live in `_TRANSITIONS`; messages and blob layouts in
`ringfl.secure.messages`; held-back frames in `ringfl.secure.holding`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ringfl.collective.allreduce import RingAllReduce, ring_positions
from ringfl.collective.base import segment_elements, split
from ringfl.collective.events import Action, Done, Header, Kind, Message, Send
from ringfl.errors import ConfigError, SecureAggregationError, WireError
from ringfl.secure import shamir
from ringfl.secure.fixedpoint import CHUNK_ELEMENTS, FixedPoint, default_frac_bits
from ringfl.secure.gather import Gather
from ringfl.secure.graph import COLLUSION, COMPLETE_UP_TO, masking_graph, permutation
from ringfl.secure.holding import HeldFrames
from ringfl.secure.keys import KEY_BYTES, PeerKeys, decode_public_key
from ringfl.secure.messages import (
    COMMITTED,
    DTYPE_NAMES,
    FINISH,
    MAX_EPOCH,
    REVEAL,
    SEEDS,
    SHARES,
    STAGE_NAMES,
    SUM,
    SUMMED,
    SYNC,
    SyncState,
    pack_seeds,
    pack_step,
    parse_seeds,
    unpack_step,
)
from ringfl.secure.prg import MaskStreamer
from ringfl.secure.shares import AttemptSecrets, LongTermKeys

__all__ = [
    "FINISH",
    "REVEAL",
    "SEEDS",
    "SHARES",
    "SUM",
    "SUMMED",
    "SYNC",
    "Masking",
    "SecureRingAllReduce",
    "pack_step",
    "unpack_step",
]

#: The fewest contributors a secure sum may have: with two, each learns the other's input.
MIN_CONTRIBUTORS = 3

# Events that move the machine on; every transition of the stage machine is here.
GATHERED, SUMMED_UP, KEEP, RETRY = "gathered", "summed", "keep", "retry"
_DONE = 0
_TRANSITIONS: dict[tuple[int, str], int] = {
    (SHARES, GATHERED): SUM,
    (SUM, SUMMED_UP): SUMMED,
    (SUMMED, GATHERED): REVEAL,
    (REVEAL, GATHERED): FINISH,
    (FINISH, GATHERED): _DONE,
    (SYNC, KEEP): REVEAL,
    (SYNC, RETRY): SHARES,
}
# Not in the table: a loss (`peers_lost`, or a SYNC naming new lost peers) moves any stage
# to SYNC of a new epoch — or straight to done via SEEDS once the seeds are known, or to
# abort below the survivor bound.


@dataclass(frozen=True)
class Masking:
    """Secure-aggregation settings; every peer of a ring must use the same.

    bits: word size k (32 or 64). clip: inputs are clipped to [−clip, clip] (counted).
    frac_bits: fixed-point fractional bits f (default: the most that N·clip·2^f < 2^(k−1)
    allows). degree / complete_up_to / collusion: masking graph (`ringfl.secure.graph`;
    collusion γ is the coalition fraction the graph and the committee are sized for).
    threshold: t of the t-of-N sharing (default ⌊N/2⌋ + 1). min_contributors: a sum with
    fewer contributors is never revealed (at least 3). segment_bytes: all-reduce segment
    size. eager_bytes: a contribution of at most this many bytes is masked in one pass
    when the SUM starts, a larger one segment by segment (the words are identical).
    max_held_bytes / max_held_frames: bounds on frames held for a later stage (default:
    about one round's legitimate traffic, see `SecureRingAllReduce`).
    """

    bits: int = 32
    clip: float = 1.0
    frac_bits: int | None = None
    degree: int | None = None
    complete_up_to: int = COMPLETE_UP_TO
    collusion: float | Fraction = COLLUSION
    threshold: int | None = None
    min_contributors: int = MIN_CONTRIBUTORS
    segment_bytes: int = 1 << 20
    eager_bytes: int = 1 << 20
    max_held_bytes: int | None = None
    max_held_frames: int | None = None

    def codec(self, n_peers: int) -> FixedPoint:
        f = (
            default_frac_bits(n_peers, self.clip, self.bits)
            if self.frac_bits is None
            else self.frac_bits
        )
        return FixedPoint(n_peers, f, self.clip, self.bits)

    def graph(
        self, members: Sequence[int], *, session: int, round: int, attempt: int
    ) -> dict[int, frozenset[int]]:
        """The masking graph of an attempt over `members` with these settings."""
        return masking_graph(
            members,
            session=session,
            round=round,
            attempt=attempt,
            degree=self.degree,
            complete_up_to=self.complete_up_to,
            collusion=self.collusion,
        )

    def threshold_for(self, n_peers: int) -> int:
        t = shamir.default_threshold(n_peers) if self.threshold is None else self.threshold
        return shamir.check_threshold(t, n_peers)

    def survivors_needed(self, n_peers: int) -> int:
        """The fewest live peers that may finish a round."""
        if not isinstance(self.min_contributors, int) or self.min_contributors < MIN_CONTRIBUTORS:
            raise ConfigError(
                f"min_contributors must be an int ≥ {MIN_CONTRIBUTORS}, got "
                f"{self.min_contributors!r}: with two contributors each learns the other's input"
            )
        return max(self.threshold_for(n_peers), self.min_contributors)


def committee(
    members: Sequence[int],
    graph: Mapping[int, frozenset[int]],
    threshold: int,
    *,
    session: int,
    round: int,
    attempt: int,
) -> list[int]:
    """The attempt's self-mask committee: the first min(t, k + 1) members of the
    attempt's public permutation (t = the Shamir threshold, k = the graph's degree).

    With t of them, no coalition below the threshold holds every committee seed (nor can
    it rebuild one from fewer than t shares), in any schedule. With k + 1 < t (sparse
    graphs), a coalition holding a fraction γ of the peers contains the whole committee
    with at most the probability that it holds some peer's k mask neighbours. Unmasking
    costs one mask expansion per committee member.
    """
    k = max((len(v) for v in graph.values()), default=0)
    size = min(len(members), threshold, k + 1)
    return sorted(permutation(members, session=session, round=round, attempt=attempt)[:size])


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
    `entropy(n)` gives n random bytes for ephemeral keys, self-mask seeds and filler
    (default `os.urandom`; Shamir coefficients always come from the OS generator).

    A ring needs at least `masking.min_contributors` (3) peers: `ConfigError` otherwise.
    Frames for a later stage are held up to `held_bytes_bound` / `held_frames_bound`.
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
        if n < max(masking.min_contributors, MIN_CONTRIBUTORS):
            raise ConfigError(
                f"secure all-reduce of peer {peer}: a ring of {n} peer(s) cannot sum securely; "
                f"it needs at least {max(masking.min_contributors, MIN_CONTRIBUTORS)} "
                "(min_contributors), since with two each peer would learn the other's input"
            )
        self.survivors_needed = masking.survivors_needed(n)
        self.codec = masking.codec(n)
        self.threshold = masking.threshold_for(n)
        if not isinstance(keys, PeerKeys):
            raise ConfigError(f"secure all-reduce of peer {peer}: keys must be PeerKeys")
        pubs: dict[int, bytes] = {}
        for p in self.ring:
            if p not in public_keys:
                raise ConfigError(f"secure all-reduce: no public_key for peer {p}")
            pubs[p] = decode_public_key(public_keys[p], where=f"public_key of peer {p}")
        if pubs[self.peer] != keys.public_bytes:
            raise ConfigError(
                f"secure all-reduce: public_key of peer {peer} does not match its private key"
            )
        self._long_term = LongTermKeys(self.peer, keys, pubs)
        self._entropy = entropy
        self._index = {p: i for i, p in enumerate(self.ring)}  # Shamir index = i + 1
        wd = self.codec.word_dtype
        self._segment_words = segment_elements(masking.segment_bytes, wd)
        words_bytes = self.length * wd.itemsize
        self.held_bytes_bound = (
            masking.max_held_bytes
            if masking.max_held_bytes is not None
            else min(1 << 28, 2 * words_bytes + n * n * 72 + (1 << 20))
        )
        self.held_frames_bound = (
            masking.max_held_frames
            if masking.max_held_frames is not None
            else 8 * n + 4 * (words_bytes // masking.segment_bytes + 2 * n) + 64
        )
        self._held = HeldFrames(self.held_frames_bound, self.held_bytes_bound)
        # progress
        self.dead: set[int] = set()
        self.epoch = 0
        self.stage = 0
        self._done = False
        self._gather: Gather | None = None
        self._inner: RingAllReduce | None = None
        self._secrets: dict[int, AttemptSecrets] = {}  # attempt → this peer's secrets
        self._committees: dict[int, list[int]] = {}
        self._attempt = -1  # the attempt under way or last started
        self._attempt_members: list[int] = []
        self._sum_started = -1  # newest attempt whose SUM this peer started
        self._sum_attempt = -1  # attempt whose masked sum this peer holds
        self._masked_sum: np.ndarray | None = None
        self._sum_shared = True  # a slice of the masked sum went out by reference
        self._sum_members: list[int] = []
        self._committed = -1
        self._seeds: list[bytes] | None = None  # committed committee's seeds, in order
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

    # -- Machine protocol ---------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    @property
    def held_bytes_peak(self) -> int:
        """The most payload bytes held back at once so far."""
        return self._held.peak_bytes

    def start(self) -> list[Action]:
        out: list[Action] = []
        self._enter(SHARES, out)
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
        if p.ndim != 1 or p.shape[0] != h.length or DTYPE_NAMES.get(p.dtype) != h.dtype:
            raise WireError(f"{name}: payload does not match its header")
        stage, epoch, step = unpack_step(h.step)
        if stage not in STAGE_NAMES:
            raise WireError(f"{name}: unknown stage {stage}")
        out: list[Action] = []
        if stage == SEEDS:
            self._on_seeds(message, out)
            return out
        if stage == SYNC and epoch > self.epoch:
            dead = self._sync_state(message.payload, h.sender).dead
            if not dead <= self.dead:
                self._new_epoch(set(dead - self.dead), out)
                self._drain(out)
            if self._done:
                return out
        if epoch < self.epoch or (epoch == self.epoch and stage < self.stage):
            raise WireError(
                f"{name}: stale {STAGE_NAMES[stage]} message of epoch {epoch} from "
                f"{h.sender} (now epoch {self.epoch}, {STAGE_NAMES.get(self.stage, '-')})"
            )
        if epoch > self.epoch or stage > self.stage:
            self._hold(stage, epoch, step, message)
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

    # -- transitions ----------------------------------------------------------------------

    def _advance(self, event: str, out: list[Action]) -> None:
        nxt = _TRANSITIONS.get((self.stage, event))
        if nxt is None:
            raise AssertionError(f"no transition from {STAGE_NAMES.get(self.stage)} on {event}")
        self._enter(nxt, out)

    def _enter(self, stage: int, out: list[Action]) -> None:
        if stage == SHARES:
            self._enter_shares(out)
        elif stage == SUM:
            self._enter_sum(out)
        elif stage == SUMMED:
            self._start_gather(SUMMED, self._attempt_members, np.ones(1, np.uint8), out)
        elif stage == REVEAL:
            self._enter_reveal(out)
        elif stage == FINISH:
            self._seeds = self._revealed_seeds()
            self._start_gather(FINISH, self._live(), np.ones(1, np.uint8), out)
        elif stage == _DONE:
            out.append(self._finish(self._unmask()))
        else:
            raise AssertionError(f"cannot enter stage {stage}")

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
            DTYPE_NAMES.get(payload.dtype) or payload.dtype.name,
            payload.shape[0],
        )
        self.bytes_sent += payload.nbytes
        self.messages_sent += 1
        out.append(Send(to, Message(header, payload)))

    def _finish(self, result: np.ndarray) -> Done:
        self._done = True
        self.result = result
        self._held.clear()
        return Done(result)

    def _max_blob(self, stage: int) -> int:
        n = self.n0
        if stage == SHARES:
            return KEY_BYTES + shamir.SEALED_BYTES * n
        if stage == REVEAL:
            return 1 + KEY_BYTES + shamir.SHARE_BYTES * n
        if stage == SYNC:
            return SyncState.max_bytes(n)
        return 1

    def _hold(self, stage: int, epoch: int, step: int, message: Message) -> None:
        """Check a frame for a later stage of this epoch as far as possible now, then
        hold it. Honest peers never send a later epoch's frames before this peer is in
        that epoch (their SYNC lap needs this peer's blob first; a SYNC naming new lost
        peers is adopted on arrival), so those are refused rather than held."""
        h = message.header
        name = f"secure all-reduce of peer {self.peer}"
        if epoch != self.epoch:
            raise WireError(
                f"{name}: {STAGE_NAMES[stage]} frame of future epoch {epoch} (now {self.epoch})"
            )
        if stage == SUM:
            if h.length > self._segment_words:
                raise WireError(
                    f"{name}: SUM frame of {h.length} words, segments hold at most "
                    f"{self._segment_words}"
                )
        elif h.length > self._max_blob(stage):
            raise WireError(f"{name}: {STAGE_NAMES[stage]} blob of {h.length} bytes is too long")
        live = self._live()
        pred = live[(live.index(self.peer) - 1) % len(live)]
        if h.sender != pred:  # in an epoch only the ring predecessor sends to us
            raise WireError(
                f"{name}: {STAGE_NAMES[stage]} frame from {h.sender}, "
                f"expected ring predecessor {pred}"
            )
        self._check_slot(stage, step, h, len(live))
        self._held.hold(epoch, stage, (step, h.chunk, h.segment), message)

    def _check_slot(self, stage: int, step: int, h: Header, n: int) -> None:
        """A frame of the current epoch must name a slot that exists in this ring."""
        if stage == SUM:
            if step >= 2 * (n - 1) or h.chunk >= n:
                raise WireError(f"SUM frame for step {step}, chunk {h.chunk}: no such slot")
            m = self.length
            segs = split(h.chunk * m // n, (h.chunk + 1) * m // n, self._segment_words, 2)
            if h.segment >= len(segs) or segs[h.segment][1] - segs[h.segment][0] != h.length:
                raise WireError(f"SUM frame for chunk {h.chunk} segment {h.segment}: bad slot")
        elif step >= n - 1 or h.chunk not in self._index:
            raise WireError(f"{STAGE_NAMES[stage]} frame for step {step}: no such slot")

    def _drain(self, out: list[Action]) -> None:
        """Deliver held-back messages that the current (epoch, stage) can now take."""
        while not self._done:
            key = (self.epoch, self.stage)
            ready = self._held.take(*key)
            if not ready:
                return
            for message in ready:
                if self._done or (self.epoch, self.stage) != key:
                    self.rejected.append(
                        f"held-back message from {message.header.sender} outlived its stage"
                    )
                    continue
                _, _, step = unpack_step(message.header.step)
                try:
                    self._dispatch(key[1], step, message, out)
                except WireError as exc:
                    self.rejected.append(str(exc))

    def _dispatch(self, stage: int, step: int, message: Message, out: list[Action]) -> None:
        if stage == SUM:
            self._on_sum(step, message, out)
            return
        g = self._gather
        if g is None:
            raise WireError(f"no all-gather under way for stage {STAGE_NAMES[stage]}")
        h = message.header
        try:
            g.check(h.sender, step, h.chunk)
        except WireError as exc:
            raise WireError(f"secure {STAGE_NAMES[stage]} of peer {self.peer}: {exc}") from None
        blob = message.payload
        if blob.dtype != np.uint8:
            raise WireError(f"secure {STAGE_NAMES[stage]}: payload must be uint8")
        self._check_blob(stage, h.chunk, blob)
        for s, origin, b in g.take(step, h.chunk, blob):
            self._send(out, g.succ, stage, s, origin, 0, b)
        if g.complete:
            self._gather_complete(stage, out)

    def _check_blob(self, stage: int, origin: int, blob: np.ndarray) -> None:
        n = blob.shape[0]
        if stage == SHARES:
            want = self._share_blob_bytes(origin)
        elif stage == REVEAL:
            want = self._reveal_blob_bytes(origin)
        elif stage in (SUMMED, FINISH):
            want = 1
        else:  # SYNC: validated by parsing
            self._sync_state(blob, origin)
            return
        if n != want:
            raise WireError(
                f"secure {STAGE_NAMES[stage]}: blob of peer {origin} has {n} bytes, expected {want}"
            )

    def _start_gather(
        self, stage: int, ring: list[int], own: np.ndarray, out: list[Action]
    ) -> None:
        self.stage = stage
        self._gather = g = Gather(self.peer, ring, own)
        for s, origin, b in g.first():
            self._send(out, g.succ, stage, s, origin, 0, b)
        if g.complete:
            self._gather_complete(stage, out)

    def _gather_complete(self, stage: int, out: list[Action]) -> None:
        if stage == SHARES:
            self._open_shares()
        if stage == SYNC:
            self._sync_complete(out)
        else:
            self._advance(GATHERED, out)

    def _live(self) -> list[int]:
        return [p for p in self.ring if p not in self.dead]

    # -- SHARES ---------------------------------------------------------------------------

    def _enter_shares(self, out: list[Action]) -> None:
        a = self.epoch
        members = self._live()
        self._attempt = a
        self._attempt_members = members
        graph = self._graph(a, members)
        self._committees[a] = committee(
            members, graph, self.threshold, session=self.session, round=self.round, attempt=a
        )
        secrets = AttemptSecrets(
            self.peer, a, self._entropy, session=self.session, round=self.round
        )
        self._secrets[a] = secrets
        own = secrets.eph_public
        if self.peer in self._committees[a]:
            own += secrets.sealed_shares(
                self.ring, set(members), self.threshold, self._long_term, self._entropy
            )
        self._start_gather(SHARES, members, np.frombuffer(own, dtype=np.uint8), out)

    def _graph(self, attempt: int, members: list[int]) -> dict[int, frozenset[int]]:
        return self.masking.graph(members, session=self.session, round=self.round, attempt=attempt)

    def _share_blob_bytes(self, origin: int) -> int:
        """Length of `origin`'s SHARES blob: its ephemeral public key, plus its sealed
        shares if it is on the attempt's committee."""
        on = origin in self._committees[self._attempt]
        return KEY_BYTES + (shamir.SEALED_BYTES * self.n0 if on else 0)

    def _open_shares(self) -> None:
        assert self._gather is not None
        secrets = self._secrets[self._attempt]
        slot = self._index[self.peer]
        for origin, blob in self._gather.blobs.items():
            if origin == self.peer:
                continue
            data = blob.tobytes()
            secrets.eph_publics[origin] = data[:KEY_BYTES]
            if len(data) > KEY_BYTES:
                secrets.open_share(origin, data[KEY_BYTES:], slot, self._long_term)

    # -- SUM ------------------------------------------------------------------------------

    def _enter_sum(self, out: list[Action]) -> None:
        self.stage = SUM
        self._gather = None
        a = self._attempt
        self._sum_started = a
        self.attempts += 1
        members = self._attempt_members
        self._clipped[a] = 0
        secrets = self._secrets[a]
        nbrs = sorted(self._graph(a, members)[self.peer])
        self.mask_neighbours = len(nbrs)
        add = [secrets.pair_key(j) for j in nbrs if j > self.peer]
        if self.peer in self._committees[a]:
            add.append(secrets.self_seed)
        sub = [secrets.pair_key(j) for j in nbrs if j < self.peer]
        wd = self.codec.word_dtype
        codec, x, streamer = self.codec, self.data, self._streamer
        if self.length * wd.itemsize <= self.masking.eager_bytes:
            # Small contribution: one pass per mask key instead of a cipher set-up per
            # segment and key; the all-reduce only reads the slices.
            masked = np.empty(self.length, dtype=wd)
            self._clipped[a] = codec.encode_into(x, masked, self._float_scratch)
            streamer.apply(masked, 0, add, sub)
            masked.flags.writeable = False

            def eager(start: int, stop: int) -> np.ndarray:
                return masked[start:stop]

            source: Callable[[int, int], np.ndarray] = eager
        else:
            source = self._lazy_source(a, add, sub)
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
        self._inner_actions(inner.receive(Message(inner_header, message.payload)), out)

    def _inner_actions(self, acts: list[Action], out: list[Action]) -> None:
        for act in acts:
            if isinstance(act, Send):
                h = act.message.header
                self._send(out, act.to, SUM, h.step, h.chunk, h.segment, act.message.payload)
            else:
                assert self._inner is not None
                self._masked_sum = act.result
                self._sum_shared = self._inner.out_shared
                self._sum_attempt = self._attempt
                self._sum_members = list(self._attempt_members)
                self._advance(SUMMED_UP, out)

    # -- REVEAL / FINISH ------------------------------------------------------------------

    def _lost_committee(self) -> list[int]:
        return [c for c in self._committees[self._sum_attempt] if c in self.dead]

    def _reveal_blob_bytes(self, origin: int) -> int:
        own = KEY_BYTES if origin in self._committees[self._sum_attempt] else 0
        return 1 + own + shamir.SHARE_BYTES * len(self._lost_committee())

    def _enter_reveal(self, out: list[Action]) -> None:
        a = self._sum_attempt
        self._committed = a
        secrets = self._secrets[a]
        part = b"\x01"
        if self.peer in self._committees[a]:
            part += secrets.self_seed
        for c in self._lost_committee():
            part += secrets.my_shares[c]
        self._start_gather(REVEAL, self._live(), np.frombuffer(part, dtype=np.uint8), out)

    def _revealed_seeds(self) -> list[bytes]:
        """The committed committee's seeds, in committee order, from the REVEAL blobs."""
        assert self._gather is not None
        a = self._sum_attempt
        blobs = {p: b.tobytes() for p, b in self._gather.blobs.items()}
        lost = self._lost_committee()
        seeds = []
        for c in self._committees[a]:
            if c in blobs:
                seeds.append(blobs[c][1 : 1 + KEY_BYTES])
                continue
            at = lost.index(c)
            shares = {}
            for p, raw in blobs.items():
                base = 1 + (KEY_BYTES if p in self._committees[a] else 0)
                shares[self._index[p] + 1] = raw[
                    base + at * shamir.SHARE_BYTES : base + (at + 1) * shamir.SHARE_BYTES
                ]
            seeds.append(shamir.combine_shares(shares, self.threshold))
        return seeds

    def _unmask(self) -> np.ndarray:
        assert self._masked_sum is not None and self._seeds is not None
        words = self._masked_sum
        # In place when no slice of the masked sum left by reference (the usual case) and
        # a float has the word's size: no fresh M-element buffer, whose first touch costs
        # page faults (on THP, compaction) that dominated a peer's decode at 10^7 elements.
        # Otherwise it may still be on its way out (zero-copy) and must not be written.
        in_place = not self._sum_shared and words.dtype.itemsize == self.data.dtype.itemsize
        if in_place:
            result = words.view(self.data.dtype)
            self._masked_sum = None  # consumed: it holds the result now
        else:
            result = np.empty(self.length, dtype=self.data.dtype)
            scratch = np.empty(min(self.length, CHUNK_ELEMENTS), dtype=words.dtype)
        for a in range(0, self.length, CHUNK_ELEMENTS):
            b = min(self.length, a + CHUNK_ELEMENTS)
            if in_place:
                w = words[a:b]
            else:
                w = scratch[: b - a]
                np.copyto(w, words[a:b])
            self._streamer.apply(w, a, (), self._seeds)
            self.codec.decode(w, out=result[a:b])
        self.members = tuple(self._sum_members)
        self.clipped = self._clipped.get(self._sum_attempt, 0)
        return result

    # -- SEEDS (recovery shortcut) --------------------------------------------------------

    def _flood_seeds(self, out: list[Action], skip: int | None = None) -> None:
        assert self._seeds is not None
        live = self._live()
        if len(live) > 1:
            i = live.index(self.peer)
            raw = pack_seeds(self._sum_attempt, self.dead, self._seeds)
            payload = np.frombuffer(raw, dtype=np.uint8)
            for to in dict.fromkeys((live[(i + 1) % len(live)], live[(i - 1) % len(live)])):
                if to != skip:
                    self._send(out, to, SEEDS, 0, 0, 0, payload)
        out.append(self._finish(self._unmask()))

    def _on_seeds(self, message: Message, out: list[Action]) -> None:
        if message.payload.dtype != np.uint8:
            raise WireError("secure SEEDS: payload must be uint8")
        attempt, dead, seeds = parse_seeds(message.payload.tobytes(), KEY_BYTES)
        if self._masked_sum is None or attempt != self._sum_attempt:
            raise WireError(f"secure SEEDS for attempt {attempt}, this peer holds no such sum")
        if len(seeds) != len(self._committees[attempt]):
            raise WireError("secure SEEDS: wrong number of seeds")
        if self.peer in dead or not dead <= set(self._index):
            raise WireError("secure SEEDS: bad list of lost peers")
        self._seeds = seeds
        self.dead |= dead
        self._flood_seeds(out, skip=message.header.sender)

    # -- recovery -------------------------------------------------------------------------

    def _new_epoch(self, new: set[int], out: list[Action]) -> None:
        self.dead |= new
        if self.peer in self.dead:
            raise SecureAggregationError(
                f"secure all-reduce: peer {self.peer} was declared lost by the others"
            )
        if self._seeds is not None:  # this peer can finish; make sure the others can too
            self._flood_seeds(out)
            return
        live = self._live()
        if len(live) < self.survivors_needed:
            self._done = True
            why = (
                "two peers cannot sum securely: each would learn the other's input"
                if len(live) == 2
                else "the sum needs at least max(threshold, min_contributors) peers"
            )
            raise SecureAggregationError(
                f"secure all-reduce (round {self.round}): only {len(live)} of {self.n0} peers "
                f"left, fewer than {self.survivors_needed} (threshold {self.threshold}, "
                f"min_contributors {self.masking.min_contributors}); {why}. Aborting without "
                "revealing anything"
            )
        self.epoch = len(self.dead)
        if self.epoch > MAX_EPOCH:
            raise SecureAggregationError("secure all-reduce: too many recovery epochs")
        self._inner = None
        state = SyncState(
            COMMITTED if self._committed >= 0 else 0,
            self._sum_started,
            self._sum_attempt,
            self._committed,
            frozenset(self.dead),
        )
        self._start_gather(SYNC, live, np.frombuffer(state.pack(), dtype=np.uint8), out)

    def _sync_state(self, blob: np.ndarray, origin: int) -> SyncState:
        if blob.dtype != np.uint8:
            raise WireError("secure SYNC: payload must be uint8")
        return SyncState.parse(blob.tobytes(), origin, self._index)

    def _sync_complete(self, out: list[Action]) -> None:
        """Decide the next stage from the survivors' states (the same on every peer)."""
        assert self._gather is not None
        states = [self._sync_state(b, p) for p, b in self._gather.blobs.items()]
        if any(s.dead != self.dead for s in states):
            union = set().union(*(s.dead for s in states)) - self.dead
            if union:
                self._new_epoch(union, out)
                return
            raise WireError("secure SYNC: inconsistent lists of lost peers")
        committed = {s.committed for s in states if s.flags & COMMITTED}
        if len(committed) > 1:
            raise SecureAggregationError(f"secure all-reduce: peers committed to {committed}")
        # A sum can only have completed anywhere for an attempt every survivor started,
        # so `latest` is the newest attempt that may exist; only it may be kept.
        latest = max(s.started for s in states)
        if committed or (latest >= 0 and all(s.held == latest for s in states)):
            c = committed.pop() if committed else latest
            if self._sum_attempt != c:
                raise SecureAggregationError(
                    f"secure all-reduce: peer {self.peer} lacks the committed sum {c}"
                )
            self._advance(KEEP, out)
        else:
            self._advance(RETRY, out)
