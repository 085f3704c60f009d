"""The secure sum's message vocabulary: stages, the header step codec, and the layouts of
the small blobs (SYNC progress, SEEDS shortcut). Pure functions, no state."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ringfl.errors import WireError

# Stages, in protocol order within an epoch (a message of a later stage is held back).
SYNC, SHARES, SUM, SUMMED, REVEAL, FINISH, SEEDS = 1, 2, 3, 4, 5, 6, 7
STAGE_NAMES = {1: "SYNC", 2: "SHARES", 3: "SUM", 4: "SUMMED", 5: "REVEAL", 6: "FINISH", 7: "SEEDS"}

_EPOCH_BITS, _STEP_BITS = 11, 18
MAX_EPOCH = (1 << _EPOCH_BITS) - 1
MAX_STEP = (1 << _STEP_BITS) - 1

#: dtype → name for the headers of the words and blobs the machine sends (looking up
#: `dtype.name` costs more than the rest of building a small message).
DTYPE_NAMES = {np.dtype(t): np.dtype(t).name for t in (np.uint8, np.uint32, np.uint64)}


def pack_step(stage: int, epoch: int, step: int) -> int:
    """The header's `step` field: stage (3 bits) ‖ epoch (11 bits) ‖ step (18 bits)."""
    if not (0 < stage < 8 and 0 <= epoch <= MAX_EPOCH and 0 <= step <= MAX_STEP):
        raise ValueError(f"secure step out of range: stage {stage} epoch {epoch} step {step}")
    return (stage << (_EPOCH_BITS + _STEP_BITS)) | (epoch << _STEP_BITS) | step


def unpack_step(value: int) -> tuple[int, int, int]:
    return (
        value >> (_EPOCH_BITS + _STEP_BITS),
        (value >> _STEP_BITS) & MAX_EPOCH,
        value & MAX_STEP,
    )


_SYNC_HEAD = struct.Struct("<B3xiiiI")  # flags, started, held, committed, n dead
COMMITTED = 1


@dataclass(frozen=True)
class SyncState:
    """One survivor's progress, as carried by its SYNC blob."""

    flags: int
    started: int  # newest attempt whose SUM this peer started (−1: none)
    held: int  # attempt of the masked sum it holds (−1: none)
    committed: int
    dead: frozenset[int]

    def pack(self) -> bytes:
        dead = sorted(self.dead)
        head = _SYNC_HEAD.pack(self.flags, self.started, self.held, self.committed, len(dead))
        return head + struct.pack(f"<{len(dead)}I", *dead)

    @staticmethod
    def max_bytes(n_peers: int) -> int:
        return _SYNC_HEAD.size + 4 * n_peers

    @classmethod
    def parse(cls, raw: bytes, origin: int, known: set[int] | dict[int, int]) -> SyncState:
        if len(raw) < _SYNC_HEAD.size:
            raise WireError(f"secure SYNC: blob of peer {origin} too short")
        flags, started, held, committed, ndead = _SYNC_HEAD.unpack_from(raw)
        if len(raw) != _SYNC_HEAD.size + 4 * ndead:
            raise WireError(f"secure SYNC: blob of peer {origin} has a bad length")
        dead = frozenset(struct.unpack_from(f"<{ndead}I", raw, _SYNC_HEAD.size))
        if not dead <= set(known):
            raise WireError(f"secure SYNC: blob of peer {origin} names unknown peers")
        return cls(flags, started, held, committed, dead)


def pack_seeds(attempt: int, dead: set[int], seeds: list[bytes]) -> bytes:
    """SEEDS payload: the committed attempt, the lost peers, and the committee's seeds."""
    ids = sorted(dead)
    return struct.pack(f"<iI{len(ids)}I", attempt, len(ids), *ids) + b"".join(seeds)


def parse_seeds(raw: bytes, seed_bytes: int) -> tuple[int, frozenset[int], list[bytes]]:
    if len(raw) < 8:
        raise WireError("secure SEEDS: malformed payload")
    attempt, ndead = struct.unpack_from("<iI", raw)
    at = 8 + 4 * ndead
    if len(raw) < at or (len(raw) - at) % seed_bytes:
        raise WireError("secure SEEDS: bad payload length")
    dead = frozenset(struct.unpack_from(f"<{ndead}I", raw, 8))
    seeds = [raw[i : i + seed_bytes] for i in range(at, len(raw), seed_bytes)]
    return attempt, dead, seeds
