"""Node-to-node messages: one ZeroMQ frame of UTF-8 JSON, strictly bounded.

| t | fields | meaning |
|---|---|---|
| `ev` | seq, ev | the sender's `seq`-th event for this receiver (in-order, resent until acked) |
| `hb` | ack, inc, cat | heartbeat: events received from you up to `ack`; my incarnation; the hash of your catalog I hold |
| `cat` | datasets | my catalog, names and schemas only |
| `refused` | task, reason | I refused your event (bad signature, expired, replayed, ...) |

`decode` accepts only these shapes: at most `MAX_MESSAGE` bytes, a JSON object of known
type, no NaN/Infinity, bounded nesting, strings and counts within limits. Anything else
raises `MessageError` (the node logs and drops it; it never stops the node). Nothing is
ever unpickled.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ringfl.errors import WireError

MAX_MESSAGE = 256 * 1024
MAX_DEPTH = 12
EVENT_KINDS = ("proposed", "vote", "ready", "started", "finished", "cancel", "timeout")
_EVENT_KEYS = {"v", "task", "origin", "kind", "time", "data", "sig"}


class MessageError(WireError):
    """A control message was rejected; the text says why."""


def _no_constant(name: str) -> Any:
    raise MessageError(f"JSON constant {name} is not allowed")


def _depth(v: Any, d: int = 0) -> int:
    if d > MAX_DEPTH:
        raise MessageError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(v, dict):
        return max([_depth(x, d + 1) for x in v.values()], default=d)
    if isinstance(v, list):
        return max([_depth(x, d + 1) for x in v], default=d)
    return d


def encode(msg: dict[str, Any]) -> bytes:
    raw = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_MESSAGE:
        raise MessageError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE}")
    return raw


def _str(v: Any, name: str, limit: int = 200) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise MessageError(f"{name}: a string of at most {limit} characters")
    return v


def _int(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 62:
        raise MessageError(f"{name}: a non-negative integer")
    return v


def check_event(ev: Any) -> dict[str, Any]:
    """The structure of one signed event (its signature is checked by the node)."""
    if not isinstance(ev, dict):
        raise MessageError("ev: an object")
    extra = set(ev) - _EVENT_KEYS
    if extra:
        raise MessageError(f"ev: unknown field(s) {sorted(extra)[:5]}")
    for k in ("v", "task", "origin", "kind", "time", "data"):
        if k not in ev:
            raise MessageError(f"ev.{k}: missing")
    if ev["v"] != 1:
        raise MessageError(f"ev.v: version {ev['v']!r} not supported")
    _str(ev["task"], "ev.task", 64)
    _str(ev["origin"], "ev.origin", 128)
    if ev["kind"] not in EVENT_KINDS:
        raise MessageError(f"ev.kind: {str(ev['kind'])[:40]!r} is not an event kind")
    t = ev["time"]
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        raise MessageError("ev.time: a finite number of seconds")
    if not isinstance(ev["data"], dict):
        raise MessageError("ev.data: an object")
    data = ev["data"]
    if ev["kind"] in ("ready", "started", "finished"):
        _int(data.get("run"), "ev.data.run")
        if ev["kind"] == "ready":
            _str(data.get("endpoint"), "ev.data.endpoint", 200)
    return ev


def decode(raw: bytes) -> dict[str, Any]:
    """Parse and check one message (see the module docstring)."""
    if len(raw) > MAX_MESSAGE:
        raise MessageError(f"{len(raw)} bytes, more than {MAX_MESSAGE}")
    try:
        msg = json.loads(bytes(raw).decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MessageError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(msg, dict):
        raise MessageError("not a JSON object")
    _depth(msg)
    t = msg.get("t")
    if t == "ev":
        _int(msg.get("seq"), "seq")
        check_event(msg.get("ev"))
    elif t == "hb":
        _int(msg.get("ack"), "ack")
        _int(msg.get("inc"), "inc")
        _str(msg.get("cat", ""), "cat", 64)
    elif t == "cat":
        if not isinstance(msg.get("datasets"), dict) or len(msg["datasets"]) > 1000:
            raise MessageError("datasets: an object of at most 1000 entries")
    elif t == "refused":
        _str(msg.get("task", ""), "task", 64)
        _str(msg.get("reason"), "reason", 1000)
    else:
        raise MessageError(f"t: unknown message type {str(t)[:40]!r}")
    return msg


__all__ = ["EVENT_KINDS", "MAX_MESSAGE", "MessageError", "check_event", "decode", "encode"]
