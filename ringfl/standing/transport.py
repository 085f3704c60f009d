"""The node's ZeroMQ driver: CURVE-authenticated PUSH/PULL links to every other node.

Same security as real peers (`ringfl.peer.curve`): the node's PULL socket is a CURVE
server that admits only keys listed in the topology, and ZeroMQ attaches the sender's
peer index (its `User-Id`) to every frame, so the node knows who sent each message without
trusting the message. Frames above `MAX_MESSAGE` are cut by ZeroMQ (MAXMSGSIZE) before
they are read; multi-frame messages are dropped.

One thread owns the sockets. Other threads hand it outgoing messages through a queue
(`send`); it calls `on_message(sender_index, payload)` for each accepted frame. Sends
never block: a full queue drops the message (the node's channel resends until acked).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping

import zmq

from ringfl.peer.curve import CurveSecurity
from ringfl.peer.identity import Identity
from ringfl.standing.messages import MAX_MESSAGE

log = logging.getLogger(__name__)


class Transport:
    """Sockets of one node (see the module docstring). `endpoints[i]`: where node i
    listens; `me`: this node's index. `bind`: bind here instead of `endpoints[me]`."""

    def __init__(
        self,
        me: int,
        endpoints: Mapping[int, str],
        identity: Identity,
        curve_keys: Mapping[int, bytes],
        on_message: Callable[[int, bytes], None],
        *,
        on_refused: Callable[[str], None] = lambda fp: None,
        bind: str | None = None,
    ) -> None:
        self.me = me
        self.endpoints = dict(endpoints)
        self.on_message = on_message
        self.context = zmq.Context()
        self.security = CurveSecurity(identity, me, curve_keys, self.context, on_refused=on_refused)
        self.security.start()
        self.pull = self.context.socket(zmq.PULL)
        self.security.configure(self.pull, server=True, peer=me)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(bind or self.endpoints[me])
        self.address = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.push: dict[int, zmq.Socket] = {}
        self.outq: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="node-zmq", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def send(self, peer: int, payload: bytes) -> None:
        """Queue `payload` for node `peer` (thread-safe, never blocks)."""
        self.outq.put((peer, payload))

    def _socket(self, peer: int) -> zmq.Socket:
        s = self.push.get(peer)
        if s is None:
            s = self.context.socket(zmq.PUSH)
            self.security.configure(s, server=False, peer=peer)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 1000)
            s.connect(self.endpoints[peer])
            self.push[peer] = s
        return s

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        while not self._stop.is_set():
            while True:
                try:
                    item = self.outq.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    break
                with contextlib.suppress(zmq.Again):  # the channel resends until acked
                    self._socket(item[0]).send(item[1], zmq.NOBLOCK)
            if not dict(poller.poll(50)):
                continue
            for _ in range(256):
                try:
                    frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                sender = CurveSecurity.authenticated_peer(frames[0])
                if sender is None or len(frames) != 1 or sender == self.me:
                    log.warning("dropped a message without a single authenticated frame")
                    continue
                try:
                    self.on_message(sender, frames[0].bytes)
                except Exception:  # a bug in handling one message must not stop the node
                    log.exception("handling a message from node %s failed", sender)
        for s in [self.pull, *self.push.values()]:
            s.close(0)
        self.security.stop()
        self.context.term()

    def stop(self) -> None:
        self._stop.set()
        self.outq.put(None)
        if self.thread.is_alive():
            self.thread.join(5)


__all__ = ["Transport"]
