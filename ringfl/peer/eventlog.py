"""A peer's event log: one JSON object per line in `events.jsonl` in its directory, and
the same events as readable lines on the console.

Every record has `t` (Unix time, s), `node`, `peer` and `event`; the other fields depend
on the event (see docs/peers.md). Writes are line-buffered and thread-safe (the ZAP
handler thread reports refused connections). Secret keys never appear in the log.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

EVENTS_FILE = "events.jsonl"

# Events shown on the console at the default verbosity (the file has all of them).
_QUIET = {"dropped", "probe", "pong", "held"}


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple) and len(v) > 12:
        return f"[{', '.join(map(str, v[:12]))}, ... ({len(v)})]"
    return str(v)


class EventLog:
    """Append events to `folder/events.jsonl` and print them to `console`."""

    def __init__(
        self,
        folder: str | Path,
        *,
        node: Any,
        peer: int,
        console: TextIO | None = sys.stderr,
        verbose: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / EVENTS_FILE
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.node = node
        self.peer = int(peer)
        self.console = console
        self.verbose = verbose
        self.clock = clock
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"t": round(self.clock(), 6), "node": self.node, "peer": self.peer}
        record["event"] = event
        record.update(fields)
        line = json.dumps(record, default=str)
        with self._lock:
            self.counts[event] = self.counts.get(event, 0) + 1
            if not self._file.closed:
                self._file.write(line + "\n")
            if self.console is not None and (self.verbose or event not in _QUIET):
                text = " ".join(f"{k}={_fmt_value(v)}" for k, v in fields.items())
                stamp = time.strftime("%H:%M:%S", time.localtime(record["t"]))
                try:
                    print(f"{stamp} [{self.node}] {event} {text}".rstrip(), file=self.console)
                    self.console.flush()
                except (OSError, ValueError):
                    self.console = None

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The records of an events.jsonl file; a torn last line (a killed peer) is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


__all__ = ["EVENTS_FILE", "EventLog", "read_events"]
