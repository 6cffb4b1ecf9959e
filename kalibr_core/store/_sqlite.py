"""SqliteStore: the embedded default store (one file, WAL mode, several threads and processes).

Why plain ``sqlite3`` rather than SQLAlchemy: the schema is five tables with hand-written,
portable SQL (``INSERT ... ON CONFLICT DO UPDATE`` also runs on PostgreSQL), the hot path is two
statements per outcome, and an ORM would cost more per outcome than the statements themselves.

Durability and concurrency:

* WAL journal, ``synchronous=NORMAL`` by default: an outcome is durable against a crash of the
  process once ``record_outcomes`` returns (``synchronous="FULL"`` adds an fsync per commit for
  power loss). Writers serialise on SQLite's write lock (``BEGIN IMMEDIATE``, with a busy
  timeout), readers never block.
* Every outcome gets a global sequence number (``seq``). Processes fold the outcome log in
  ``seq`` order, so every process reaches the same state; ``path_stats`` keeps all-time
  sufficient statistics as commutative increments, so start-up is O(paths), not O(outcomes).
* Versioned schema: ``schema_version`` records the applied migrations; a database written by a
  newer kalibr-core is refused rather than corrupted.

``":memory:"`` gives the in-memory store used by tests (one connection, same code path).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from kalibr_core._domain import PathSpec
from kalibr_core._errors import StoreError
from kalibr_core.store._group import GroupCommit, _Job
from kalibr_core.store._records import (
    ApiKeyRecord,
    CorrectionRecord,
    DecisionRecord,
    OutcomeRecord,
    PathRecord,
    PathTotals,
)

logger = logging.getLogger("kalibr_core.store")

SCHEMA_VERSION: Final = 1

# The background checkpoint (see SqliteStore._checkpoint_loop): how often it runs under load,
# the WAL size (in 4 KiB frames, about 16 MiB) at which it makes the WAL start afresh, how long
# that waits for another process's write or read, how long it leaves the WAL alone after such
# a wait failed, and the size the WAL file is cut back to.
_CHECKPOINT_EVERY_COMMITS: Final = 512
_WAL_RESTART_FRAMES: Final = 4096
_RESTART_BUSY_MS: Final = 200
_RESTART_BACKOFF_S: Final = 5.0
_WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS paths (
            tenant TEXT NOT NULL, path_id TEXT NOT NULL, goal TEXT NOT NULL,
            model_id TEXT NOT NULL, tool_id TEXT, params TEXT NOT NULL,
            risk_level TEXT NOT NULL, enabled INTEGER NOT NULL, extra TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (tenant, path_id))""",
        "CREATE INDEX IF NOT EXISTS paths_goal ON paths (tenant, goal)",
        """CREATE TABLE IF NOT EXISTS goal_configs (
            tenant TEXT NOT NULL, goal TEXT NOT NULL, config TEXT NOT NULL,
            updated_at REAL NOT NULL, PRIMARY KEY (tenant, goal))""",
        """CREATE TABLE IF NOT EXISTS outcomes (
            seq INTEGER PRIMARY KEY,
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL,
            trace_id TEXT NOT NULL, path_id TEXT, model_id TEXT, tool_id TEXT, params TEXT,
            success INTEGER NOT NULL, score REAL, value REAL NOT NULL,
            failure_category TEXT, failure_reason TEXT, metadata TEXT,
            cost_usd REAL, latency_ms REAL, input_tokens INTEGER, output_tokens INTEGER,
            created_at REAL NOT NULL, updated_at REAL, outcome_id TEXT)""",
        "CREATE INDEX IF NOT EXISTS outcomes_trace ON outcomes (tenant, goal, trace_id)",
        "CREATE UNIQUE INDEX IF NOT EXISTS outcomes_idempotency ON outcomes (tenant, outcome_id)"
        " WHERE outcome_id IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS outcomes_scope ON outcomes (tenant, goal, pipeline_id, seq)",
        "CREATE INDEX IF NOT EXISTS outcomes_time ON outcomes (tenant, created_at)",
        """CREATE TABLE IF NOT EXISTS corrections (
            seq INTEGER PRIMARY KEY, outcome_seq INTEGER NOT NULL,
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL, path_id TEXT,
            old_value REAL NOT NULL, new_value REAL NOT NULL, created_at REAL NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS corrections_scope ON corrections (tenant, goal, pipeline_id,"
        " seq)",
        """CREATE TABLE IF NOT EXISTS path_stats (
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL,
            path_id TEXT NOT NULL,
            successes REAL NOT NULL DEFAULT 0, failures REAL NOT NULL DEFAULT 0,
            count INTEGER NOT NULL DEFAULT 0,
            cost_sum REAL NOT NULL DEFAULT 0, cost_n INTEGER NOT NULL DEFAULT 0,
            latency_sum REAL NOT NULL DEFAULT 0, latency_n INTEGER NOT NULL DEFAULT 0,
            eff_successes REAL NOT NULL DEFAULT 0, eff_failures REAL NOT NULL DEFAULT 0,
            eff_count INTEGER NOT NULL DEFAULT 0,
            epoch_seq INTEGER NOT NULL DEFAULT -1, last_outcome_at REAL,
            PRIMARY KEY (tenant, goal, pipeline_id, path_id))""",
        """CREATE TABLE IF NOT EXISTS decisions (
            tenant TEXT NOT NULL, trace_id TEXT NOT NULL, goal TEXT NOT NULL,
            pipeline_id TEXT NOT NULL, path_id TEXT NOT NULL, model_id TEXT NOT NULL,
            reason TEXT NOT NULL, exploration INTEGER NOT NULL, propensity REAL,
            created_at REAL NOT NULL, PRIMARY KEY (tenant, trace_id))""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
            name TEXT, created_at REAL NOT NULL, revoked_at REAL)""",
    ),
}

_OUTCOME_COLUMNS: Final = (
    "seq, tenant, goal, pipeline_id, trace_id, path_id, model_id, tool_id, params, success,"
    " score, value, failure_category, failure_reason, metadata, cost_usd, latency_ms,"
    " input_tokens, output_tokens, created_at, updated_at, outcome_id"
)

_INSERT_OUTCOME: Final = (
    "INSERT INTO outcomes (tenant, goal, pipeline_id, trace_id, path_id, model_id, tool_id,"
    " params, success, score, value, failure_category, failure_reason, metadata, cost_usd,"
    " latency_ms, input_tokens, output_tokens, created_at, updated_at, outcome_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, outcome_id) WHERE outcome_id IS NOT NULL DO NOTHING"
)

_UPSERT_STATS: Final = (
    "INSERT INTO path_stats (tenant, goal, pipeline_id, path_id, successes, failures, count,"
    " cost_sum, cost_n, latency_sum, latency_n, last_outcome_at, eff_successes, eff_failures,"
    " eff_count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, goal, pipeline_id, path_id) DO UPDATE SET"
    " successes = path_stats.successes + excluded.successes,"
    " failures = path_stats.failures + excluded.failures,"
    " count = path_stats.count + excluded.count,"
    " eff_successes = path_stats.eff_successes + excluded.eff_successes,"
    " eff_failures = path_stats.eff_failures + excluded.eff_failures,"
    " eff_count = path_stats.eff_count + excluded.eff_count,"
    " cost_sum = path_stats.cost_sum + excluded.cost_sum,"
    " cost_n = path_stats.cost_n + excluded.cost_n,"
    " latency_sum = path_stats.latency_sum + excluded.latency_sum,"
    " latency_n = path_stats.latency_n + excluded.latency_n,"
    " last_outcome_at = MAX(COALESCE(path_stats.last_outcome_at, 0), excluded.last_outcome_at)"
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _outcome_from_row(row: Sequence[Any]) -> OutcomeRecord:
    return OutcomeRecord(
        seq=row[0],
        tenant=row[1],
        goal=row[2],
        pipeline_id=row[3],
        trace_id=row[4],
        path_id=row[5],
        model_id=row[6],
        tool_id=row[7],
        params=_loads(row[8]),
        success=bool(row[9]),
        score=row[10],
        value=row[11],
        failure_category=row[12],
        failure_reason=row[13],
        metadata=_loads(row[14]),
        cost_usd=row[15],
        latency_ms=row[16],
        input_tokens=row[17],
        output_tokens=row[18],
        created_at=row[19],
        updated_at=row[20],
        outcome_id=row[21],
    )


def _path_from_row(row: Sequence[Any]) -> PathRecord:
    return PathRecord(
        tenant=row[0],
        path_id=row[1],
        goal=row[2],
        model_id=row[3],
        tool_id=row[4],
        params=json.loads(row[5]),
        risk_level=row[6],
        enabled=bool(row[7]),
        extra=json.loads(row[8]),
        created_at=row[9],
    )


def default_db_path() -> Path:
    """``$KALIBR_DB``, else ``$XDG_DATA_HOME/kalibr-core/kalibr.db`` (``~/.local/share``)."""
    configured = os.environ.get("KALIBR_DB")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "kalibr-core" / "kalibr.db"


class SqliteStore(GroupCommit):
    """The embedded store. Thread-safe; several processes may share one file.

    Args:
        path: Database file, or ``":memory:"`` for an in-memory store. Parent directories
            are created.
        synchronous: ``"NORMAL"`` (default: durable against process crashes) or ``"FULL"``
            (also against power loss, slower).
        busy_timeout_s: How long a writer waits for another process's write lock.

    Example:
        >>> store = SqliteStore(":memory:")
        >>> store.health()["status"]
        'healthy'
    """

    # Reports come from threads of one process: a commit's leader waits briefly for as many
    # callers as shared its last commit (the service's reporter is one caller on PostgreSQL).
    _gathers = True

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        if synchronous.upper() not in {"NORMAL", "FULL"}:
            raise StoreError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                # Checkpoints (and their fsyncs) run in a background thread, off the path of
                # report_outcome; see _checkpoint_loop.
                self._conn.execute("PRAGMA wal_autocheckpoint = 0")
                # The WAL file is cut back to this size when it starts afresh.
                self._conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path}: {exc}") from exc
        self._stop = threading.Event()
        self._checkpoint_due = threading.Event()
        self._commits = 0
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:":
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                args=(busy_timeout_s,),
                name="kalibr-checkpoint",
                daemon=True,
            )
            self._checkpointer.start()
        self._closed = False
        self._init_group_commit()

    # -- plumbing ------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite write failed ({self.path}): {exc}") from exc
            self._commits += 1
            if self._commits % _CHECKPOINT_EVERY_COMMITS == 0:
                self._checkpoint_due.set()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            try:
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed ({self.path}): {exc}") from exc

    def _check_open(self) -> None:
        if getattr(self, "_closed", False):
            raise StoreError(f"the store {self.path} is closed")

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self.path} has schema v{current}, newer than this "
                    f"kalibr-core (v{SCHEMA_VERSION}); upgrade kalibr-core"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _checkpoint_loop(self, busy_timeout_s: float, interval_s: float = 1.0) -> None:
        """Copy the WAL into the database in the background, and keep the WAL small.

        Every second, or every ``_CHECKPOINT_EVERY_COMMITS`` commits of this process, a
        PASSIVE checkpoint copies the WAL without blocking anyone. A WAL starts afresh only at
        a write that finds it wholly copied, which a steady stream of commits never lets a
        concurrent checkpoint achieve: the WAL then grows without bound (about 24 KB per
        one-outcome commit), and every commit and read slows down with it (the WAL index is
        searched frame table by frame table). So once it holds ``_WAL_RESTART_FRAMES`` frames,
        the rest is copied with this process's writers held back (RESTART: other processes'
        writers wait at most this connection's short busy timeout), and the next commit starts
        the WAL from its beginning.
        """
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {_RESTART_BUSY_MS}")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        except sqlite3.Error:
            logger.exception(
                "the checkpoint thread cannot open %s; SQLite will grow the WAL", self.path
            )
            return
        restart_after = 0.0
        try:
            while not self._stop.is_set():
                self._checkpoint_due.wait(interval_s)
                self._checkpoint_due.clear()
                if self._stop.is_set():
                    break
                try:
                    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                    if frames >= _WAL_RESTART_FRAMES and time.monotonic() >= restart_after:
                        with self._lock:
                            busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                        if busy:  # another process reads an old snapshot: do not hold
                            # this one's writers back again and again meanwhile
                            restart_after = time.monotonic() + _RESTART_BACKOFF_S
                except sqlite3.Error as exc:  # busy or locked: the next round retries
                    logger.debug("checkpoint of %s skipped: %s", self.path, exc)
        finally:
            conn.close()

    def close(self) -> None:
        """Checkpoint and close the connection (idempotent)."""
        # The checkpoint thread is stopped before taking the lock: it may be waiting for the
        # lock to hold writers back, and would only get it after the join gave up.
        self._stop.set()
        self._checkpoint_due.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._checkpointer is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    logger.debug("final checkpoint of %s skipped: %s", self.path, exc)
            self._conn.close()

    def health(self) -> dict[str, Any]:
        """The store's state, for the health endpoint."""
        try:
            with self._read() as conn:
                conn.execute("SELECT 1").fetchone()
                version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        except StoreError as exc:
            return {"status": "unhealthy", "backend": "sqlite", "error": str(exc)}
        return {
            "status": "healthy",
            "backend": "sqlite",
            "path": self.path,
            "schema_version": version,
        }

    # -- paths and configs ---------------------------------------------------------------------
    def register_path(self, tenant: str, spec: PathSpec) -> tuple[PathRecord, bool]:
        """Insert the path if new (idempotent). Returns (record, created).

        Re-registering keeps the enabled flag: a path disabled by an operator stays disabled
        when clients re-register on start-up; use ``set_path_enabled`` to re-enable it.
        """
        now = time.time()
        path_id = spec.path_id
        with self._write() as conn:
            row = conn.execute(
                "SELECT tenant, path_id, goal, model_id, tool_id, params, risk_level, enabled,"
                " extra, created_at FROM paths WHERE tenant = ? AND path_id = ?",
                (tenant, path_id),
            ).fetchone()
            extra = _dumps(_jsonable_extra(spec.extra)) or "{}"
            if row is not None:
                conn.execute(
                    "UPDATE paths SET risk_level = ?, extra = ?, updated_at = ?"
                    " WHERE tenant = ? AND path_id = ?",
                    (spec.risk_level, extra, now, tenant, path_id),
                )
                record = _path_from_row(row)
                record.risk_level = spec.risk_level
                record.extra = json.loads(extra)
                return record, False
            conn.execute(
                "INSERT INTO paths (tenant, path_id, goal, model_id, tool_id, params, risk_level,"
                " enabled, extra, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                (
                    tenant,
                    path_id,
                    spec.goal,
                    spec.model_id,
                    spec.tool_id,
                    _dumps(dict(spec.params)),
                    spec.risk_level,
                    extra,
                    now,
                    now,
                ),
            )
        return (
            PathRecord(
                tenant,
                spec.goal,
                path_id,
                spec.model_id,
                spec.tool_id,
                dict(spec.params),
                spec.risk_level,
                True,
                json.loads(extra),
                now,
            ),
            True,
        )

    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> PathRecord | None:
        """Enable or soft-disable a path; None if the tenant has no such path."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE paths SET enabled = ?, updated_at = ? WHERE tenant = ? AND path_id = ?",
                (int(enabled), time.time(), tenant, path_id),
            )
            if cursor.rowcount == 0:
                return None
        return self.get_path(tenant, path_id)

    def get_path(self, tenant: str, path_id: str) -> PathRecord | None:
        """One path of the tenant, or None."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT tenant, path_id, goal, model_id, tool_id, params, risk_level, enabled,"
                " extra, created_at FROM paths WHERE tenant = ? AND path_id = ?",
                (tenant, path_id),
            ).fetchone()
        return _path_from_row(row) if row else None

    def list_paths(
        self, tenant: str, goal: str | None = None, *, include_disabled: bool = False
    ) -> list[PathRecord]:
        """The tenant's paths (of one goal if given), in registration order."""
        query = (
            "SELECT tenant, path_id, goal, model_id, tool_id, params, risk_level, enabled, extra,"
            " created_at FROM paths WHERE tenant = ?"
        )
        args: list[Any] = [tenant]
        if goal is not None:
            query += " AND goal = ?"
            args.append(goal)
        if not include_disabled:
            query += " AND enabled = 1"
        query += " ORDER BY created_at, rowid"
        with self._read() as conn:
            rows = conn.execute(query, args).fetchall()
        return [_path_from_row(row) for row in rows]

    def list_goals(self, tenant: str) -> list[str]:
        """Goals with registered paths or outcomes."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT goal FROM paths WHERE tenant = ? UNION"
                " SELECT DISTINCT goal FROM outcomes WHERE tenant = ? ORDER BY 1",
                (tenant, tenant),
            ).fetchall()
        return [row[0] for row in rows]

    def get_config(self, tenant: str, goal: str) -> dict[str, Any] | None:
        """The goal's stored exploration config, or None."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT config FROM goal_configs WHERE tenant = ? AND goal = ?", (tenant, goal)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def set_config(self, tenant: str, goal: str, config: dict[str, Any]) -> None:
        """Store the goal's exploration config."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO goal_configs (tenant, goal, config, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant, goal) DO UPDATE SET config = excluded.config,"
                " updated_at = excluded.updated_at",
                (tenant, goal, _dumps(config), time.time()),
            )

    # -- decisions -----------------------------------------------------------------------------
    def record_decisions(self, decisions: Iterable[DecisionRecord]) -> None:
        """Persist routing decisions (idempotent per trace id)."""
        rows = [
            (
                d.tenant,
                d.trace_id,
                d.goal,
                d.pipeline_id,
                d.path_id,
                d.model_id,
                d.reason,
                int(d.exploration),
                d.propensity,
                d.created_at,
            )
            for d in decisions
        ]
        if not rows:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO decisions (tenant, trace_id, goal, pipeline_id, path_id,"
                " model_id, reason, exploration, propensity, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        """The decision that issued this trace id, or None."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT tenant, trace_id, goal, pipeline_id, path_id, model_id, reason,"
                " exploration, propensity, created_at FROM decisions"
                " WHERE tenant = ? AND trace_id = ?",
                (tenant, trace_id),
            ).fetchone()
        if row is None:
            return None
        return DecisionRecord(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8], row[9]
        )

    # -- outcomes ------------------------------------------------------------------------------
    def record_outcomes(self, outcomes: Sequence[OutcomeRecord]) -> list[int]:
        """Persist outcomes; assigns and returns their ``seq``.

        Durable (per the store's ``synchronous`` setting) when this returns. Concurrent callers
        share transactions (group commit): the first caller writes everything queued while it
        held the write lock and wakes the others, so threads reporting at once pay for one
        commit instead of one each. When the last commit was shared by several callers, the
        next one waits up to ``_GATHER_S`` for as many to queue.
        """
        return self._commit(outcomes)

    def _write_outcomes(self, jobs: Sequence[_Job]) -> None:
        """One transaction for a batch: rows one by one, statistics once per path."""
        last_seq: dict[tuple[str, str, str], int] = {}
        stats: dict[tuple[str, str, str, str], list[float]] = {}
        with self._write() as conn:
            for o in (o for job in jobs for o in job.outcomes):
                scope = (o.tenant, o.goal, o.pipeline_id)
                if scope not in last_seq:
                    last_seq[scope] = conn.execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE tenant = ? AND goal = ?"
                        " AND pipeline_id = ?",
                        scope,
                    ).fetchone()[0]
                cursor = conn.execute(
                    _INSERT_OUTCOME,
                    (
                        o.tenant,
                        o.goal,
                        o.pipeline_id,
                        o.trace_id,
                        o.path_id,
                        o.model_id,
                        o.tool_id,
                        _dumps(o.params),
                        int(o.success),
                        o.score,
                        o.value,
                        o.failure_category,
                        o.failure_reason,
                        _dumps(o.metadata),
                        o.cost_usd,
                        o.latency_ms,
                        o.input_tokens,
                        o.output_tokens,
                        o.created_at,
                        o.updated_at,
                        o.outcome_id,
                    ),
                )
                if cursor.rowcount == 0:  # a replay of an outcome already stored: once only
                    o.seq = conn.execute(
                        "SELECT seq FROM outcomes WHERE tenant = ? AND outcome_id = ?",
                        (o.tenant, o.outcome_id),
                    ).fetchone()[0]
                    o.duplicate = True
                    continue
                seq = cursor.lastrowid
                assert seq is not None
                o.seq, o.prev_seq = seq, last_seq[scope]
                last_seq[scope] = seq  # rowids of one write transaction are consecutive
                if o.path_id is not None:
                    acc = stats.setdefault((*scope, o.path_id), [0.0] * 7)
                    acc[0] += o.value
                    acc[1] += 1
                    if o.cost_usd is not None:
                        acc[2] += o.cost_usd
                        acc[3] += 1
                    if o.latency_ms is not None:
                        acc[4] += o.latency_ms
                        acc[5] += 1
                    acc[6] = max(acc[6], o.created_at)
            for (tenant, goal, pipeline_id, path_id), acc in stats.items():
                value, count = acc[0], int(acc[1])
                conn.execute(
                    _UPSERT_STATS,
                    (
                        tenant,
                        goal,
                        pipeline_id,
                        path_id,
                        value,
                        count - value,
                        count,
                        acc[2],
                        int(acc[3]),
                        acc[4],
                        int(acc[5]),
                        acc[6],
                        value,
                        count - value,
                        count,
                    ),
                )

    def update_latest_outcome(
        self,
        tenant: str,
        goal: str,
        trace_id: str,
        apply: Callable[[OutcomeRecord], OutcomeRecord | None],
    ) -> tuple[OutcomeRecord, OutcomeRecord | None, CorrectionRecord | None] | None:
        """Atomically rewrite the latest outcome of (trace_id, goal).

        ``apply`` receives the current record and returns the new one (or None: no change).
        Returns (before, after, correction) or None when no outcome exists. A changed learned
        value is logged as a correction and applied to ``path_stats`` in the same transaction.
        """
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE tenant = ? AND goal = ?"
                " AND trace_id = ? ORDER BY seq DESC LIMIT 1",
                (tenant, goal, trace_id),
            ).fetchone()
            if row is None:
                return None
            before = _outcome_from_row(row)
            after = apply(_outcome_from_row(row))
            if after is None:
                return before, None, None
            conn.execute(
                "UPDATE outcomes SET success = ?, score = ?, value = ?, failure_category = ?,"
                " failure_reason = ?, metadata = ?, updated_at = ? WHERE seq = ?",
                (
                    int(after.success),
                    after.score,
                    after.value,
                    after.failure_category,
                    after.failure_reason,
                    _dumps(after.metadata),
                    after.updated_at,
                    before.seq,
                ),
            )
            correction: CorrectionRecord | None = None
            delta = after.value - before.value
            if delta != 0.0 and before.path_id is not None:
                now = time.time()
                cursor = conn.execute(
                    "INSERT INTO corrections (outcome_seq, tenant, goal, pipeline_id, path_id,"
                    " old_value, new_value, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        before.seq,
                        tenant,
                        goal,
                        before.pipeline_id,
                        before.path_id,
                        before.value,
                        after.value,
                        now,
                    ),
                )
                assert cursor.lastrowid is not None
                correction = CorrectionRecord(
                    cursor.lastrowid,
                    before.seq,
                    tenant,
                    goal,
                    before.pipeline_id,
                    before.path_id,
                    before.value,
                    after.value,
                )
                conn.execute(
                    "UPDATE path_stats SET successes = successes + ?, failures = failures - ?,"
                    " eff_successes = eff_successes + CASE WHEN ? >= epoch_seq THEN ? ELSE 0 END,"
                    " eff_failures = eff_failures - CASE WHEN ? >= epoch_seq THEN ? ELSE 0 END"
                    " WHERE tenant = ? AND goal = ? AND pipeline_id = ? AND path_id = ?",
                    (
                        delta,
                        delta,
                        before.seq,
                        delta,
                        before.seq,
                        delta,
                        tenant,
                        goal,
                        before.pipeline_id,
                        before.path_id,
                    ),
                )
        return before, after, correction

    def outcomes_since(
        self, tenant: str, goal: str, pipeline_id: str, seq: int, limit: int = 10_000
    ) -> list[OutcomeRecord]:
        """Outcomes of one scope with ``seq`` greater than the given one, in order."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE tenant = ? AND goal = ?"
                " AND pipeline_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (tenant, goal, pipeline_id, seq, limit),
            ).fetchall()
        return [_outcome_from_row(row) for row in rows]

    def corrections_since(
        self, tenant: str, goal: str, pipeline_id: str, seq: int
    ) -> list[CorrectionRecord]:
        """Corrections of one scope with ``seq`` greater than the given one, in order."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT seq, outcome_seq, tenant, goal, pipeline_id, path_id, old_value,"
                " new_value FROM corrections WHERE tenant = ? AND goal = ? AND pipeline_id = ?"
                " AND seq > ? ORDER BY seq",
                (tenant, goal, pipeline_id, seq),
            ).fetchall()
        return [CorrectionRecord(*row) for row in rows]

    def set_epoch(
        self, tenant: str, goal: str, pipeline_id: str, path_id: str, epoch_seq: int
    ) -> None:
        """Start a path's new epoch (after a detected change) at ``epoch_seq``.

        The epoch's statistics are recomputed from the outcomes since ``epoch_seq`` in the same
        transaction, so increments by other processes are neither lost nor counted twice; every
        process folding the log detects the same change, so the update is idempotent.
        """
        with self._write() as conn:
            conn.execute(
                "UPDATE path_stats SET epoch_seq = ?,"
                " eff_successes = (SELECT COALESCE(SUM(value), 0) FROM outcomes o"
                "  WHERE o.tenant = path_stats.tenant AND o.goal = path_stats.goal"
                "  AND o.pipeline_id = path_stats.pipeline_id AND o.seq >= ?"
                "  AND o.path_id = path_stats.path_id),"
                " eff_failures = (SELECT COALESCE(SUM(1 - value), 0) FROM outcomes o"
                "  WHERE o.tenant = path_stats.tenant AND o.goal = path_stats.goal"
                "  AND o.pipeline_id = path_stats.pipeline_id AND o.seq >= ?"
                "  AND o.path_id = path_stats.path_id),"
                " eff_count = (SELECT COUNT(*) FROM outcomes o"
                "  WHERE o.tenant = path_stats.tenant AND o.goal = path_stats.goal"
                "  AND o.pipeline_id = path_stats.pipeline_id AND o.seq >= ?"
                "  AND o.path_id = path_stats.path_id)"
                " WHERE tenant = ? AND goal = ? AND pipeline_id = ? AND path_id = ?"
                " AND epoch_seq < ?",
                (
                    epoch_seq,
                    epoch_seq,
                    epoch_seq,
                    epoch_seq,
                    tenant,
                    goal,
                    pipeline_id,
                    path_id,
                    epoch_seq,
                ),
            )

    def load_scope(
        self, tenant: str, goal: str, pipeline_id: str, history: int
    ) -> tuple[list[PathTotals], int, int]:
        """Statistics of every path of a scope, and the outcome and correction cursors.

        Returns (totals per path, last outcome seq, last correction seq), read in one
        snapshot so that tailing from the cursors neither misses nor repeats an outcome.
        """
        result: list[PathTotals] = []
        with self._read() as conn:
            last_seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE tenant = ? AND goal = ?"
                " AND pipeline_id = ?",
                (tenant, goal, pipeline_id),
            ).fetchone()[0]
            last_corr = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM corrections WHERE tenant = ? AND goal = ?"
                " AND pipeline_id = ?",
                (tenant, goal, pipeline_id),
            ).fetchone()[0]
            stats = conn.execute(
                "SELECT path_id, successes, failures, count, cost_sum, cost_n, latency_sum,"
                " latency_n, epoch_seq, last_outcome_at, eff_successes, eff_failures, eff_count"
                " FROM path_stats WHERE tenant = ? AND goal = ? AND pipeline_id = ?",
                (tenant, goal, pipeline_id),
            ).fetchall()
            for row in stats:
                path_id, epoch = row[0], row[8]
                recent = conn.execute(
                    "SELECT value, seq FROM outcomes WHERE tenant = ? AND goal = ?"
                    " AND pipeline_id = ? AND path_id = ? AND seq >= ? ORDER BY seq DESC"
                    " LIMIT ?",
                    (tenant, goal, pipeline_id, path_id, epoch, history),
                ).fetchall()
                recent.reverse()
                result.append(
                    PathTotals(
                        path_id=path_id,
                        successes=row[1],
                        failures=row[2],
                        count=row[3],
                        eff_successes=float(row[10]),
                        eff_failures=float(row[11]),
                        eff_count=int(row[12]),
                        epoch_seq=epoch,
                        cost_sum=row[4],
                        cost_n=row[5],
                        latency_sum=row[6],
                        latency_n=row[7],
                        last_outcome_at=row[9],
                        recent_values=[r[0] for r in recent],
                        recent_seqs=[r[1] for r in recent],
                    )
                )
        return result, last_seq, last_corr

    def outcomes_in_window(
        self, tenant: str, goal: str | None, since: float
    ) -> list[OutcomeRecord]:
        """Outcomes of the tenant (one goal if given) created at or after ``since``."""
        query = f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE tenant = ? AND created_at >= ?"
        args: list[Any] = [tenant, since]
        if goal is not None:
            query += " AND goal = ?"
            args.append(goal)
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY seq", args).fetchall()
        return [_outcome_from_row(row) for row in rows]

    def count_outcomes(self, tenant: str, goal: str | None = None) -> int:
        """How many outcomes the tenant (one goal if given) has stored."""
        query = "SELECT COUNT(*) FROM outcomes WHERE tenant = ?"
        args: list[Any] = [tenant]
        if goal is not None:
            query += " AND goal = ?"
            args.append(goal)
        with self._read() as conn:
            return int(conn.execute(query, args).fetchone()[0])

    # -- API keys (the service's tenants) --------------------------------------------------------
    def create_api_key(
        self, tenant: str, key_id: str, key_hash: str, name: str | None
    ) -> ApiKeyRecord:
        """Store a new key's hash for a tenant."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, tenant, key_hash, name, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key_id, tenant, key_hash, name, now),
            )
        return ApiKeyRecord(key_id, tenant, name, now)

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Keys (of one tenant if given), oldest first, revoked ones included."""
        query = "SELECT key_id, tenant, name, created_at, revoked_at FROM api_keys"
        args: list[Any] = []
        if tenant is not None:
            query += " WHERE tenant = ?"
            args.append(tenant)
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY created_at, key_id", args).fetchall()
        return [_key_from_row(row) for row in rows]

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke a key (idempotent); None if unknown."""
        with self._write() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                (time.time(), key_id),
            )
            row = conn.execute(
                "SELECT key_id, tenant, name, created_at, revoked_at FROM api_keys"
                " WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return _key_from_row(row) if row else None

    def tenant_for_key_hash(self, key_hash: str) -> str | None:
        """The tenant of an active key with this hash, or None (unknown or revoked)."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT tenant FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
        return row[0] if row else None


def _key_from_row(row: Sequence[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row[0], tenant=row[1], name=row[2], created_at=row[3], revoked_at=row[4]
    )


def _jsonable_extra(extra: Any) -> dict[str, Any]:
    """Keep only JSON-serialisable execution hints (tool definitions, provider, pricing)."""
    result: dict[str, Any] = {}
    for key, value in dict(extra).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            logger.debug("path hint %r is not serialisable; kept in memory only", key)
            continue
        result[key] = value
    return result
