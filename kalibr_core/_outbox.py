"""The remote client's outbox: what must reach the intelligence service, durable on local disk.

:class:`~kalibr_core.RemoteIntelligence` writes every outcome (and every correction, and every
path registration the service could not take) here *before* sending it, and deletes it only
once the service has acknowledged it. One SQLite file per (service URL, tenant), under
``$KALIBR_OUTBOX`` or the user data directory (:func:`default_outbox_path`):

* ``entries``: the queue, in order (``id`` never reused). ``key`` is unique: the outcome's
  ``outcome_id`` for a report, so queueing the same outcome twice keeps one entry.
* ``dead_letters``: entries the service rejected as invalid (HTTP 4xx other than
  401/403/408/429), with its status and message. Nothing is deleted without a trace;
  :meth:`Outbox.requeue_dead_letters` puts them back in the queue.
* ``snapshots``: the last routing statistics seen per (goal, pipeline), so that a process
  started while the service is down still routes by what was learned.
* ``lease``: which process sends. Several processes may share one outbox (workers of one app);
  one at a time holds the lease and sends the queue in order. When it exits it gives the lease
  up; when it dies the next process of the same host takes over at once (elsewhere, once the
  lease expires).

Durability: WAL with ``synchronous=NORMAL`` (the default) survives a crash of the process, as
the embedded store does; ``Outbox(path, synchronous="FULL")`` fsyncs every append and also
survives a power loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kalibr_core._errors import ConfigurationError

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT)""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL,
        body TEXT NOT NULL, created_at REAL NOT NULL, rejected_at REAL NOT NULL,
        status INTEGER NOT NULL, error TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS snapshots (
        goal TEXT NOT NULL, pipeline_id TEXT NOT NULL, taken_at REAL NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (goal, pipeline_id))""",
    """CREATE TABLE IF NOT EXISTS lease (
        name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)""",
)

EntryKind = Literal["report", "update", "register"]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One queued request.

    Attributes:
        id: Position in the queue (increasing, never reused).
        kind: ``report`` (an outcome), ``update`` (a correction) or ``register`` (a path).
        key: Unique key; a report's ``outcome_id`` (the service's idempotency key).
        body: The JSON body sent to the service.
        created_at: When it was queued (Unix time).
        attempts: Failed delivery attempts so far.
    """

    id: int
    kind: EntryKind
    key: str
    body: dict[str, Any]
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry the service rejected as invalid, kept with the service's answer."""

    id: int
    kind: EntryKind
    key: str
    body: dict[str, Any]
    created_at: float
    rejected_at: float
    status: int
    error: str


def user_data_dir() -> Path:
    """kalibr-core's per-user data directory (XDG on Linux, the platforms' usual places)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "kalibr-core"


def default_outbox_path(url: str, tenant: str) -> Path:
    """The outbox file of a (service URL, tenant): ``$KALIBR_OUTBOX/<tenant>-<hash>.sqlite3``.

    Without ``$KALIBR_OUTBOX`` the directory is ``<user data dir>/outbox``.
    """
    directory = Path(os.environ.get("KALIBR_OUTBOX") or user_data_dir() / "outbox")
    digest = hashlib.sha256(f"{url.rstrip('/')}\n{tenant}".encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tenant)[:40]
    return directory / f"{safe}-{digest}.sqlite3"


def lease_owner() -> str:
    """A lease owner name: ``host:pid:random`` (so a dead holder on this host is recognised)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def _alive(owner: str) -> bool:
    """False only when the owner is a process of this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or os.name != "posix":
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


class Outbox:
    """A durable FIFO of requests for the intelligence service (see the module docstring).

    Thread-safe; several processes may open the same file.

    Args:
        path: The SQLite file (created with its directory, mode 0700, if missing).
        synchronous: ``"NORMAL"`` survives a process crash; ``"FULL"`` fsyncs every append
            and survives a power loss too.

    Example:
        >>> import tempfile, os
        >>> box = Outbox(os.path.join(tempfile.mkdtemp(), "outbox.sqlite3"))
        >>> box.append("report", "o1", {"trace_id": "t1", "goal": "g", "success": True})
        True
        >>> [entry.key for entry in box.head()]
        ['o1']
        >>> box.close()
    """

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the outbox {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            for statement in _SCHEMA:
                self._db.execute(statement)
        self._closed = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so concurrent writers queue up)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the queue -----------------------------------------------------------------------------
    def append(self, kind: EntryKind, key: str, body: dict[str, Any]) -> bool:
        """Queue a request durably; False if an entry with this key is already queued."""
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO entries (kind, key, body, created_at) VALUES (?, ?, ?, ?)",
                (kind, key, text, time.time()),
            )
            return cursor.rowcount == 1

    def head(self, limit: int = 64) -> list[OutboxEntry]:
        """The oldest entries, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, key, body, created_at, attempts FROM entries ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxEntry(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def remove(self, entry_id: int) -> None:
        """Forget an entry the service acknowledged."""
        with self._write() as db:
            db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))

    def note_failure(self, entry_id: int, error: str) -> None:
        """Count a failed delivery attempt (the entry stays queued)."""
        with self._write() as db:
            db.execute(
                "UPDATE entries SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:2000], entry_id),
            )

    def reject(self, entry: OutboxEntry, status: int, error: str) -> None:
        """Move an entry the service rejected as invalid to the dead letters (atomically)."""
        body = json.dumps(entry.body, sort_keys=True, separators=(",", ":"))
        with self._write() as db:
            db.execute(
                "INSERT INTO dead_letters (kind, key, body, created_at, rejected_at, status, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (entry.kind, entry.key, body, entry.created_at, time.time(), status, error[:4000]),
            )
            db.execute("DELETE FROM entries WHERE id = ?", (entry.id,))

    def contains(self, key: str) -> bool:
        """Whether an entry with this key is still queued."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone()
        return row is not None

    def count(self, kind: EntryKind | None = None) -> int:
        """How many entries are queued (of one kind if given)."""
        with self._lock:
            if kind is None:
                row = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM entries WHERE kind = ?", (kind,)
                ).fetchone()
        return int(row[0])

    # -- dead letters --------------------------------------------------------------------------
    def dead_letters(self) -> list[DeadLetter]:
        """Every rejected entry, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, key, body, created_at, rejected_at, status, error"
                " FROM dead_letters ORDER BY id"
            ).fetchall()
        return [
            DeadLetter(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in rows
        ]

    def requeue_dead_letters(self) -> int:
        """Put every dead letter back at the end of the queue; returns how many."""
        with self._write() as db:
            rows = db.execute(
                "SELECT id, kind, key, body, created_at FROM dead_letters ORDER BY id"
            ).fetchall()
            for _, kind, key, body, created_at in rows:
                db.execute(
                    "INSERT OR IGNORE INTO entries (kind, key, body, created_at) VALUES (?,?,?,?)",
                    (kind, key, body, created_at),
                )
            db.execute("DELETE FROM dead_letters")
        return len(rows)

    # -- the sender lease ----------------------------------------------------------------------
    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        """Become (or stay) the one sender of this outbox for ``ttl_s`` seconds."""
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT owner, expires_at FROM lease WHERE name = 'sender'").fetchone()
            if row is not None and row[0] != owner and row[1] > now and _alive(row[0]):
                return False
            db.execute(
                "INSERT INTO lease (name, owner, expires_at) VALUES ('sender', ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at",
                (owner, now + ttl_s),
            )
        return True

    def release_lease(self, owner: str) -> None:
        """Give the lease up (another process may send at once)."""
        with self._write() as db:
            db.execute("DELETE FROM lease WHERE name = 'sender' AND owner = ?", (owner,))

    # -- snapshots -----------------------------------------------------------------------------
    def save_snapshot(
        self, goal: str, pipeline_id: str, taken_at: float, body: dict[str, Any]
    ) -> None:
        """Keep the latest routing statistics of a scope."""
        with self._write() as db:
            db.execute(
                "INSERT INTO snapshots (goal, pipeline_id, taken_at, body) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (goal, pipeline_id) DO UPDATE SET taken_at = excluded.taken_at,"
                " body = excluded.body WHERE excluded.taken_at >= snapshots.taken_at",
                (goal, pipeline_id, taken_at, json.dumps(body, separators=(",", ":"))),
            )

    def load_snapshot(self, goal: str, pipeline_id: str) -> tuple[float, dict[str, Any]] | None:
        """The latest routing statistics of a scope, with when they were taken."""
        with self._lock:
            row = self._db.execute(
                "SELECT taken_at, body FROM snapshots WHERE goal = ? AND pipeline_id = ?",
                (goal, pipeline_id),
            ).fetchone()
        return None if row is None else (float(row[0]), json.loads(row[1]))

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
