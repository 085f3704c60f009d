"""ZeroMQ CURVE for peer links: a `SocketSecurity` for `ZmqPeer`.

Every link is a PUSH (client) → PULL (server) connection. The PULL socket of a peer is a
CURVE server with the peer's own CURVE key pair; each PUSH socket is a CURVE client that
must know the public key of the peer it connects to (from the topology), so a peer only
ever talks to the holder of the secret key named in the topology. The server asks a ZAP
handler (pyzmq's `ThreadAuthenticator`, one per process) whether the client's public key
is allowed: the allowlist is exactly the topology's `public_key` values, and the handler
maps the key to the peer id, which ZeroMQ then attaches to every frame of that connection
as its `User-Id`. The driver compares it with the sender field of each message header
(`authenticated_peer`), so a peer cannot speak for another. A client whose key is not in
the topology is refused during the handshake: none of its messages reach the process,
and the refusal is reported (key fingerprint only, never a secret) to `on_refused`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from ringfl.peer.identity import Identity

ZAP_DOMAIN = "ringfl"


def fingerprint(raw_or_z85: bytes) -> str:
    """A short, non-secret name for a public key: first 12 hex digits of its SHA-256."""
    raw = z85.decode(raw_or_z85) if len(raw_or_z85) == 40 else bytes(raw_or_z85)
    return hashlib.sha256(raw).hexdigest()[:12]


class _Allowlist:
    """ZAP credentials provider: a key is allowed when it is some peer's `public_key`."""

    def __init__(self, ids: Mapping[bytes, int], on_refused: Callable[[str], None]) -> None:
        self.ids = dict(ids)
        self.on_refused = on_refused

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.ids:
            return True
        self.on_refused(fingerprint(key))
        return False


class _PeerAuthenticator(ThreadAuthenticator):
    """A ZAP handler whose User-Id for an allowed CURVE key is the peer id (decimal)."""

    def __init__(self, context: zmq.Context, ids: Mapping[bytes, int]) -> None:
        super().__init__(context)
        self._ids = dict(ids)

    def curve_user_id(self, client_public_key: bytes) -> str:
        return str(self._ids[z85.encode(client_public_key)])


class CurveSecurity:
    """CURVE on every socket of one peer. `curve_keys`: every peer's raw CURVE public key
    by peer id (the allowlist). Call `start()` before the first socket is made and
    `stop()` after the last one is closed. ZAP is per `zmq.Context`: one `CurveSecurity`
    per context (a real peer has one process, one context)."""

    def __init__(
        self,
        identity: Identity,
        peer: int,
        curve_keys: Mapping[int, bytes],
        context: zmq.Context,
        *,
        on_refused: Callable[[str], None] = lambda fp: None,
    ) -> None:
        self.peer = int(peer)
        self._public = z85.encode(identity.curve.public_bytes)
        self._secret = identity.curve_secret_z85
        if curve_keys.get(self.peer) != identity.curve.public_bytes:
            from ringfl.errors import ConfigError

            raise ConfigError(
                f"the CURVE key in the key directory is not the topology's public_key of "
                f"peer {self.peer} (wrong key directory, or keys regenerated without "
                "updating the topology)"
            )
        self._servers = {int(p): z85.encode(k) for p, k in curve_keys.items()}
        ids = {z: p for p, z in self._servers.items()}
        self._auth = _PeerAuthenticator(context, ids)
        self._auth.configure_curve_callback(ZAP_DOMAIN, _Allowlist(ids, on_refused))
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._auth.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._auth.stop()
            self._started = False

    def configure(self, socket: zmq.Socket, *, server: bool, peer: int) -> None:
        socket.curve_secretkey = self._secret
        socket.curve_publickey = self._public
        if server:
            socket.zap_domain = ZAP_DOMAIN.encode()
            socket.curve_server = True
        else:
            socket.curve_serverkey = self._servers[int(peer)]

    @staticmethod
    def authenticated_peer(frame: Any) -> int | None:
        """The peer id ZAP attached to a received frame (`zmq.Frame`), or None."""
        try:
            uid = frame.get("User-Id")
        except (zmq.ZMQError, AttributeError, TypeError):
            return None
        try:
            return int(uid)
        except (TypeError, ValueError):
            return None


__all__ = ["ZAP_DOMAIN", "CurveSecurity", "fingerprint"]
