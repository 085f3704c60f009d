"""Bounded bookkeeping and logging of refused CURVE clients.

A client whose key is not in the topology is refused during the handshake
(`ringfl.peer.curve`). Clients retry quickly, and a hostile one can use a fresh key for
every connection, so neither the table of keys nor the number of log lines may grow with
the number of keys or attempts:

- per key: at most one line per `per_key_s` seconds, carrying the attempts made since
  that key's previous line;
- keys: a least-recently-refused table of at most `max_keys` entries; a key pushed out
  and seen again starts afresh (its attempts count from 1);
- globally: a token bucket of `burst` lines, refilled at `rate` lines per second. A line
  that finds the bucket empty is suppressed and counted; the next line that is logged
  carries `suppressed`, the number of lines dropped since the previous logged line.

So the memory is O(max_keys) and the log grows by at most `burst` + `rate`·t lines over
t seconds, whatever the clients do. Sans-I/O: the caller passes the time (seconds, any
monotonic clock) and writes the returned line itself. Thread-safe: the ZAP handler
thread reports refusals while the peer's main thread may `flush`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ringfl.errors import ConfigError


class RefusalLimiter:
    """Decides which refusals are logged. `max_keys` ≥ 1 keys are remembered;
    `per_key_s` ≥ 0 seconds between lines of one key; `rate` > 0 lines per second and
    `burst` ≥ 1 lines of global budget."""

    def __init__(
        self,
        *,
        max_keys: int = 1024,
        per_key_s: float = 1.0,
        rate: float = 1.0,
        burst: int = 10,
    ) -> None:
        if max_keys < 1 or burst < 1 or not rate > 0 or not per_key_s >= 0:
            raise ConfigError(
                f"refusal limits: need max_keys ≥ 1, burst ≥ 1, rate > 0, per_key_s ≥ 0; got "
                f"{max_keys=}, {burst=}, {rate=}, {per_key_s=}"
            )
        self.max_keys = int(max_keys)
        self.per_key_s = float(per_key_s)
        self.rate = float(rate)
        self.burst = int(burst)
        self._lock = threading.Lock()
        # key -> (time of its last line, attempts since then), least recently refused first
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._tokens = float(burst)
        self._refilled: float | None = None
        self._suppressed = 0  # lines dropped since the last logged line
        self.refusals = 0  # every refusal reported, over the limiter's life
        self.lines = 0  # lines returned to be logged
        self.suppressed_total = 0  # lines dropped by the global limit, over the life

    def __len__(self) -> int:
        """Keys remembered now (≤ max_keys)."""
        return len(self._keys)

    def refused(self, key: str, now: float) -> dict[str, Any] | None:
        """Record one refusal of `key` at time `now`. Returns the fields of the line to
        log — `key`, `attempts` and, when lines were dropped before it, `suppressed` — or
        None when nothing is to be logged."""
        with self._lock:
            self.refusals += 1
            last, count = self._keys.pop(key, (None, 0))
            count += 1
            line = None
            if last is None or now - last >= self.per_key_s:
                if self._take_token(now):
                    line = {"key": key, "attempts": count}
                    if self._suppressed:
                        line["suppressed"] = self._suppressed
                        self._suppressed = 0
                    self.lines += 1
                else:
                    self._suppressed += 1
                    self.suppressed_total += 1
                # the key's line is spent either way, so one key counts once a period
                last, count = now, 0
            self._keys[key] = (last, count)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
            return line

    def flush(self) -> int:
        """The number of suppressed lines not yet reported on a logged line (and forget
        it): for a last line when the peer stops."""
        with self._lock:
            n, self._suppressed = self._suppressed, 0
            return n

    def _take_token(self, now: float) -> bool:
        if self._refilled is not None and now > self._refilled:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        if self._refilled is None or now > self._refilled:
            self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


__all__ = ["RefusalLimiter"]
