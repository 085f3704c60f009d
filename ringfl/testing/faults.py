"""Fault hooks of a real peer process.

`KillAfter` wraps a collective and SIGKILLs this process when the collective hands out
its `sends`-th message (the scheduled crash `crash(node, round, after_sends)`; the
message itself and later ones never leave). `parse_fault_hooks` reads the command-line
test hooks `kill@ROUND:SENDS` (the same crash) and `nan@ROUND` (a non-finite local model
in that round).
"""

from __future__ import annotations

import os
import signal

from ringfl.collective.events import Action, Kind, Message, Send
from ringfl.collective.events import Machine as _Machine
from ringfl.errors import ConfigError


class KillAfter:
    """A `Machine` that is `machine`, except that this process dies (SIGKILL) when the
    machine hands out its `sends`-th message."""

    def __init__(self, machine: _Machine, sends: int) -> None:
        self._m = machine
        self._left = sends
        self.peer = machine.peer
        self.round = machine.round
        self.kinds: tuple[Kind, ...] = machine.kinds

    @property
    def done(self) -> bool:
        return self._m.done

    @property
    def members(self) -> tuple[int, ...]:
        return self._m.members

    def _count(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Send):
                self._left -= 1
                if self._left <= 0:
                    os.kill(os.getpid(), signal.SIGKILL)
        return actions

    def start(self) -> list[Action]:
        return self._count(self._m.start())

    def receive(self, message: Message) -> list[Action]:
        return self._count(self._m.receive(message))

    def peers_lost(self, peers: frozenset[int]) -> list[Action]:
        return self._count(self._m.peers_lost(peers))

    def expecting(self) -> frozenset[int]:
        return self._m.expecting()


def parse_fault_hooks(faults: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """`kill@R:S` -> {"kill": (R, S)}, `nan@R` -> {"nan": (R, 0)}; `ConfigError` else."""
    out = {}
    for f in faults:
        try:
            what, at = f.split("@", 1)
            parts = [int(x) for x in at.split(":")]
        except ValueError:
            raise ConfigError(f"--fault {f!r}: expected kill@ROUND:SENDS or nan@ROUND") from None
        if what == "kill" and len(parts) == 2:
            out["kill"] = (parts[0], parts[1])
        elif what == "nan" and len(parts) == 1:
            out["nan"] = (parts[0], 0)
        else:
            raise ConfigError(f"--fault {f!r}: expected kill@ROUND:SENDS or nan@ROUND")
    return out


__all__ = ["KillAfter", "parse_fault_hooks"]
