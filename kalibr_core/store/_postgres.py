"""PostgresStore: one database shared by service replicas and embedded processes on many hosts.

Same schema, contract and semantics as :class:`~kalibr_core.store.SqliteStore` (the reference),
on PostgreSQL through psycopg 3 and a small connection pool. Install with
``pip install 'kalibr-core[postgres]'`` and open with
``open_store("postgresql://user@host:5432/db")`` (``?schema=name`` keeps the tables in their own
PostgreSQL schema, created if missing).

Ordering of the log (why there is an advisory lock per scope):

Every process folds a scope's outcomes in ``seq`` order and remembers the last seq it folded.
With an identity column alone, two transactions can take seqs 11 and 12 and commit in the
opposite order: a reader then sees 12, moves its cursor past 11 and never folds 11. So every
transaction that gives out seqs in a scope (tenant, goal, pipeline) first takes a
transaction-level advisory lock on that scope (several scopes in sorted order, so that two
batches cannot deadlock). A seq is taken while holding the lock, and the lock is released only
once the commit is visible, so within a scope seqs become visible in increasing order: any
snapshot holds a prefix of the scope's log, and tailing with ``seq > cursor`` skips nothing.
Writers of different scopes do not wait for each other. ``set_epoch`` takes the same lock, so
its recomputation of the effective statistics sees every outcome whose increment it replaces.

Throughput: concurrent ``record_outcomes`` calls in one process share a transaction (group
commit, as in SqliteStore); a batch is one statement whatever its size (the outcomes as one
JSON parameter), sent with its locks in one pipeline, a single implicit transaction. A scope's last
seq is kept in ``scope_heads`` (read and updated by primary key in the statement that records
an outcome), not computed as ``MAX(seq)``: on a new database filling fast, with no planner
statistics yet, prepared plans served ``MAX`` from an index that made each report read every
earlier outcome of the scope or tenant, so a report's cost grew with the log.

PostgreSQL text cannot hold NUL characters: in free-text fields (model and tool ids, failure
reasons, key names) they are stored as U+FFFD.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "the PostgreSQL store needs psycopg 3: pip install 'kalibr-core[postgres]'"
    ) from exc

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
from kalibr_core.store._sqlite import _dumps, _jsonable_extra, _loads

logger = logging.getLogger("kalibr_core.store")

SCHEMA_VERSION: Final = 2

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS paths (
            tenant TEXT NOT NULL, path_id TEXT NOT NULL, goal TEXT NOT NULL,
            model_id TEXT NOT NULL, tool_id TEXT, params TEXT NOT NULL,
            risk_level TEXT NOT NULL, enabled BOOLEAN NOT NULL, extra TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
            ord BIGINT GENERATED ALWAYS AS IDENTITY,
            PRIMARY KEY (tenant, path_id))""",
        "CREATE INDEX IF NOT EXISTS paths_goal ON paths (tenant, goal)",
        """CREATE TABLE IF NOT EXISTS goal_configs (
            tenant TEXT NOT NULL, goal TEXT NOT NULL, config TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, goal))""",
        """CREATE TABLE IF NOT EXISTS outcomes (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL,
            trace_id TEXT NOT NULL, path_id TEXT, model_id TEXT, tool_id TEXT, params TEXT,
            success BOOLEAN NOT NULL, score DOUBLE PRECISION, value DOUBLE PRECISION NOT NULL,
            failure_category TEXT, failure_reason TEXT, metadata TEXT,
            cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
            input_tokens BIGINT, output_tokens BIGINT,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION, outcome_id TEXT)""",
        "CREATE INDEX IF NOT EXISTS outcomes_trace ON outcomes (tenant, goal, trace_id)",
        "CREATE UNIQUE INDEX IF NOT EXISTS outcomes_idempotency ON outcomes (tenant, outcome_id)"
        " WHERE outcome_id IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS outcomes_scope ON outcomes (tenant, goal, pipeline_id, seq)",
        "CREATE INDEX IF NOT EXISTS outcomes_path ON outcomes (tenant, goal, pipeline_id,"
        " path_id, seq)",
        "CREATE INDEX IF NOT EXISTS outcomes_time ON outcomes (tenant, created_at)",
        """CREATE TABLE IF NOT EXISTS corrections (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, outcome_seq BIGINT NOT NULL,
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL, path_id TEXT,
            old_value DOUBLE PRECISION NOT NULL, new_value DOUBLE PRECISION NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS corrections_scope ON corrections (tenant, goal, pipeline_id,"
        " seq)",
        """CREATE TABLE IF NOT EXISTS path_stats (
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL,
            path_id TEXT NOT NULL,
            successes DOUBLE PRECISION NOT NULL DEFAULT 0,
            failures DOUBLE PRECISION NOT NULL DEFAULT 0,
            count BIGINT NOT NULL DEFAULT 0,
            cost_sum DOUBLE PRECISION NOT NULL DEFAULT 0, cost_n BIGINT NOT NULL DEFAULT 0,
            latency_sum DOUBLE PRECISION NOT NULL DEFAULT 0, latency_n BIGINT NOT NULL DEFAULT 0,
            eff_successes DOUBLE PRECISION NOT NULL DEFAULT 0,
            eff_failures DOUBLE PRECISION NOT NULL DEFAULT 0,
            eff_count BIGINT NOT NULL DEFAULT 0,
            epoch_seq BIGINT NOT NULL DEFAULT -1, last_outcome_at DOUBLE PRECISION,
            PRIMARY KEY (tenant, goal, pipeline_id, path_id))""",
        """CREATE TABLE IF NOT EXISTS decisions (
            tenant TEXT NOT NULL, trace_id TEXT NOT NULL, goal TEXT NOT NULL,
            pipeline_id TEXT NOT NULL, path_id TEXT NOT NULL, model_id TEXT NOT NULL,
            reason TEXT NOT NULL, exploration BOOLEAN NOT NULL, propensity DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, trace_id))""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
            name TEXT, created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION)""",
    ),
    # Each scope's last seq, kept by the statement that records an outcome: read by primary
    # key. Reading it as MAX(seq) (or ORDER BY seq DESC LIMIT 1) left the choice of index to
    # the planner, and on a new table without statistics its prepared plan could scan every
    # outcome of the tenant for each report (outcomes_time or outcomes_path): a report then
    # cost time in proportion to the log.
    2: (
        """CREATE TABLE IF NOT EXISTS scope_heads (
            tenant TEXT NOT NULL, goal TEXT NOT NULL, pipeline_id TEXT NOT NULL,
            last_seq BIGINT NOT NULL, PRIMARY KEY (tenant, goal, pipeline_id))""",
        """INSERT INTO scope_heads (tenant, goal, pipeline_id, last_seq)
            SELECT tenant, goal, pipeline_id, MAX(seq) FROM outcomes
            GROUP BY tenant, goal, pipeline_id
            ON CONFLICT (tenant, goal, pipeline_id) DO NOTHING""",
    ),
}

_OUTCOME_COLUMNS: Final = (
    "seq, tenant, goal, pipeline_id, trace_id, path_id, model_id, tool_id, params, success,"
    " score, value, failure_category, failure_reason, metadata, cost_usd, latency_ms,"
    " input_tokens, output_tokens, created_at, updated_at, outcome_id"
)

_PATH_COLUMNS: Final = (
    "tenant, path_id, goal, model_id, tool_id, params, risk_level, enabled, extra, created_at"
)

# One statement per batch, whatever its size. The outcomes travel as one JSON array (one
# parameter: psycopg's per-parameter work in Python was most of a batch's cost, and it held
# the interpreter lock the service's event loop needs). Each outcome takes its seq from the
# identity's sequence in the batch's order (``i``), under the scopes' advisory locks taken by
# the statement before; the insert skips a known outcome_id; each scope's head moves to its
# highest new seq; each path's statistics get one commutative increment for all its outcomes
# of the batch. The CTEs share one snapshot, so the final SELECT reads each scope's head as it
# was before the batch (the caller derives every outcome's ``prev_seq`` from it).
_RECORD_OUTCOMES: Final = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb) AS t(i INT, tenant TEXT, goal TEXT,
        pipeline_id TEXT, trace_id TEXT, path_id TEXT, model_id TEXT, tool_id TEXT,
        params TEXT, success BOOLEAN, score DOUBLE PRECISION, value DOUBLE PRECISION,
        failure_category TEXT, failure_reason TEXT, metadata TEXT, cost_usd DOUBLE PRECISION,
        latency_ms DOUBLE PRECISION, input_tokens BIGINT, output_tokens BIGINT,
        created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION, outcome_id TEXT)
), numbered AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('outcomes', 'seq')) AS seq, ordered.*
    FROM (SELECT * FROM input ORDER BY i) AS ordered
), ins AS (
    INSERT INTO outcomes (seq, tenant, goal, pipeline_id, trace_id, path_id, model_id,
        tool_id, params, success, score, value, failure_category, failure_reason, metadata,
        cost_usd, latency_ms, input_tokens, output_tokens, created_at, updated_at, outcome_id)
    OVERRIDING SYSTEM VALUE
    SELECT seq, tenant, goal, pipeline_id, trace_id, path_id, model_id, tool_id, params,
        success, score, value, failure_category, failure_reason, metadata, cost_usd,
        latency_ms, input_tokens, output_tokens, created_at, updated_at, outcome_id
    FROM numbered ORDER BY seq
    ON CONFLICT (tenant, outcome_id) WHERE outcome_id IS NOT NULL DO NOTHING
    RETURNING seq, tenant, goal, pipeline_id, path_id, value, cost_usd, latency_ms, created_at
), head AS (
    INSERT INTO scope_heads (tenant, goal, pipeline_id, last_seq)
    SELECT tenant, goal, pipeline_id, MAX(seq) FROM ins GROUP BY tenant, goal, pipeline_id
    ON CONFLICT (tenant, goal, pipeline_id) DO UPDATE
        SET last_seq = GREATEST(scope_heads.last_seq, excluded.last_seq)
), stats AS (
    INSERT INTO path_stats (tenant, goal, pipeline_id, path_id, successes, failures, count,
        cost_sum, cost_n, latency_sum, latency_n, last_outcome_at, eff_successes,
        eff_failures, eff_count)
    SELECT tenant, goal, pipeline_id, path_id, SUM(value), SUM(1.0 - value), COUNT(*),
        COALESCE(SUM(cost_usd), 0), COUNT(cost_usd), COALESCE(SUM(latency_ms), 0),
        COUNT(latency_ms), MAX(created_at), SUM(value), SUM(1.0 - value), COUNT(*)
    FROM ins WHERE path_id IS NOT NULL GROUP BY tenant, goal, pipeline_id, path_id
    ON CONFLICT (tenant, goal, pipeline_id, path_id) DO UPDATE SET
        successes = path_stats.successes + excluded.successes,
        failures = path_stats.failures + excluded.failures,
        count = path_stats.count + excluded.count,
        eff_successes = path_stats.eff_successes + excluded.eff_successes,
        eff_failures = path_stats.eff_failures + excluded.eff_failures,
        eff_count = path_stats.eff_count + excluded.eff_count,
        cost_sum = path_stats.cost_sum + excluded.cost_sum,
        cost_n = path_stats.cost_n + excluded.cost_n,
        latency_sum = path_stats.latency_sum + excluded.latency_sum,
        latency_n = path_stats.latency_n + excluded.latency_n,
        last_outcome_at = GREATEST(COALESCE(path_stats.last_outcome_at, 0),
                                   excluded.last_outcome_at)
)
SELECT n.i, n.seq, ins.seq IS NOT NULL, COALESCE(h.last_seq, 0)
FROM numbered n
LEFT JOIN ins ON ins.seq = n.seq
LEFT JOIN scope_heads h
    ON h.tenant = n.tenant AND h.goal = n.goal AND h.pipeline_id = n.pipeline_id
ORDER BY n.i
"""

# A batch of decisions as one JSON parameter (executemany's per-row parameters cost the
# writer thread more Python time than the database took to store them); the first of two
# decisions with one trace id is kept.
_RECORD_DECISIONS: Final = """
INSERT INTO decisions (tenant, trace_id, goal, pipeline_id, path_id, model_id, reason,
    exploration, propensity, created_at)
SELECT tenant, trace_id, goal, pipeline_id, path_id, model_id, reason, exploration,
    propensity, created_at
FROM jsonb_to_recordset(%(batch)s::jsonb) AS t(i INT, tenant TEXT, trace_id TEXT, goal TEXT,
    pipeline_id TEXT, path_id TEXT, model_id TEXT, reason TEXT, exploration BOOLEAN,
    propensity DOUBLE PRECISION, created_at DOUBLE PRECISION)
ORDER BY i
ON CONFLICT (tenant, trace_id) DO NOTHING
"""

_SET_EPOCH: Final = """
UPDATE path_stats SET epoch_seq = %(epoch)s,
    eff_successes = agg.successes, eff_failures = agg.failures, eff_count = agg.n
FROM (
    SELECT COALESCE(SUM(value), 0) AS successes, COALESCE(SUM(1.0 - value), 0) AS failures,
        COUNT(*) AS n
    FROM outcomes WHERE tenant = %(tenant)s AND goal = %(goal)s
        AND pipeline_id = %(pipeline_id)s AND path_id = %(path_id)s AND seq >= %(epoch)s
) AS agg
WHERE tenant = %(tenant)s AND goal = %(goal)s AND pipeline_id = %(pipeline_id)s
    AND path_id = %(path_id)s AND epoch_seq < %(epoch)s
"""

_LOAD_RECENT: Final = """
SELECT s.path_id, r.value, r.seq FROM path_stats s
CROSS JOIN LATERAL (
    SELECT o.value, o.seq FROM outcomes o
    WHERE o.tenant = s.tenant AND o.goal = s.goal AND o.pipeline_id = s.pipeline_id
        AND o.path_id = s.path_id AND o.seq >= s.epoch_seq
    ORDER BY o.seq DESC LIMIT %(history)s
) AS r
WHERE s.tenant = %(tenant)s AND s.goal = %(goal)s AND s.pipeline_id = %(pipeline_id)s
ORDER BY s.path_id, r.seq
"""


def _text(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "\ufffd")


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
        success=row[9],
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
        enabled=row[7],
        extra=json.loads(row[8]),
        created_at=row[9],
    )


def _key_from_row(row: Sequence[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row[0], tenant=row[1], name=row[2], created_at=row[3], revoked_at=row[4]
    )


def _outcome_params(o: OutcomeRecord) -> dict[str, Any]:
    return {
        "tenant": o.tenant,
        "goal": o.goal,
        "pipeline_id": o.pipeline_id,
        "trace_id": o.trace_id,
        "path_id": o.path_id,
        "model_id": _text(o.model_id),
        "tool_id": _text(o.tool_id),
        "params": _dumps(o.params),
        "success": bool(o.success),
        "score": o.score,
        "value": float(o.value),
        "failure_category": _text(o.failure_category),
        "failure_reason": _text(o.failure_reason),
        "metadata": _dumps(o.metadata),
        "cost_usd": o.cost_usd,
        "latency_ms": o.latency_ms,
        "input_tokens": o.input_tokens,
        "output_tokens": o.output_tokens,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
        "outcome_id": o.outcome_id,
    }


def _json_batch(rows: list[dict[str, Any]]) -> str:
    """Rows as the one JSON parameter of a batch statement (``jsonb_to_recordset``)."""
    return json.dumps(rows, separators=(",", ":"), allow_nan=False)


def split_schema(url: str) -> tuple[str, str | None]:
    """Take the kalibr-specific ``schema`` query parameter out of a PostgreSQL URL.

    libpq refuses unknown URL parameters, so ``postgresql://h/db?schema=s`` becomes
    ``("postgresql://h/db", "s")``. Key/value connection strings are returned unchanged.
    """
    if "://" not in url:
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schemas[-1] or None


class PostgresStore(GroupCommit):
    """A store in a PostgreSQL database, shared by any number of processes and hosts.

    Thread-safe (a connection pool; group commit of concurrent outcome writes). See the module
    docstring for how the outcome log stays ordered across concurrent writers.

    Args:
        url: A libpq URL (``postgresql://`` or ``postgres://``) or key/value string; a
            ``schema`` query parameter in a URL acts as ``schema=``.
        schema: A PostgreSQL schema to keep the tables in (created if missing); None uses
            the connection's ``search_path`` (normally ``public``).
        pool_size: Most connections this store opens.
        connect_timeout_s: How long opening a connection may take.
        pool_timeout_s: How long an operation waits for a free connection.

    Raises:
        StoreError: the database cannot be reached, or has a newer schema than this
            kalibr-core.

    Example:
        >>> store = PostgresStore("postgresql://postgres@127.0.0.1:5432/test")  # doctest: +SKIP
        >>> store.health()["backend"]  # doctest: +SKIP
        'postgresql'
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        pool_timeout_s: float = 30.0,
    ) -> None:
        conninfo, url_schema = split_schema(url)
        self.schema = schema if schema is not None else url_schema
        if self.schema is not None and not 0 < len(self.schema) <= 63:
            raise StoreError(f"invalid PostgreSQL schema name {self.schema!r}")
        if pool_size < 1:
            raise StoreError(f"pool_size must be at least 1, got {pool_size}")
        self.location = _describe(conninfo, self.schema)
        self._closed = False
        self._init_group_commit()
        connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout_s)),
        }
        try:
            with psycopg.connect(conninfo, **connect_kwargs) as conn:
                self._migrate(conn)
            self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
                conninfo,
                kwargs=connect_kwargs,
                min_size=1,
                max_size=pool_size,
                configure=self._configure if self.schema is not None else None,
                open=True,
                name="kalibr-store",
                timeout=pool_timeout_s,
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store {self.location}: {exc}") from exc

    # -- plumbing ------------------------------------------------------------------------------
    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        assert self.schema is not None
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _scope_lock(self, tenant: str, goal: str, pipeline_id: str) -> int:
        """The advisory lock key of a scope (a 64-bit hash; a collision only serialises)."""
        name = "\x1f".join(("kalibr", self.schema or "", tenant, goal, pipeline_id))
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    @staticmethod
    def _lock(conn: psycopg.Connection[Any], keys: Iterable[int]) -> None:
        for key in sorted(set(keys)):
            conn.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (key,))

    @contextmanager
    def _connect(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        self._check_open()
        try:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store {self.location} failed: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        with self._connect() as conn, conn.transaction():
            yield conn

    def _rows(self, query: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._connect() as conn:
            return conn.execute(query, args).fetchall()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.location} is closed")

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Several processes may open a new database at once: one migrates, the others
            # wait and then find it done.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s::bigint)",
                (self._scope_lock("", "", "migrations"),),
            )
            if self.schema is not None:
                schema = sql.Identifier(self.schema)
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = (row[0] if row else None) or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self.location} has schema v{current}, newer than this "
                    f"kalibr-core (v{SCHEMA_VERSION}); upgrade kalibr-core"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def close(self) -> None:
        """Close the pool's connections (idempotent)."""
        with self._queue_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()

    def health(self) -> dict[str, Any]:
        """The store's state, for the health endpoint (never raises)."""
        try:
            with self._connect(timeout=5.0) as conn:
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        except StoreError as exc:
            return {"status": "unhealthy", "backend": "postgresql", "error": str(exc)}
        return {
            "status": "healthy",
            "backend": "postgresql",
            "location": self.location,
            "schema": self.schema,
            "schema_version": row[0] if row else None,
        }

    # -- paths and configs ---------------------------------------------------------------------
    def register_path(self, tenant: str, spec: PathSpec) -> tuple[PathRecord, bool]:
        """Insert the path if new (idempotent). Returns (record, created).

        Re-registering keeps the enabled flag: a path disabled by an operator stays disabled
        when clients re-register on start-up; use ``set_path_enabled`` to re-enable it.
        """
        now = time.time()
        path_id = spec.path_id
        extra = _dumps(_jsonable_extra(spec.extra)) or "{}"
        with self._write() as conn:
            inserted = conn.execute(
                "INSERT INTO paths (tenant, path_id, goal, model_id, tool_id, params, risk_level,"
                " enabled, extra, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, true, %s, %s, %s)"
                f" ON CONFLICT (tenant, path_id) DO NOTHING RETURNING {_PATH_COLUMNS}",
                (
                    tenant,
                    path_id,
                    spec.goal,
                    _text(spec.model_id),
                    _text(spec.tool_id),
                    _dumps(dict(spec.params)),
                    spec.risk_level,
                    extra,
                    now,
                    now,
                ),
            ).fetchone()
            if inserted is not None:
                return _path_from_row(inserted), True
            row = conn.execute(
                "UPDATE paths SET risk_level = %s, extra = %s, updated_at = %s"
                f" WHERE tenant = %s AND path_id = %s RETURNING {_PATH_COLUMNS}",
                (spec.risk_level, extra, now, tenant, path_id),
            ).fetchone()
        assert row is not None  # paths are never deleted
        return _path_from_row(row), False

    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> PathRecord | None:
        """Enable or soft-disable a path; None if the tenant has no such path."""
        rows = self._rows(
            "UPDATE paths SET enabled = %s, updated_at = %s WHERE tenant = %s AND path_id = %s"
            f" RETURNING {_PATH_COLUMNS}",
            (enabled, time.time(), tenant, path_id),
        )
        return _path_from_row(rows[0]) if rows else None

    def get_path(self, tenant: str, path_id: str) -> PathRecord | None:
        """One path of the tenant, or None."""
        rows = self._rows(
            f"SELECT {_PATH_COLUMNS} FROM paths WHERE tenant = %s AND path_id = %s",
            (tenant, path_id),
        )
        return _path_from_row(rows[0]) if rows else None

    def list_paths(
        self, tenant: str, goal: str | None = None, *, include_disabled: bool = False
    ) -> list[PathRecord]:
        """The tenant's paths (of one goal if given), in registration order."""
        query = f"SELECT {_PATH_COLUMNS} FROM paths WHERE tenant = %s"
        args: list[Any] = [tenant]
        if goal is not None:
            query += " AND goal = %s"
            args.append(goal)
        if not include_disabled:
            query += " AND enabled"
        return [_path_from_row(row) for row in self._rows(query + " ORDER BY ord", args)]

    def list_goals(self, tenant: str) -> list[str]:
        """Goals with registered paths or outcomes."""
        rows = self._rows(
            "SELECT goal FROM (SELECT goal FROM paths WHERE tenant = %s UNION"
            " SELECT goal FROM outcomes WHERE tenant = %s) AS goals"
            ' ORDER BY goal COLLATE "C"',
            (tenant, tenant),
        )
        return [row[0] for row in rows]

    def get_config(self, tenant: str, goal: str) -> dict[str, Any] | None:
        """The goal's stored exploration config, or None."""
        rows = self._rows(
            "SELECT config FROM goal_configs WHERE tenant = %s AND goal = %s", (tenant, goal)
        )
        return json.loads(rows[0][0]) if rows else None

    def set_config(self, tenant: str, goal: str, config: dict[str, Any]) -> None:
        """Store the goal's exploration config."""
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO goal_configs (tenant, goal, config, updated_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, goal) DO UPDATE"
                " SET config = excluded.config, updated_at = excluded.updated_at",
                (tenant, goal, _dumps(config), time.time()),
            )

    # -- decisions -----------------------------------------------------------------------------
    def record_decisions(self, decisions: Iterable[DecisionRecord]) -> None:
        """Persist routing decisions (idempotent per trace id), a batch in one statement."""
        rows = [
            {
                "i": i,
                "tenant": d.tenant,
                "trace_id": d.trace_id,
                "goal": d.goal,
                "pipeline_id": d.pipeline_id,
                "path_id": d.path_id,
                "model_id": _text(d.model_id),
                "reason": d.reason,
                "exploration": bool(d.exploration),
                "propensity": d.propensity,
                "created_at": d.created_at,
            }
            for i, d in enumerate(decisions)
        ]
        if not rows:
            return
        with self._write() as conn:
            conn.execute(_RECORD_DECISIONS, {"batch": _json_batch(rows)})

    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        """The decision that issued this trace id, or None."""
        rows = self._rows(
            "SELECT tenant, trace_id, goal, pipeline_id, path_id, model_id, reason,"
            " exploration, propensity, created_at FROM decisions"
            " WHERE tenant = %s AND trace_id = %s",
            (tenant, trace_id),
        )
        return DecisionRecord(*rows[0]) if rows else None

    # -- outcomes ------------------------------------------------------------------------------
    def record_outcomes(self, outcomes: Sequence[OutcomeRecord]) -> list[int]:
        """Persist outcomes; assigns and returns their ``seq`` (and sets ``prev_seq``).

        Durable when this returns (PostgreSQL's ``synchronous_commit`` decides how durable).
        Concurrent callers share transactions (group commit): the first caller writes
        everything queued while it held the write and wakes the others. If a shared batch
        fails, each caller's outcomes are retried alone, so one bad outcome fails only its
        own call.
        """
        return self._commit(outcomes)

    def _retry_alone(self, error: StoreError) -> bool:
        # A shared batch that the database refused (not one it could not be reached for).
        return not isinstance(error.__cause__, psycopg.OperationalError)

    def _write_outcomes(self, jobs: Sequence[_Job]) -> None:
        outcomes = [o for job in jobs for o in job.outcomes]
        if not outcomes:
            return
        batch = _json_batch([{**_outcome_params(o), "i": i} for i, o in enumerate(outcomes)])
        keys = [self._scope_lock(o.tenant, o.goal, o.pipeline_id) for o in outcomes]
        assigned: list[tuple[int, int, bool]] = []
        with self._connect() as conn:
            # Pipelined: the locks and the batch travel together and their results come back
            # together. With autocommit on, the statements up to the pipeline's one sync form
            # one implicit transaction (committed at the sync), each statement with its own
            # snapshot, so the batch reads the heads once it holds its scopes' locks. The
            # writer waits for the database about once per batch instead of once per
            # statement, and so takes back the interpreter lock once, which a busy event loop
            # can keep for milliseconds.
            with conn.pipeline():
                self._lock(conn, keys)
                cursor = conn.execute(_RECORD_OUTCOMES, {"batch": batch})
            results = cursor.fetchall()
            by_seq = sorted(zip(outcomes, results, strict=True), key=lambda pair: pair[1][1])
            heads: dict[tuple[str, str, str], int] = {}
            for o, (_, seq, inserted, head) in by_seq:  # each scope's chain, in seq order
                scope = (o.tenant, o.goal, o.pipeline_id)
                prev_seq = heads.get(scope, head)
                if inserted:
                    heads[scope] = seq
                    assigned.append((seq, prev_seq, False))
                    continue
                # A replay of an outcome already stored (perhaps earlier in this batch, or by
                # a transaction that committed before this one): counted once only. Its seq
                # is read after the commit; outcome ids are never removed.
                found = conn.execute(
                    "SELECT seq FROM outcomes WHERE tenant = %s AND outcome_id = %s",
                    (o.tenant, o.outcome_id),
                ).fetchone()
                assert found is not None
                assigned.append((found[0], prev_seq, True))
        # Only once committed: a failed batch is retried with the records untouched.
        for (o, _), (seq, prev_seq, duplicate) in zip(by_seq, assigned, strict=True):
            o.seq, o.prev_seq, o.duplicate = seq, prev_seq, duplicate

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
        value is logged as a correction and applied to ``path_stats`` in the same transaction,
        under the scope's lock (the correction's seq is ordered like an outcome's).
        """
        latest = (
            f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE tenant = %s AND goal = %s"
            " AND trace_id = %s ORDER BY seq DESC LIMIT 1"
        )
        locked: set[int] = set()
        while True:
            with self._write() as conn:
                self._lock(conn, locked)
                row = conn.execute(latest, (tenant, goal, trace_id)).fetchone()
                if row is None:
                    return None
                key = self._scope_lock(tenant, goal, row[3])
                if key not in locked:
                    if locked:  # the trace moved to another pipeline: start over, all locks
                        locked.add(key)
                        continue
                    self._lock(conn, [key])  # holding no other lock: cannot deadlock
                    locked.add(key)
                    row = conn.execute(latest, (tenant, goal, trace_id)).fetchone()
                    assert row is not None  # outcomes are never deleted
                    if self._scope_lock(tenant, goal, row[3]) not in locked:
                        locked.add(self._scope_lock(tenant, goal, row[3]))
                        continue
                return self._rewrite(conn, row, apply)

    def _rewrite(
        self,
        conn: psycopg.Connection[Any],
        row: Sequence[Any],
        apply: Callable[[OutcomeRecord], OutcomeRecord | None],
    ) -> tuple[OutcomeRecord, OutcomeRecord | None, CorrectionRecord | None]:
        before = _outcome_from_row(row)
        after = apply(_outcome_from_row(row))
        if after is None:
            return before, None, None
        conn.execute(
            "UPDATE outcomes SET success = %s, score = %s, value = %s, failure_category = %s,"
            " failure_reason = %s, metadata = %s, updated_at = %s WHERE seq = %s",
            (
                bool(after.success),
                after.score,
                float(after.value),
                _text(after.failure_category),
                _text(after.failure_reason),
                _dumps(after.metadata),
                after.updated_at,
                before.seq,
            ),
        )
        delta = after.value - before.value
        if delta == 0.0 or before.path_id is None:
            return before, after, None
        inserted = conn.execute(
            "INSERT INTO corrections (outcome_seq, tenant, goal, pipeline_id, path_id,"
            " old_value, new_value, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING seq",
            (
                before.seq,
                before.tenant,
                before.goal,
                before.pipeline_id,
                before.path_id,
                before.value,
                after.value,
                time.time(),
            ),
        ).fetchone()
        assert inserted is not None
        conn.execute(
            "UPDATE path_stats SET successes = successes + %(d)s, failures = failures - %(d)s,"
            " eff_successes = eff_successes"
            "  + CASE WHEN %(seq)s >= epoch_seq THEN %(d)s ELSE 0 END,"
            " eff_failures = eff_failures - CASE WHEN %(seq)s >= epoch_seq THEN %(d)s ELSE 0 END"
            " WHERE tenant = %(tenant)s AND goal = %(goal)s AND pipeline_id = %(pipeline_id)s"
            " AND path_id = %(path_id)s",
            {
                "d": delta,
                "seq": before.seq,
                "tenant": before.tenant,
                "goal": before.goal,
                "pipeline_id": before.pipeline_id,
                "path_id": before.path_id,
            },
        )
        correction = CorrectionRecord(
            inserted[0],
            before.seq,
            before.tenant,
            before.goal,
            before.pipeline_id,
            before.path_id,
            before.value,
            after.value,
        )
        return before, after, correction

    def outcomes_since(
        self, tenant: str, goal: str, pipeline_id: str, seq: int, limit: int = 10_000
    ) -> list[OutcomeRecord]:
        """Outcomes of one scope with ``seq`` greater than the given one, in order."""
        rows = self._rows(
            f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE tenant = %s AND goal = %s"
            " AND pipeline_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (tenant, goal, pipeline_id, seq, limit),
        )
        return [_outcome_from_row(row) for row in rows]

    def corrections_since(
        self, tenant: str, goal: str, pipeline_id: str, seq: int
    ) -> list[CorrectionRecord]:
        """Corrections of one scope with ``seq`` greater than the given one, in order."""
        rows = self._rows(
            "SELECT seq, outcome_seq, tenant, goal, pipeline_id, path_id, old_value,"
            " new_value FROM corrections WHERE tenant = %s AND goal = %s AND pipeline_id = %s"
            " AND seq > %s ORDER BY seq",
            (tenant, goal, pipeline_id, seq),
        )
        return [CorrectionRecord(*row) for row in rows]

    def set_epoch(
        self, tenant: str, goal: str, pipeline_id: str, path_id: str, epoch_seq: int
    ) -> None:
        """Start a path's new epoch (after a detected change) at ``epoch_seq``.

        The epoch's statistics are recomputed from the outcomes since ``epoch_seq`` under the
        scope's lock, so increments by concurrent writers are neither lost nor counted twice;
        every process folding the log detects the same change, so the update is idempotent.
        """
        with self._write() as conn:
            self._lock(conn, [self._scope_lock(tenant, goal, pipeline_id)])
            conn.execute(
                _SET_EPOCH,
                {
                    "epoch": epoch_seq,
                    "tenant": tenant,
                    "goal": goal,
                    "pipeline_id": pipeline_id,
                    "path_id": path_id,
                },
            )

    def load_scope(
        self, tenant: str, goal: str, pipeline_id: str, history: int
    ) -> tuple[list[PathTotals], int, int]:
        """Statistics of every path of a scope, and the outcome and correction cursors.

        Returns (totals per path, last outcome seq, last correction seq), read in one
        repeatable-read snapshot so that tailing from the cursors neither misses nor repeats
        an outcome.
        """
        scope = {"tenant": tenant, "goal": goal, "pipeline_id": pipeline_id}
        with self._connect() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursors = conn.execute(
                "SELECT COALESCE((SELECT last_seq FROM scope_heads WHERE tenant = %(tenant)s"
                "  AND goal = %(goal)s AND pipeline_id = %(pipeline_id)s), 0),"
                " COALESCE((SELECT seq FROM corrections WHERE tenant = %(tenant)s"
                "  AND goal = %(goal)s AND pipeline_id = %(pipeline_id)s"
                "  ORDER BY seq DESC LIMIT 1), 0)",
                scope,
            ).fetchone()
            assert cursors is not None
            stats = conn.execute(
                "SELECT path_id, successes, failures, count, cost_sum, cost_n, latency_sum,"
                " latency_n, epoch_seq, last_outcome_at, eff_successes, eff_failures, eff_count"
                " FROM path_stats WHERE tenant = %(tenant)s AND goal = %(goal)s"
                " AND pipeline_id = %(pipeline_id)s",
                scope,
            ).fetchall()
            recent: dict[str, list[tuple[float, int]]] = {}
            for path_id, value, seq in conn.execute(
                _LOAD_RECENT, {**scope, "history": history}
            ).fetchall():
                recent.setdefault(path_id, []).append((value, seq))
        result = [
            PathTotals(
                path_id=row[0],
                successes=row[1],
                failures=row[2],
                count=row[3],
                eff_successes=float(row[10]),
                eff_failures=float(row[11]),
                eff_count=int(row[12]),
                epoch_seq=row[8],
                cost_sum=row[4],
                cost_n=row[5],
                latency_sum=row[6],
                latency_n=row[7],
                last_outcome_at=row[9],
                recent_values=[value for value, _ in recent.get(row[0], [])],
                recent_seqs=[seq for _, seq in recent.get(row[0], [])],
            )
            for row in stats
        ]
        return result, int(cursors[0]), int(cursors[1])

    def outcomes_in_window(
        self, tenant: str, goal: str | None, since: float
    ) -> list[OutcomeRecord]:
        """Outcomes of the tenant (one goal if given) created at or after ``since``."""
        query = f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE tenant = %s AND created_at >= %s"
        args: list[Any] = [tenant, since]
        if goal is not None:
            query += " AND goal = %s"
            args.append(goal)
        return [_outcome_from_row(row) for row in self._rows(query + " ORDER BY seq", args)]

    def count_outcomes(self, tenant: str, goal: str | None = None) -> int:
        """How many outcomes the tenant (one goal if given) has stored."""
        query = "SELECT COUNT(*) FROM outcomes WHERE tenant = %s"
        args: list[Any] = [tenant]
        if goal is not None:
            query += " AND goal = %s"
            args.append(goal)
        return int(self._rows(query, args)[0][0])

    # -- API keys (the service's tenants) --------------------------------------------------------
    def create_api_key(
        self, tenant: str, key_id: str, key_hash: str, name: str | None
    ) -> ApiKeyRecord:
        """Store a new key's hash for a tenant."""
        now = time.time()
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, tenant, key_hash, name, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (key_id, tenant, key_hash, _text(name), now),
            )
        return ApiKeyRecord(key_id, tenant, _text(name), now)

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Keys (of one tenant if given), oldest first, revoked ones included."""
        query = "SELECT key_id, tenant, name, created_at, revoked_at FROM api_keys"
        args: list[Any] = []
        if tenant is not None:
            query += " WHERE tenant = %s"
            args.append(tenant)
        rows = self._rows(query + ' ORDER BY created_at, key_id COLLATE "C"', args)
        return [_key_from_row(row) for row in rows]

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke a key (idempotent); None if unknown."""
        rows = self._rows(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE key_id = %s"
            " RETURNING key_id, tenant, name, created_at, revoked_at",
            (time.time(), key_id),
        )
        return _key_from_row(rows[0]) if rows else None

    def tenant_for_key_hash(self, key_hash: str) -> str | None:
        """The tenant of an active key with this hash, or None (unknown or revoked)."""
        rows = self._rows(
            "SELECT tenant FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
            (key_hash,),
        )
        return str(rows[0][0]) if rows else None


def _describe(conninfo: str, schema: str | None) -> str:
    """``host:port/dbname`` (and the schema) for messages: never the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "postgresql (unparseable connection string)"
    where = (
        f"postgresql://{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        f"/{params.get('dbname') or ''}"
    )
    return f"{where} (schema {schema})" if schema else where
