"""CONTROL messages between real peers: start-up, liveness, failure notices, rejoin and
state transfer. Same two-frame wire format as every message (`ringfl.wire`); kind
`Kind.CONTROL`, the operation in the header's `step`, chunk = segment = 0.

| op | round | payload | meaning |
|---|---|---|---|
| HELLO | 0 | int64 [incarnation, state, round, 0, 0] | I am (re)starting / alive |
| ACK | 0 | int64 [incarnation, state, round, member, session] | answer to a HELLO |
| PING | round | int64 [nonce] | are you alive? |
| PONG | round | int64 [nonce] | yes |
| LOST | r | int64 [peer, ...] | these peers are gone in round r |
| STATE | r | uint8 blob (see `encode_state`) | the model to start round r with, and round r's members |
| DONE | last round | int64 [incarnation] | I finished training |
| RESULT | r | uint8 blob (see `encode_result`) | the completed sum of round r (plain ring) |

`state` is one of STARTING, RUNNING, JOINING, FINISHED; `round` is the round the sender
runs (RUNNING), its checkpoint's next round (STARTING) or -1; in an ACK, `member` = 1 when
the HELLO's sender (that incarnation) is a member of that round, and `session` is the
data session of the run (the u64 as int64), 0 when not started. `decode_control` checks op,
dtype and length and raises `WireError` with the reason; nothing is ever unpickled.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from ringfl.collective.events import Header, Kind, Message
from ringfl.errors import WireError


class Op(enum.IntEnum):
    HELLO = 1
    ACK = 2
    PING = 3
    PONG = 4
    LOST = 5
    STATE = 6
    DONE = 7
    RESULT = 8


class State(enum.IntEnum):
    STARTING = 0
    RUNNING = 1
    JOINING = 2
    FINISHED = 3


_INT_LENGTHS = {Op.HELLO: 5, Op.ACK: 5, Op.PING: 1, Op.PONG: 1, Op.DONE: 1}
# session, next round, number of members, model elements, summed sample count (weights)
_STATE_HEAD = struct.Struct("<QIIQdd")
MAX_LOST = 1 << 16


@dataclass(frozen=True)
class Hello:
    incarnation: int
    state: State
    round: int
    member: bool = False
    session: int = 0


@dataclass(frozen=True)
class StateTransfer:
    session: int  # the run's data session
    round: int  # the round the receiver takes part in next
    members: tuple[int, ...]  # that round's participants, ring order
    model: np.ndarray  # float32, the model every member starts the round with
    total: float = 0.0  # the secure setup sum of sample counts (ring modes; 0: none)
    val_total: float = 0.0  # the same for validation samples


def make(op: Op, *, session: int, round: int, sender: int, payload: np.ndarray) -> Message:
    """A CONTROL message."""
    payload = np.ascontiguousarray(payload)
    header = Header(
        Kind.CONTROL, session, int(round), int(op), 0, 0, int(sender), payload.dtype.name,
        payload.shape[0],
    )  # fmt: skip
    return Message(header, payload)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def hello(
    op: Op,
    *,
    session: int,
    sender: int,
    incarnation: int,
    state: State,
    round: int,
    member: bool = False,
    data_session: int = 0,
) -> Message:
    """A HELLO or ACK (see the table above)."""
    s64 = int(np.array([data_session], dtype=np.uint64).view(np.int64)[0])
    return make(
        op,
        session=session,
        round=0,
        sender=sender,
        payload=ints(incarnation, int(state), round, int(member), s64),
    )


def encode_state(t: StateTransfer) -> np.ndarray:
    model = np.ascontiguousarray(t.model, dtype=np.float32)
    head = _STATE_HEAD.pack(
        t.session, t.round, len(t.members), model.shape[0], float(t.total), float(t.val_total)
    )
    members = struct.pack(f"<{len(t.members)}I", *t.members)
    return np.frombuffer(head + members + model.tobytes(), dtype=np.uint8)


@dataclass(frozen=True)
class SumResult:
    members: tuple[int, ...]  # whose inputs the sum contains
    total: np.ndarray  # float32


_RESULT_HEAD = struct.Struct("<IQ")  # number of members, elements


def encode_result(r: SumResult) -> np.ndarray:
    total = np.ascontiguousarray(r.total, dtype=np.float32)
    head = _RESULT_HEAD.pack(len(r.members), total.shape[0])
    return np.frombuffer(
        head + struct.pack(f"<{len(r.members)}I", *r.members) + total.tobytes(), dtype=np.uint8
    )


def _decode_result(p: np.ndarray, n_peers: int) -> SumResult:
    if p.dtype != np.uint8:
        raise WireError("control RESULT: payload must be uint8")
    raw = p.tobytes()
    if len(raw) < _RESULT_HEAD.size:
        raise WireError("control RESULT: too short")
    n, m = _RESULT_HEAD.unpack_from(raw)
    if not 1 <= n <= n_peers or len(raw) != _RESULT_HEAD.size + 4 * n + 4 * m:
        raise WireError("control RESULT: payload length does not match its counts")
    members = struct.unpack_from(f"<{n}I", raw, _RESULT_HEAD.size)
    if len(set(members)) != n or not all(0 <= x < n_peers for x in members):
        raise WireError("control RESULT: bad member list")
    at = _RESULT_HEAD.size + 4 * n
    total = np.frombuffer(raw, dtype=np.float32, count=m, offset=at).copy()
    return SumResult(tuple(int(x) for x in members), total)


def decode_control(msg: Message, *, n_peers: int, model_elements: int | None = None):
    """Validate a CONTROL message; returns (op, value): `Hello` for HELLO/ACK, the nonce for
    PING/PONG, a frozenset of peer ids for LOST, a `StateTransfer` for STATE, the
    incarnation for DONE, a `SumResult` for RESULT. Raises `WireError` naming the problem."""
    h = msg.header
    if h.kind != Kind.CONTROL:
        raise WireError(f"control: kind {h.kind!r}")
    try:
        op = Op(h.step)
    except ValueError:
        raise WireError(f"control: unknown operation {h.step}") from None
    if h.chunk or h.segment:
        raise WireError(f"control {op.name}: chunk/segment must be 0")
    if not 0 <= h.sender < n_peers:
        raise WireError(f"control {op.name}: sender {h.sender} is not a peer of the topology")
    p = msg.payload
    if op == Op.STATE:
        return op, _decode_state(p, h.round, n_peers, model_elements)
    if op == Op.RESULT:
        return op, _decode_result(p, n_peers)
    if p.dtype != np.int64:
        raise WireError(f"control {op.name}: payload dtype {p.dtype}, expected int64")
    if op == Op.LOST:
        if not 1 <= p.shape[0] <= min(n_peers, MAX_LOST):
            raise WireError(f"control LOST: {p.shape[0]} peers named")
        lost = frozenset(int(x) for x in p)
        if not all(0 <= x < n_peers for x in lost) or len(lost) != p.shape[0]:
            raise WireError("control LOST: bad peer ids")
        return op, lost
    want = _INT_LENGTHS[op]
    if p.shape[0] != want:
        raise WireError(f"control {op.name}: {p.shape[0]} values, expected {want}")
    if op in (Op.HELLO, Op.ACK):
        inc, state, rnd, member = (int(x) for x in p[:4])
        try:
            st = State(state)
        except ValueError:
            raise WireError(f"control {op.name}: unknown state {state}") from None
        if inc < 0 or rnd < -1 or member not in (0, 1):
            raise WireError(f"control {op.name}: bad incarnation/round/member")
        session = int(p[4:5].view(np.uint64)[0])
        return op, Hello(inc, st, rnd, bool(member), session)
    return op, int(p[0])


def _decode_state(
    p: np.ndarray, round: int, n_peers: int, model_elements: int | None
) -> StateTransfer:
    if p.dtype != np.uint8:
        raise WireError("control STATE: payload must be uint8")
    raw = p.tobytes()
    if len(raw) < _STATE_HEAD.size:
        raise WireError("control STATE: too short")
    session, rnd, n, m, total, val_total = _STATE_HEAD.unpack_from(raw)
    if not (np.isfinite(total) and total >= 0 and np.isfinite(val_total) and val_total >= 0):
        raise WireError(f"control STATE: sample total {total}")
    if rnd != round:
        raise WireError(f"control STATE: round {rnd} in the payload, {round} in the header")
    if not 1 <= n <= n_peers:
        raise WireError(f"control STATE: {n} members")
    if model_elements is not None and m != model_elements:
        raise WireError(f"control STATE: model of {m} elements, expected {model_elements}")
    if len(raw) != _STATE_HEAD.size + 4 * n + 4 * m:
        raise WireError("control STATE: payload length does not match its counts")
    members = struct.unpack_from(f"<{n}I", raw, _STATE_HEAD.size)
    if len(set(members)) != n or not all(0 <= x < n_peers for x in members):
        raise WireError("control STATE: bad member list")
    at = _STATE_HEAD.size + 4 * n
    model = np.frombuffer(raw, dtype=np.float32, count=m, offset=at).copy()
    if not np.all(np.isfinite(model)):
        raise WireError("control STATE: model has non-finite values")
    return StateTransfer(
        int(session), int(rnd), tuple(int(x) for x in members), model, total, val_total
    )


__all__ = [
    "Hello",
    "Op",
    "State",
    "StateTransfer",
    "SumResult",
    "decode_control",
    "encode_result",
    "encode_state",
    "hello",
    "ints",
    "make",
]
