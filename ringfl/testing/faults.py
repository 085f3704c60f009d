"""Fault hooks of a real peer process.

`crash_after_flush` is the scheduled crash `crash(node, round, after_sends)` of a real
peer: the driver calls it right after it handed its `after_sends`-th message of the round
to ZeroMQ; every message sent so far is flushed to the kernel first (bounded), then the
process SIGKILLs itself — so exactly `after_sends` messages leave it, as in the
simulator's `Crash(peer, after_sends)`, and a replay crashes at the same point.
`parse_fault_hooks` reads the command-line test hooks `kill@ROUND:SENDS` (the same crash)
and `nan@ROUND` (a non-finite local model in that round).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, NoReturn

from ringfl.errors import ConfigError


def crash_after_flush(run: Any, *, flush_s: float = 10.0) -> NoReturn:
    """Flush `run`'s queued messages (a `ringfl.transport.zmq` run loop; at most `flush_s`
    seconds), let ZeroMQ deliver everything already sent (sockets closed with linger, the
    context terminated: that waits for the lingering messages), then SIGKILL."""
    zp = run.zp
    end = time.monotonic() + flush_s
    while any(run.outbox.values()) and time.monotonic() < end:
        for to in list(run.outbox):
            if run.outbox[to]:
                run.flush(to)
        time.sleep(0.001)
    for sock in list(zp._push.values()):
        sock.close(linger=int(flush_s * 1000))
    zp.pull.close(0)
    if zp.security is not None:
        zp.security.stop()  # its authentication thread holds a socket of the context
    term = threading.Thread(target=zp.context.term, daemon=True)
    term.start()
    term.join(flush_s)  # bounded: the process dies either way
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # not reached


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


__all__ = ["crash_after_flush", "parse_fault_hooks"]
