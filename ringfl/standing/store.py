"""A node's state in SQLite: tasks, approvals, events, results, the delivery channel's
outbox and cursors, seen proposal nonces and refusals.

One connection per node, used under the node's lock (`check_same_thread=False`); every
change that belongs together is one transaction (`with store.tx():`). WAL journal, so a
killed node loses at most the transaction in flight and never a torn one.

The schema has a version (`schema_version`); `MIGRATIONS[i]` takes a database from
version i to i + 1, inside one transaction. Opening a database newer than this code
knows is refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the core tables
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, proposer TEXT NOT NULL,
        participants TEXT NOT NULL, spec TEXT NOT NULL, created REAL NOT NULL,
        expires REAL NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
        updated REAL NOT NULL);
    CREATE TABLE events (
        id TEXT PRIMARY KEY, task TEXT NOT NULL, origin TEXT NOT NULL, kind TEXT NOT NULL,
        time REAL NOT NULL, body TEXT NOT NULL, received REAL NOT NULL);
    CREATE INDEX events_task ON events (task, time);
    CREATE TABLE approvals (
        task TEXT NOT NULL, party TEXT NOT NULL, accepted INTEGER NOT NULL,
        reason TEXT NOT NULL, fields TEXT NOT NULL, time REAL NOT NULL,
        PRIMARY KEY (task, party));
    CREATE TABLE results (
        task TEXT NOT NULL, run INTEGER NOT NULL, party TEXT NOT NULL, status TEXT NOT NULL,
        hash TEXT NOT NULL, accuracy REAL, loss REAL, rounds INTEGER, reason TEXT NOT NULL,
        time REAL NOT NULL, PRIMARY KEY (task, run, party));
    CREATE TABLE runs (
        task TEXT NOT NULL, run INTEGER NOT NULL, endpoint TEXT NOT NULL, pid INTEGER,
        dir TEXT NOT NULL, started REAL, finished REAL, status TEXT NOT NULL,
        PRIMARY KEY (task, run));
    CREATE TABLE nonces (nonce TEXT PRIMARY KEY, proposer TEXT NOT NULL, expires REAL NOT NULL);
    CREATE TABLE outbox (
        peer TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
        PRIMARY KEY (peer, seq));
    CREATE TABLE inbox (peer TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE pending (
        id TEXT PRIMARY KEY, task TEXT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
        received REAL NOT NULL);
    """,
    # 1 -> 2: refusals get their own table (they were log lines only), with the sender
    """
    CREATE TABLE refusals (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, sender TEXT NOT NULL,
        task TEXT NOT NULL, reason TEXT NOT NULL);
    CREATE INDEX results_task ON results (task, run);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: Bounds on what the network can make a node store before the task exists.
MAX_PENDING = 10_000
MAX_REFUSALS = 10_000


class Store:
    """The node's SQLite database (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()
        self._depth = 0
        self.migrate()

    def version(self) -> int:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.db.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row[0])

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Apply the missing migrations up to `target`; returns the version reached."""
        with self.tx():
            v = self.version()
            if v > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path}: database schema version {v} is newer than this ringfl "
                    f"({SCHEMA_VERSION}); upgrade ringfl"
                )
            for i in range(v, target):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
            if v == 0:
                self.db.execute("INSERT INTO schema_version VALUES (?)", (max(v, target),))
            else:
                self.db.execute("UPDATE schema_version SET version = ?", (max(v, target),))
            return max(v, target)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth == 0:
                self.db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self.db
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self.db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self.db.execute("COMMIT")

    def q(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self._lock:
            return self.db.execute(sql, args).fetchone()

    def x(self, sql: str, *args: Any) -> int:
        """Execute a change (inside `tx()` when it must be atomic with others)."""
        with self._lock:
            return self.db.execute(sql, args).rowcount

    # -- conveniences ---------------------------------------------------------------

    def events(self, task: str) -> list[dict[str, Any]]:
        """A task's events in history order: (origin time, origin, id)."""
        rows = self.q("SELECT body FROM events WHERE task = ? ORDER BY time, origin, id", task)
        return [json.loads(r["body"]) for r in rows]

    def refuse(self, now: float, sender: str, task: str, reason: str) -> None:
        with self.tx():
            self.x(
                "INSERT INTO refusals (time, sender, task, reason) VALUES (?, ?, ?, ?)",
                now, sender, task, reason[:1000],
            )  # fmt: skip
            self.x(
                "DELETE FROM refusals WHERE id <= (SELECT MAX(id) FROM refusals) - ?",
                MAX_REFUSALS,
            )

    def close(self) -> None:
        with self._lock:
            self.db.close()


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Store"]
