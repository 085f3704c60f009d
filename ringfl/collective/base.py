"""What every collective state machine shares: identity, counters, header checks,
segmenting, and the default reaction to a lost peer (give up with `PeerTimeout`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from ringfl.collective.events import Action, Done, Header, Kind, Message, Send
from ringfl.errors import PeerTimeout, WireError
from ringfl.wire import DTYPES


def split(start: int, stop: int, max_elements: int, min_segments: int = 1) -> list[tuple[int, int]]:
    """Split [start, stop) into near-equal segments of at most `max_elements` elements.

    At least `min_segments` segments when the range has that many elements, and always at
    least one (an empty range gives one empty segment, so every peer sends something and
    every step has a message to wait for).
    """
    n = stop - start
    k = max(-(-n // max_elements), min(min_segments, n), 1)
    return [(start + n * i // k, start + n * (i + 1) // k) for i in range(k)]


def segment_elements(segment_bytes: int, dtype: np.dtype) -> int:
    """Elements per segment for a byte budget (at least one)."""
    if segment_bytes <= 0:
        raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
    return max(1, segment_bytes // dtype.itemsize)


def wire_dtype(dtype: Any, what: str) -> np.dtype:
    dt: np.dtype = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise ValueError(f"{what}: dtype {dt.name} is not one of {', '.join(DTYPES)}")
    return dt


def as_buffer(data: Any, what: str) -> np.ndarray:
    """`data` as a 1-D C-contiguous array (a copy only if it is not one already)."""
    arr = np.asarray(data)
    if arr.ndim != 1:
        raise ValueError(f"{what}: data must be 1-D, got shape {arr.shape}")
    wire_dtype(arr.dtype, what)
    return np.ascontiguousarray(arr)


def resolve_input(
    what: str, data: Any, length: int | None, dtype: Any, source: Any
) -> tuple[np.ndarray | None, int, Any]:
    """Check a collective's contribution: `data` (1-D array) or `source` with `length` and
    `dtype` (a `data` array may supply them). Returns (data or None when `source` is
    used, length, dtype); `ValueError` naming `what` otherwise."""
    arr: np.ndarray | None = None
    if data is not None:
        full = as_buffer(data, what)
        length = full.shape[0] if length is None else length
        dtype = full.dtype if dtype is None else dtype
        if full.shape[0] != length or full.dtype != np.dtype(dtype):
            raise ValueError(f"{what}: data disagrees with length/dtype")
        if source is None:
            arr = full
    elif source is None:
        raise ValueError(f"{what}: give data or source")
    if length is None or dtype is None:
        raise ValueError(f"{what}: source needs length and dtype")
    if int(length) < 0:
        raise ValueError(f"{what}: negative length {length}")
    return arr, int(length), dtype


def check_out(what: str, out: np.ndarray | None, length: int, dtype: np.dtype) -> np.ndarray:
    """`out` if it is a writable contiguous `dtype` array of `length` elements, a new one
    if it is None; `ValueError` otherwise."""
    if out is None:
        return np.empty(length, dtype=dtype)
    if (
        not isinstance(out, np.ndarray)
        or out.shape != (length,)
        or out.dtype != dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"{what}: out must be a writable contiguous {dtype.name} array of {length} elements"
        )
    return out


def read_source(source: Any, peer: int, dtype: np.dtype, start: int, stop: int) -> np.ndarray:
    """`source(start, stop)`, checked to be `stop − start` elements of `dtype`."""
    part = source(start, stop)
    if not isinstance(part, np.ndarray) or part.dtype != dtype or part.shape != (stop - start,):
        raise ValueError(
            f"all-reduce source of peer {peer} returned "
            f"{getattr(part, 'dtype', type(part).__name__)} "
            f"{getattr(part, 'shape', '')} for [{start}, {stop}), "
            f"expected {dtype.name} ({stop - start},)"
        )
    return np.ascontiguousarray(part)


class MachineBase:
    """Common state of a collective: who it is, which session/round, bytes it sent."""

    kind: Kind = Kind.ALLREDUCE

    def __init__(self, peer: int, *, session: int, round: int, dtype: np.dtype) -> None:
        self.peer = int(peer)
        self.session = int(session)
        self.round = int(round)
        self.dtype = dtype
        self.dtype_name: str = dtype.name
        self.bytes_sent = 0  # payload bytes handed to the driver
        self.messages_sent = 0
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The message kinds this machine takes (drivers route by kind and round)."""
        return (self.kind,)

    @property
    def members(self) -> tuple[int, ...]:
        """Whose inputs the result contains (without recovery: everyone it needs)."""
        return tuple(sorted({self.peer, *self._needs()}))

    def _send(self, to: int, step: int, chunk: int, segment: int, payload: np.ndarray) -> Send:
        self.bytes_sent += payload.nbytes
        self.messages_sent += 1
        header = Header(
            self.kind,
            self.session,
            self.round,
            step,
            chunk,
            segment,
            self.peer,
            self.dtype_name,
            payload.shape[0],
        )
        return Send(to, Message(header, payload))

    def _finish(self, result: Any) -> Done:
        self._done = True
        return Done(result)

    def _check_common(self, message: Message) -> Header:
        """Reject what belongs to another collective; raise `WireError` with the reason."""
        h = message.header
        name = type(self).__name__
        if self._done:
            raise WireError(f"{name} of peer {self.peer} already finished; message from {h.sender}")
        if h.kind != self.kind:
            raise WireError(f"{name}: message kind {h.kind!r}, expected {self.kind!r}")
        if h.session != self.session:
            raise WireError(f"{name}: session {h.session}, expected {self.session}")
        if h.round != self.round:
            raise WireError(f"{name}: round {h.round}, expected {self.round}")
        if h.dtype != self.dtype_name:
            raise WireError(f"{name}: dtype {h.dtype}, expected {self.dtype_name}")
        p = message.payload
        if p.dtype != self.dtype or p.ndim != 1 or p.shape[0] != h.length:
            raise WireError(f"{name}: payload does not match its header")
        return h

    def _accept_segment(
        self,
        message: Message,
        name: str,
        senders: Collection[int],
        step: int,
        segments: Sequence[tuple[int, int]],
        pending: Sequence[dict[int, np.ndarray]],
    ) -> Header:
        """Checks shared by the one-step fan-in machines (gossip, star): the sender is one
        of `senders`, the step is `step` (chunk 0), the segment exists with the right
        length and was not received before; then the payload is stored in `pending`."""
        h = self._check_common(message)
        if h.sender not in senders:
            raise WireError(f"{name}: message from unexpected peer {h.sender}")
        if h.step != step or h.chunk != 0:
            raise WireError(f"{name}: step {h.step} chunk {h.chunk}, expected {step} 0")
        if h.segment >= len(segments):
            raise WireError(f"{name}: segment {h.segment} >= {len(segments)}")
        a, b = segments[h.segment]
        if h.length != b - a:
            raise WireError(
                f"{name}: segment {h.segment} has {h.length} elements, expected {b - a}"
            )
        if h.sender in pending[h.segment]:
            raise WireError(f"{name}: duplicate segment {h.segment} from {h.sender}")
        pending[h.segment][h.sender] = message.payload
        return h

    def peers_lost(self, peers: frozenset[int]) -> list[Action]:
        """Default: a lost peer this collective needs ends it with `PeerTimeout`."""
        needed = sorted(set(peers) & self._needs())
        if not needed or self._done:
            return []
        raise PeerTimeout(
            f"{type(self).__name__} (peer {self.peer}, round {self.round}): "
            f"lost peer(s) {', '.join(map(str, needed))}",
            tuple(needed),
        )

    def _needs(self) -> set[int]:
        """Peers whose loss breaks this collective."""
        raise NotImplementedError
