"""ZeroMQ driver: runs one protocol machine at a time for one peer over real sockets.

Sockets. Each `ZmqPeer` binds one PULL socket at its own endpoint (`tcp://host:port` or
`ipc://path`) and, on first use, connects one PUSH socket to each peer it sends to. A
PUSH→PULL pipe is FIFO, which the protocols rely on only for efficiency, never for safety.
Messages queue on a PUSH socket even before its peer has bound, so start-up order does
not matter. High-water marks bound the queues (`hwm` messages each way); LINGER is short
so closing never hangs. `security`, if given, configures every socket before it binds or
connects (the hook for CURVE; see `SocketSecurity`).

Threads. A `ZmqPeer` and its sockets belong to the thread that calls `run`; several peers
in one process (tests, local experiments) each run in their own thread and may share one
`zmq.Context` (see `run_threads`). One peer per process works the same way.

Sends. A payload that is a whole received frame (a machine forwarding what it got, or a
partial sum it added into it) is passed on by reference: ZeroMQ owns that memory, so there
is no copy and nothing to track. Other payloads of at least `zmq.COPY_THRESHOLD` (64 KiB)
go out zero-copy and are tracked; smaller ones are copied by pyzmq (and their trackers
would prove nothing). Endpoints must be tcp:// or ipc:// (inproc would share the sender's
buffers with a receiver that may write into received payloads). `run`
returns only after the trackers of all zero-copy sends have finished, so the caller may
then modify its buffers and the result. Sends never block: a full queue keeps the message
in a per-destination outbox that the poll loop flushes while it keeps receiving.

Receives and routing. Frames are received zero-copy and decoded by `ringfl.wire.decode`
(a `WireError` is logged with its reason and the frames dropped). A message belongs to
the running machine when its kind is one of the machine's kinds and its round is the
machine's round. Messages for a round already completed by this peer (per kind) are
dropped; messages for anything else (a later round, another kind) are held, up to
`max_held` messages / `max_held_bytes`, and delivered when a matching run starts.

Deadlines. `timeout_s` bounds a whole `run(machine, timeout_s)` (every wait inside is
bounded by it): when it passes, the peers the machine still waits for (`expecting()`) are
reported with `peers_lost`; the default machines raise `PeerTimeout` naming them. A machine
that recovers gets a fresh `timeout_s`; an expiry with no new peer to report raises
`PeerTimeout`. Choose `timeout_s` large enough for the transfer itself.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import zmq

from ringfl import wire
from ringfl.collective.events import Done, Kind, Machine, Message, Send
from ringfl.errors import ConfigError, PeerTimeout, RingflError, WireError

log = logging.getLogger(__name__)

_BIG = zmq.COPY_THRESHOLD
# plain ints: pyzmq's flag enums cost a Python call per `|`
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)
_SEND_BIG_HEAD = int(zmq.SNDMORE) | _NOBLOCK


class SocketSecurity(Protocol):
    """Configures a socket before it binds (`server=True`, `peer` = this peer) or
    connects (`server=False`, `peer` = the peer it connects to). CURVE plugs in here."""

    def configure(self, socket: zmq.Socket, *, server: bool, peer: int) -> None: ...


def check_ipc_bind(address: str, who: str) -> None:
    """Refuse (`ConfigError` naming `who` and the path) to bind `ipc://PATH` when PATH
    exists and is not a Unix socket: libzmq unlinks the path before binding, so binding
    would silently delete a regular file, a link or an empty directory. An existing socket
    (left by an earlier run) is fine. tcp:// addresses, `ipc://*` and Linux abstract
    sockets (`ipc://@name`) have no such path and pass."""
    if not address.startswith("ipc://"):
        return
    path = address[len("ipc://") :]
    if path in ("", "*") or path.startswith("@"):
        return
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{who}: cannot bind {address}: cannot inspect {path}: {exc}") from None
    if stat.S_ISSOCK(mode):
        return
    kind = "a special file"
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            kind = name
    raise ConfigError(
        f"{who}: refusing to bind {address}: {path} exists and is {kind}, not a socket "
        "(binding would delete it); choose another ipc path"
    )


class ZmqPeer:
    """One peer's sockets. `endpoints[peer]` is where it binds (tcp port 0 picks a free
    port: read `address` and tell the others via `set_endpoints`); the other entries are
    where it connects. Use as a context manager or call `close()`."""

    def __init__(
        self,
        peer: int,
        endpoints: Mapping[int, str],
        *,
        context: zmq.Context | None = None,
        session: int | None = None,
        max_elements: int = 1 << 26,
        hwm: int = 4096,
        linger_ms: int = 200,
        max_held: int = 100_000,
        max_held_bytes: int = 1 << 31,
        security: SocketSecurity | None = None,
        zero_copy_min_bytes: int = _BIG,
    ) -> None:
        self.peer = int(peer)
        self.zero_copy_min_bytes = max(int(zero_copy_min_bytes), _BIG)
        if self.peer not in endpoints:
            raise ConfigError(f"no endpoint for peer {self.peer} (it must bind somewhere)")
        self.endpoints = {int(k): str(v) for k, v in endpoints.items()}
        for k, v in self.endpoints.items():
            if not v.startswith(("tcp://", "ipc://")):
                # inproc would hand the sender's own buffers to the receiver, which may
                # modify received payloads in place
                raise ConfigError(f"endpoint of peer {k} is {v!r}: use tcp:// or ipc://")
        self._own_context = context is None
        self.context = zmq.Context() if context is None else context
        self.session = session
        self.max_elements = int(max_elements)
        self.hwm = hwm
        self.linger_ms = linger_ms
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.security = security
        self._push: dict[int, zmq.Socket] = {}
        self._held: deque[Message] = deque()
        self._held_bytes = 0
        self._completed: dict[int, int] = {}  # kind -> last completed round
        self.rejected = 0  # messages dropped as invalid, over this peer's life
        self.bytes_sent = 0  # payload bytes
        self.messages_sent = 0
        self.pull = self.context.socket(zmq.PULL)
        self._setup(self.pull, server=True, peer=self.peer)
        self.pull.setsockopt(zmq.RCVHWM, hwm)
        # the largest frame a valid message can have; bigger ones cut the connection
        self.pull.setsockopt(zmq.MAXMSGSIZE, self.max_elements * 8 + wire.HEADER_SIZE)
        try:
            check_ipc_bind(self.endpoints[self.peer], f"peer {self.peer}")
            self.pull.bind(self.endpoints[self.peer])
        except ConfigError:
            self.pull.close(0)
            raise
        except zmq.ZMQError as exc:
            self.pull.close(0)
            raise ConfigError(
                f"peer {self.peer} cannot bind {self.endpoints[self.peer]}: {exc}"
            ) from None
        self.address: str = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoints[self.peer] = self.address

    # -- set-up ---------------------------------------------------------------------------

    def _setup(self, sock: zmq.Socket, *, server: bool, peer: int) -> None:
        sock.setsockopt(zmq.LINGER, self.linger_ms)
        if self.security is not None:
            self.security.configure(sock, server=server, peer=peer)

    def set_endpoints(self, endpoints: Mapping[int, str]) -> None:
        """Add or change where other peers are reached (before sending to them)."""
        for k, v in endpoints.items():
            if not str(v).startswith(("tcp://", "ipc://")):
                raise ConfigError(f"endpoint of peer {k} is {v!r}: use tcp:// or ipc://")
            if int(k) != self.peer:
                self.endpoints[int(k)] = str(v)

    def _socket_to(self, to: int) -> zmq.Socket:
        sock = self._push.get(to)
        if sock is None:
            addr = self.endpoints.get(to)
            if addr is None:
                raise ConfigError(f"peer {self.peer} has no endpoint for peer {to}")
            sock = self.context.socket(zmq.PUSH)
            self._setup(sock, server=False, peer=to)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.connect(addr)
            self._push[to] = sock
        return sock

    def close(self) -> None:
        for s in self._push.values():
            s.close(self.linger_ms)
        self._push.clear()
        self.pull.close(0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> ZmqPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running a machine ------------------------------------------------------------

    def run(
        self,
        machine: Machine,
        timeout_s: float,
        *,
        kinds: Collection[Kind] | None = None,
        round: int | None = None,
    ) -> Any:
        """Drive `machine` to `Done` and return its result.

        `kinds`/`round` say which messages belong to it; by default the machine's `kinds`
        (or `kind`) and `round` attributes. Raises `PeerTimeout` naming missing peers
        when `timeout_s` passes without completion (see the module docstring).
        """
        if kinds is None:
            kinds = getattr(machine, "kinds", None) or (machine.kind,)  # type: ignore[attr-defined]
        if round is None:
            round = machine.round  # type: ignore[attr-defined]
        return _Run(self, machine, frozenset(Kind(k) for k in kinds), int(round), timeout_s).go()

    def _classify(self, msg: Message, kinds: frozenset[Kind], round: int) -> str:
        h = msg.header
        if h.kind in kinds and h.round == round:
            return "deliver"
        if h.round <= self._completed.get(int(h.kind), -1):
            return "stale"
        return "hold"

    def _hold(self, msg: Message) -> None:
        n = msg.payload.nbytes
        if len(self._held) >= self.max_held or self._held_bytes + n > self.max_held_bytes:
            log.warning(
                "peer %d: held-message limit reached; dropping %s round %d from %d",
                self.peer,
                msg.header.kind.name,
                msg.header.round,
                msg.header.sender,
            )
            return
        self._held.append(msg)
        self._held_bytes += n

    def _take_held(self, kinds: frozenset[Kind], round: int) -> list[Message]:
        mine: list[Message] = []
        rest: deque[Message] = deque()
        for m in self._held:
            (mine if m.header.kind in kinds and m.header.round == round else rest).append(m)
        self._held = rest
        self._held_bytes = sum(m.payload.nbytes for m in rest)
        return mine


def _received_frame(payload: Any) -> zmq.Frame | None:
    """The received `zmq.Frame` whose whole buffer `payload` is, if it is one."""
    base = payload.base
    if type(base) is memoryview:
        frame = base.obj
        # payload is contiguous (wire.encode checks), so equal sizes mean the whole frame
        if type(frame) is zmq.Frame and base.nbytes == payload.nbytes:
            return frame
    return None


class _Run:
    """One `ZmqPeer.run`: the poll loop."""

    def __init__(
        self, zp: ZmqPeer, machine: Machine, kinds: frozenset[Kind], round: int, timeout_s: float
    ) -> None:
        self.zp = zp
        self.machine = machine
        self.kinds = kinds
        self.round = round
        self.timeout_s = float(timeout_s)
        self.result: Any = None
        self.finished = False
        self.outbox: dict[int, deque[list[Any]]] = {}
        self.trackers: list[tuple[int, zmq.MessageTracker]] = []
        self.reported: set[int] = set()
        self.poller = zmq.Poller()
        self.poller.register(zp.pull, zmq.POLLIN)
        self.pollin = [(zp.pull, _POLLIN)]
        self.polled_out: set[int] = set()

    # actions --------------------------------------------------------------------------

    def act(self, actions: list) -> None:
        for a in actions:
            if a.__class__ is Send:
                self.send(a)
            elif a.__class__ is Done:
                self.result = a.result
                self.finished = True
            else:
                raise TypeError(f"machine returned {a!r}, not Send/Done")

    def send(self, a: Send) -> None:
        frames = wire.encode(a.message)
        zp = self.zp
        zp.bytes_sent += frames[1].nbytes
        zp.messages_sent += 1
        box = self.outbox.get(a.to)
        if box:
            box.append(frames)
            return
        if not self._try_send(a.to, frames):
            self.outbox.setdefault(a.to, deque()).append(frames)
            self._watch(a.to, True)

    def _try_send(self, to: int, frames: list[Any]) -> bool:
        sock = self.zp._push.get(to) or self.zp._socket_to(to)
        head, payload = frames
        frame = _received_frame(payload)
        try:
            if frame is None and payload.nbytes < self.zp.zero_copy_min_bytes:
                sock.send_multipart(frames, _NOBLOCK)
                return True
            # once the first part is queued, ZeroMQ takes the rest of the message
            sock.send(head, _SEND_BIG_HEAD)
        except zmq.Again:
            return False
        if frame is not None:
            # ZeroMQ's own memory: shared by reference count, nothing to track
            sock.send(frame, _NOBLOCK, copy=False)
            return True
        tracker = sock.send(payload, _NOBLOCK, copy=False, track=True)
        self.trackers.append((to, tracker))
        if len(self.trackers) > 256:
            self.trackers = [(p, t) for p, t in self.trackers if not t.done]
        return True

    def _watch(self, to: int, on: bool) -> None:
        sock = self.zp._push[to]
        if on and to not in self.polled_out:
            self.poller.register(sock, zmq.POLLOUT)
            self.polled_out.add(to)
        elif not on and to in self.polled_out:
            self.poller.unregister(sock)
            self.polled_out.discard(to)

    def flush(self, to: int) -> None:
        box = self.outbox[to]
        while box:
            if not self._try_send(to, box[0]):
                return
            box.popleft()
        self._watch(to, False)

    # receiving ------------------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        try:
            actions = self.machine.receive(msg)
        except WireError as exc:
            self.zp.rejected += 1
            log.warning("peer %d rejected a message: %s", self.zp.peer, exc)
            return
        self.act(actions)

    def drain(self) -> None:
        zp = self.zp
        pull = zp.pull
        decode = wire.decode
        while int(pull.getsockopt(_EVENTS)) & _POLLIN:
            frames = pull.recv_multipart(_NOBLOCK, copy=False)
            try:
                msg = decode(frames, max_elements=zp.max_elements, session=zp.session)
            except WireError as exc:
                zp.rejected += 1
                log.warning("peer %d dropped malformed frames: %s", zp.peer, exc)
                continue
            where = zp._classify(msg, self.kinds, self.round)
            if where == "deliver":
                self.deliver(msg)
            elif where == "hold":
                zp._hold(msg)
            else:
                h = msg.header
                log.debug(
                    "peer %d: stale %s round %d from %d", zp.peer, h.kind.name, h.round, h.sender
                )

    # the loop -------------------------------------------------------------------------

    def go(self) -> Any:
        zp = self.zp
        m = self.machine
        deadline = time.monotonic() + self.timeout_s
        self.act(m.start())
        for msg in zp._take_held(self.kinds, self.round):
            self.deliver(msg)
        while not self.finished or any(self.outbox.values()):
            now = time.monotonic()
            if now >= deadline:
                deadline = self._expired(now)
                continue
            wait_ms = max(1, int((deadline - now) * 1000) + 1)
            if not self.polled_out:  # the common case: only receiving to wait for
                if zmq.zmq_poll(self.pollin, wait_ms):
                    self.drain()
                continue
            for sock, _ in self.poller.poll(wait_ms):
                if sock is zp.pull:
                    self.drain()
            for to in list(self.polled_out):
                if self.outbox.get(to):
                    self.flush(to)
        self._release(deadline)
        for k in self.kinds:
            zp._completed[int(k)] = max(zp._completed.get(int(k), -1), self.round)
        return self.result

    def _expired(self, now: float) -> float:
        stuck = sorted(p for p, box in self.outbox.items() if box)
        if self.finished:
            raise PeerTimeout(
                f"peer {self.zp.peer}: could not hand messages to peer(s) {stuck} "
                f"within {self.timeout_s:g} s",
                tuple(stuck),
            )
        waiting = set(self.machine.expecting())
        new = waiting - self.reported
        if not new:
            missing = sorted(waiting) or stuck
            raise PeerTimeout(
                f"peer {self.zp.peer}: no progress within {self.timeout_s:g} s "
                f"(kinds {sorted(k.name for k in self.kinds)}, round {self.round}); "
                f"waiting for peer(s) {missing}",
                tuple(missing),
            )
        self.reported |= new
        self.act(self.machine.peers_lost(frozenset(new)))
        return now + self.timeout_s

    def _release(self, deadline: float) -> None:
        """Wait until ZeroMQ has let go of every zero-copy payload (trap: a small final
        message's tracker proves nothing, so every big message is tracked)."""
        for to, tracker in self.trackers:
            if tracker.done:
                continue
            left = deadline - time.monotonic()
            try:
                tracker.wait(max(left, 0.001))
            except zmq.NotDone:
                raise PeerTimeout(
                    f"peer {self.zp.peer}: a message to peer {to} was not sent "
                    f"within {self.timeout_s:g} s",
                    (to,),
                ) from None


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc keep freed memory for reuse instead of mapping fresh pages for every
    ZeroMQ message (each received segment is a new allocation; fresh pages cost a page
    fault per 4 KiB). Process-wide, hence opt-in: peer entry points and benchmarks call it.
    Returns False where mallopt is unavailable (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(
        mallopt(m_trim_threshold, trim_threshold)
    )


def run_threads(
    peers: Mapping[int, ZmqPeer],
    machines: Mapping[int, Machine],
    timeout_s: float,
) -> dict[int, Any]:
    """Run each machine on its peer in its own thread; return {peer: result}.

    Every thread is joined within `timeout_s` plus a margin; the first error (by peer id)
    is raised after all threads ended, a `PeerTimeout` from a peer preferred over others.
    """
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}

    def work(p: int) -> None:
        try:
            results[p] = peers[p].run(machines[p], timeout_s)
        except BaseException as exc:  # re-raised in the caller's thread
            errors[p] = exc

    threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in sorted(machines)]
    for t in threads:
        t.start()
    limit = time.monotonic() + 2 * timeout_s + 5
    for t in threads:
        t.join(max(0.0, limit - time.monotonic()))
    alive = [p for p, t in zip(sorted(machines), threads, strict=True) if t.is_alive()]
    if alive:
        raise PeerTimeout(f"peers {alive} did not return (driver bug)", tuple(alive))
    if errors:
        first = min(errors, key=lambda p: (not isinstance(errors[p], RingflError), p))
        raise errors[first]
    return results


def local_peers(
    ids: Collection[int],
    *,
    transport: str = "tcp",
    ipc_dir: str | None = None,
    context: zmq.Context | None = None,
    **kwargs: Any,
) -> dict[int, ZmqPeer]:
    """Peers for one process on loopback: tcp on ports the OS picks, or ipc sockets in
    `ipc_dir`; each one knows every other's address."""
    eps: dict[int, str] = {}
    for p in ids:
        if transport == "tcp":
            eps[p] = "tcp://127.0.0.1:0"
        elif transport == "ipc":
            if ipc_dir is None:
                raise ConfigError("local_peers: ipc needs ipc_dir")
            eps[p] = f"ipc://{ipc_dir}/peer-{p}.sock"
        else:
            raise ConfigError(f"local_peers: transport {transport!r} is not tcp or ipc")
    peers: dict[int, ZmqPeer] = {}
    try:
        for p in ids:
            peers[p] = ZmqPeer(p, {p: eps[p]}, context=context, **kwargs)
    except BaseException:
        for zp in peers.values():
            zp.close()
        raise
    addrs = {p: zp.address for p, zp in peers.items()}
    for zp in peers.values():
        zp.set_endpoints(addrs)
    return peers


__all__ = [
    "SocketSecurity",
    "ZmqPeer",
    "check_ipc_bind",
    "local_peers",
    "run_threads",
    "tune_malloc",
]
