"""`ringfl status DIR`: a peer's state from its event log (events.jsonl).

DIR is a peer's directory, or a directory of peer directories (one line per peer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError
from ringfl.peer.eventlog import EVENTS_FILE, read_events


def peer_status(folder: str | Path) -> dict[str, Any]:
    """Summary of one peer's event log: state, round, members, last accuracy, bytes."""
    path = Path(folder) / EVENTS_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {EVENTS_FILE} (not a peer directory)")
    events = read_events(path)
    out: dict[str, Any] = {
        "dir": str(folder),
        "node": None,
        "state": "unknown",
        "round": None,
        "rounds_done": 0,
        "members": None,
        "lost": [],
        "accuracy": None,
        "bytes_sent": None,
        "dropped": 0,
        "refused": 0,
        "last_event": None,
        "t": None,
    }
    gone: list[str] = []
    for e in events:
        kind = e.get("event")
        out["node"] = e.get("node", out["node"])
        out["last_event"] = kind
        out["t"] = e.get("t")
        if kind == "start":
            out["state"] = "starting"
        elif kind in ("ready", "rejoined"):
            out["state"] = "running"
            out["members"] = e.get("members")
            out["round"] = e.get("round")
        elif kind == "joining":
            out["state"] = "joining"
        elif kind == "round":
            out["state"] = "running"
            out["round"] = e.get("round")
            out["rounds_done"] += 1
            out["members"] = e.get("members", out["members"])
            if e.get("accuracy") is not None:
                out["accuracy"] = e.get("accuracy")
            out["bytes_sent"] = e.get("bytes_sent")
            for name in e.get("dropped") or []:
                if name not in gone:
                    gone.append(name)
            for name in e.get("admitted") or []:
                if name in gone:
                    gone.remove(name)
        elif kind in ("lost", "peer_gone"):
            for name in e.get("peers") or []:
                if name not in gone:
                    gone.append(name)
        elif kind == "finished":
            out["state"] = "finished"
            out["accuracy"] = e.get("accuracy", out["accuracy"])
        elif kind == "stopped":
            out["state"] = "stopped: " + str(e.get("reason", ""))
        elif kind == "dropped":
            out["dropped"] += 1
        elif kind == "refused":  # one line per key and second; plus lines rate-limited away
            out["refused"] += int("key" in e) + int(e.get("suppressed", 0))
    out["lost"] = gone
    if out["members"] is not None:
        out["alive"] = [m for m in out["members"] if m not in gone]
    return out


def peer_dirs(folder: str | Path) -> list[Path]:
    """`folder` if it is a peer directory, else its sub-directories that are."""
    folder = Path(folder)
    if (folder / EVENTS_FILE).is_file():
        return [folder]
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such directory")
    found = sorted(p for p in folder.iterdir() if (p / EVENTS_FILE).is_file())
    if not found:
        raise ConfigError(f"{folder}: no peer directories (no {EVENTS_FILE} in it or below)")
    return found


def format_status(s: dict[str, Any]) -> str:
    acc = "-" if s["accuracy"] is None else f"{100 * s['accuracy']:.2f}%"
    sent = "-" if s["bytes_sent"] is None else f"{s['bytes_sent'] / 1e6:.2f} MB"
    members = s.get("members") or []
    alive = s.get("alive", members)
    lines = [
        f"node {s['node']}: {s['state']}",
        f"  last round   {s['round']} ({s['rounds_done']} rounds in this log)",
        f"  peers alive  {len(alive)} of {len(members)} members: {', '.join(map(str, alive))}",
        f"  lost         {', '.join(map(str, s['lost'])) or '-'}",
        f"  accuracy     {acc}",
        f"  bytes sent   {sent}",
        f"  dropped      {s['dropped']} message(s), {s['refused']} refused connection(s)",
    ]
    return "\n".join(lines)


__all__ = ["format_status", "peer_dirs", "peer_status"]
