"""The vocabulary shared by every protocol state machine and every driver.

A protocol object does no I/O and reads no clock. A driver (ZeroMQ, or the in-memory
network with its virtual clock) feeds it events and carries out the actions it returns:

    actions = proto.start()                # once
    actions = proto.receive(message)       # a decoded message from a neighbour
    actions = proto.peers_lost({3})        # the driver declared peer 3 gone (deadline passed)

Each call returns a list of actions: `Send(to, message)` or `Done(result)`.
`proto.expecting()` names the peers it is waiting on, so a driver whose deadline passes
can say who is missing. A message that does not fit the protocol's current state (wrong
round, step, sender or length, a duplicate) makes `receive` raise `WireError`; the driver
logs the reason and drops the message, and the protocol state is unchanged.

Peers are identified by int ids: the index of the node in `ringfl.topology.peers(graph)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# The message vocabulary belongs to the wire format; re-exported here for protocol code.
from ringfl.wire import Header, Kind, Message


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to peer `to`. The payload must stay untouched until the driver has
    released it (the ZeroMQ driver sends zero-copy)."""

    to: int
    message: Message


@dataclass(frozen=True, slots=True)
class Done:
    """The protocol finished; `result` is what it computed (an ndarray for collectives)."""

    result: Any


Action = Send | Done


class Machine(Protocol):
    """What a driver needs from a protocol state machine: who runs it (`peer`), which
    messages it takes (`kinds`, `round`), the events and `expecting()`, and, once done,
    whose inputs its result contains (`members`, ring order)."""

    peer: int
    round: int

    @property
    def kinds(self) -> tuple[Kind, ...]: ...

    @property
    def members(self) -> tuple[int, ...]: ...

    def start(self) -> list[Action]: ...

    def receive(self, message: Message) -> list[Action]: ...

    def peers_lost(self, peers: frozenset[int]) -> list[Action]: ...

    def expecting(self) -> frozenset[int]: ...

    @property
    def done(self) -> bool: ...


__all__ = ["Action", "Done", "Header", "Kind", "Machine", "Message", "Send"]
