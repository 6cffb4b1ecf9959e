"""The PostgreSQL store: opening, migrations, a log that concurrent writers keep in order.

The behaviour shared with SQLite is in test_store_conformance.py; this file covers what only a
server with concurrent transactions can get wrong. Tests marked ``postgres`` skip (saying why)
without a server at 127.0.0.1:5432.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from kalibr_core import ConfigurationError, Intelligence, StoreError
from kalibr_core.store import OutcomeRecord, open_store

try:
    import psycopg

    from kalibr_core.store._postgres import SCHEMA_VERSION, PostgresStore, split_schema
except ImportError:  # the tests that need it skip (postgres_url says why)
    psycopg = None

needs_psycopg = pytest.mark.skipif(
    psycopg is None, reason="psycopg is not installed: pip install 'kalibr-core[postgres]'"
)

GOAL = "extract_company"


def outcome(
    trace_id: str,
    value: float = 1.0,
    *,
    path_id: str | None = "p1",
    goal: str = GOAL,
    outcome_id: str | None = None,
    created_at: float | None = 1_700_000_000.0,
) -> OutcomeRecord:
    return OutcomeRecord(
        tenant="default",
        goal=goal,
        pipeline_id="",
        trace_id=trace_id,
        path_id=path_id,
        model_id="gpt-4o",
        tool_id=None,
        params=None,
        success=value >= 0.5,
        score=None,
        value=value,
        failure_category=None,
        failure_reason=None,
        metadata=None,
        cost_usd=None,
        latency_ms=None,
        input_tokens=None,
        output_tokens=None,
        created_at=created_at,  # type: ignore[arg-type]  # None: a row the database refuses
        outcome_id=outcome_id,
    )


@pytest.fixture
def store(postgres_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(postgres_url, schema=pg_schema)
    yield opened
    opened.close()


def sql(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, args or None)
        return cursor.fetchall() if cursor.description else []


# -- URLs and opening (no server needed) ---------------------------------------------------------
@needs_psycopg
def test_the_schema_parameter_is_taken_out_of_the_url() -> None:
    assert split_schema("postgresql://u@h:5432/db?schema=s1&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable",
        "s1",
    )
    assert split_schema("postgres://h/db") == ("postgres://h/db", None)
    assert split_schema("host=h dbname=db") == ("host=h dbname=db", None)


def test_without_psycopg_a_postgres_url_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    monkeypatch.delitem(sys.modules, "kalibr_core.store._postgres", raising=False)
    with pytest.raises(ConfigurationError, match=r"kalibr-core\[postgres\]"):
        open_store("postgresql://postgres@127.0.0.1:5432/test")


@needs_psycopg
def test_an_unreachable_server_is_a_store_error() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot open the PostgreSQL store"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=2)
    assert time.monotonic() - started < 10


# -- opening and migrations ----------------------------------------------------------------------


@pytest.mark.postgres
def test_open_store_understands_postgres_urls(postgres_url: str, pg_schema: str) -> None:
    for scheme in ("postgresql://", "postgres://"):
        url = postgres_url.replace("postgresql://", scheme, 1) + f"?schema={pg_schema}"
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            health = store.health()
            assert (health["status"], health["backend"]) == ("healthy", "postgresql")
            assert health["schema"] == pg_schema
        finally:
            store.close()
    tables = {
        row[0]
        for row in sql(
            postgres_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            pg_schema,
        )
    }
    assert tables >= {"paths", "outcomes", "corrections", "path_stats", "api_keys"}


@pytest.mark.postgres
def test_the_health_report_never_shows_the_password(postgres_url: str, pg_schema: str) -> None:
    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)
    store = PostgresStore(url, schema=pg_schema)  # trust auth ignores the password
    try:
        health = store.health()
    finally:
        store.close()
    assert health["status"] == "healthy"
    assert "s3cret" not in repr(health)
    assert "s3cret" not in store.location


@pytest.mark.postgres
def test_concurrent_openers_migrate_once(postgres_url: str, pg_schema: str) -> None:
    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: PostgresStore(postgres_url, schema=pg_schema), range(6)))
    for store in stores:
        assert store.health()["schema_version"] == SCHEMA_VERSION
        store.close()
    rows = sql(postgres_url, f'SELECT version FROM "{pg_schema}".schema_version')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


@pytest.mark.postgres
def test_a_database_from_a_newer_version_is_refused(postgres_url: str, pg_schema: str) -> None:
    with Intelligence(PostgresStore(postgres_url, schema=pg_schema)) as intel:
        intel.register_path(GOAL, "gpt-4o")
    intel.store.close()
    sql(postgres_url, f'INSERT INTO "{pg_schema}".schema_version VALUES (%s)', SCHEMA_VERSION + 1)
    with pytest.raises(
        StoreError, match=f"newer.*v{SCHEMA_VERSION + 1}|v{SCHEMA_VERSION + 1}.*newer"
    ):
        PostgresStore(postgres_url, schema=pg_schema)
    # Refused, not touched: the data is still there for the newer version.
    assert sql(postgres_url, f'SELECT COUNT(*) FROM "{pg_schema}".paths') == [(1,)]


@pytest.mark.postgres
def test_schemas_keep_stores_apart(postgres_url: str, pg_schema: str) -> None:
    other_schema = pg_schema + "_b"
    first = PostgresStore(postgres_url, schema=pg_schema)
    second = PostgresStore(postgres_url, schema=other_schema)
    try:
        first.record_outcomes([outcome("t1")])
        assert first.count_outcomes("default") == 1
        assert second.count_outcomes("default") == 0
    finally:
        first.close()
        second.close()
        sql(postgres_url, f'DROP SCHEMA IF EXISTS "{other_schema}" CASCADE')


# -- the order of the log under concurrent writers -----------------------------------------------
@pytest.mark.postgres
def test_a_writer_in_flight_holds_back_later_writers_of_its_scope(
    postgres_url: str, pg_schema: str, store: PostgresStore
) -> None:
    """Seq 12 must not become visible while seq 11 is uncommitted, or a tailing reader skips 11."""
    store.record_outcomes([outcome("warm-up", path_id="slow"), outcome("warm-up", path_id="fast")])
    cursor = store.outcomes_since("default", GOAL, "", 0)[-1].seq
    # Separate stores: within one store, concurrent calls would share a transaction.
    writer, other_writer, third_writer = (
        PostgresStore(postgres_url, schema=pg_schema) for _ in range(3)
    )
    blocker = psycopg.connect(postgres_url, autocommit=False)
    try:
        # Hold the statistics row of path "slow": a writer of it takes its seq, then waits.
        blocker.execute(
            f'SELECT 1 FROM "{pg_schema}".path_stats WHERE path_id = %s FOR UPDATE', ("slow",)
        )
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(writer.record_outcomes, [outcome("first", path_id="slow")])
            time.sleep(0.3)  # "first" has its seq and is blocked before committing
            second = pool.submit(other_writer.record_outcomes, [outcome("second", path_id="fast")])
            elsewhere = pool.submit(
                third_writer.record_outcomes, [outcome("x", path_id="fast", goal="other_goal")]
            )
            elsewhere.result(timeout=5)  # other scopes are not held back
            time.sleep(0.3)
            assert not second.done()
            assert store.outcomes_since("default", GOAL, "", cursor) == []
            blocker.commit()
            [first_seq] = first.result(timeout=5)
            [second_seq] = second.result(timeout=5)
        assert first_seq < second_seq
        tail = store.outcomes_since("default", GOAL, "", cursor)
        assert [o.trace_id for o in tail] == ["first", "second"]
    finally:
        blocker.close()
        for opened in (writer, other_writer, third_writer):
            opened.close()


@pytest.mark.postgres
def test_a_tailing_reader_misses_nothing_while_many_writers_commit(
    postgres_url: str, pg_schema: str, store: PostgresStore
) -> None:
    writers = [PostgresStore(postgres_url, schema=pg_schema, pool_size=2) for _ in range(4)]
    per_thread, threads_per_writer = 40, 2
    done = threading.Event()
    seen: list[int] = []

    def write(writer: PostgresStore, name: str) -> None:
        for i in range(per_thread):
            writer.record_outcomes([outcome(f"{name}-{i}", float(i % 2), path_id=f"p{i % 3}")])

    def tail() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            batch = store.outcomes_since("default", GOAL, "", cursor)
            seen.extend(o.seq for o in batch)
            cursor = batch[-1].seq if batch else cursor
            if finished and not batch:
                return

    reader = threading.Thread(target=tail)
    reader.start()
    try:
        with ThreadPoolExecutor(len(writers) * threads_per_writer) as pool:
            futures = [
                pool.submit(write, writer, f"w{w}t{t}")
                for w, writer in enumerate(writers)
                for t in range(threads_per_writer)
            ]
            for future in futures:
                future.result(timeout=60)
    finally:
        done.set()
        reader.join(timeout=30)
        for writer in writers:
            writer.close()
    total = len(writers) * threads_per_writer * per_thread
    log = store.outcomes_since("default", GOAL, "", 0)
    assert len(log) == total
    assert seen == [o.seq for o in log]  # every outcome, once, in order: nothing skipped
    totals, _, _ = store.load_scope("default", GOAL, "", 10)
    assert sum(t.count for t in totals) == total
    assert sum(t.successes for t in totals) == sum(o.value for o in log)


@pytest.mark.postgres
def test_prev_seq_is_the_scopes_previous_outcome_under_concurrency(
    postgres_url: str, pg_schema: str
) -> None:
    writers = [PostgresStore(postgres_url, schema=pg_schema) for _ in range(3)]
    stored: list[OutcomeRecord] = []
    lock = threading.Lock()

    def write(writer: PostgresStore, name: str) -> None:
        for i in range(30):
            record = outcome(f"{name}-{i}", goal=("g1", "g2")[i % 2])
            writer.record_outcomes([record])
            with lock:
                stored.append(record)

    try:
        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(write, writers[i % 3], f"t{i}") for i in range(6)]:
                future.result(timeout=60)
    finally:
        for writer in writers:
            writer.close()
    for goal in ("g1", "g2"):
        chain = sorted((r for r in stored if r.goal == goal), key=lambda r: r.seq)
        assert [r.prev_seq for r in chain] == [0] + [r.seq for r in chain[:-1]]


@pytest.mark.postgres
def test_set_epoch_loses_no_increment_of_concurrent_writers(
    postgres_url: str, pg_schema: str, store: PostgresStore
) -> None:
    writers = [PostgresStore(postgres_url, schema=pg_schema) for _ in range(3)]
    store.record_outcomes([outcome(f"seed-{i}") for i in range(10)])
    epoch = store.outcomes_since("default", GOAL, "", 0)[5].seq
    stop = threading.Event()

    def write(writer: PostgresStore, name: str) -> None:
        i = 0
        while not stop.is_set():
            writer.record_outcomes([outcome(f"{name}-{i}", float(i % 2))])
            i += 1

    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(write, w, f"w{n}") for n, w in enumerate(writers)]
            time.sleep(0.2)
            store.set_epoch("default", GOAL, "", "p1", epoch)
            time.sleep(0.2)
            stop.set()
            for future in futures:
                future.result(timeout=30)
    finally:
        for writer in writers:
            writer.close()
    [total], _, _ = store.load_scope("default", GOAL, "", 10)
    in_epoch = [o for o in store.outcomes_since("default", GOAL, "", 0) if o.seq >= epoch]
    assert total.epoch_seq == epoch
    assert total.eff_count == len(in_epoch)
    assert total.eff_successes == sum(o.value for o in in_epoch)
    assert total.count == store.count_outcomes("default")


# -- group commit ---------------------------------------------------------------------------------
@pytest.mark.postgres
def test_threads_sharing_one_store_get_distinct_seqs_and_exact_totals(
    store: PostgresStore,
) -> None:
    def report(i: int) -> list[int]:
        return store.record_outcomes([outcome(f"t{i}", 1.0), outcome(f"u{i}", 0.0)])

    with ThreadPoolExecutor(16) as pool:
        seqs = [seq for pair in pool.map(report, range(200)) for seq in pair]
    assert len(set(seqs)) == 400
    [total], last_seq, _ = store.load_scope("default", GOAL, "", 10)
    assert (total.count, total.successes, total.failures) == (400, 200.0, 200.0)
    assert last_seq == max(seqs)


@pytest.mark.postgres
def test_a_bad_outcome_fails_only_its_own_call(store: PostgresStore) -> None:
    barrier = threading.Barrier(8)

    def report(i: int) -> str:
        barrier.wait()
        record = outcome(f"t{i}", created_at=None if i == 3 else 1.0)
        try:
            store.record_outcomes([record])
        except StoreError:
            return "failed"
        return "stored"

    for _ in range(3):  # several rounds: some share a transaction with the bad one
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(report, range(8)))
        assert results == ["stored"] * 3 + ["failed"] + ["stored"] * 4
    assert store.count_outcomes("default") == 21


@pytest.mark.postgres
def test_a_report_reads_no_earlier_outcome_however_long_the_log(
    postgres_url: str, pg_schema: str
) -> None:
    # A new database filling fast has no planner statistics, and the store's statements are
    # prepared then. Finding the scope's last seq must not read earlier outcomes through an
    # index (once it did: each report read the scope's or tenant's whole log, so a report's
    # cost grew with it). The database's own counters tell what was read.
    with Intelligence(f"{postgres_url}?schema={pg_schema}") as intel:
        for model in ("gpt-4o", "gpt-4o-mini", "claude-3-5-haiku"):
            intel.register_path(GOAL, model)
        for _ in range(400):
            decision = intel.decide(GOAL)
            intel.report_outcome(decision["trace_id"], GOAL, success=True)
    # closed: its connections ended and flushed their statistics
    read = dict(
        sql(
            postgres_url,
            "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes"
            " WHERE schemaname = %s AND relname = 'outcomes'",
            pg_schema,
        )
    )
    assert sum(read.values()) < 400, read  # not ~N/2 per report (80,000 in all)


@pytest.mark.postgres
def test_a_version_1_database_gets_its_scope_heads(postgres_url: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_url, schema=pg_schema)
    first = store.record_outcomes([outcome("t1"), outcome("t2")])
    store.close()
    # As a v1 database: no scope_heads table.
    sql(postgres_url, f'DROP TABLE "{pg_schema}".scope_heads')
    sql(postgres_url, f'DELETE FROM "{pg_schema}".schema_version WHERE version = 2')
    store = PostgresStore(postgres_url, schema=pg_schema)
    try:
        assert store.health()["schema_version"] == 2
        record = outcome("t3")
        store.record_outcomes([record])
        assert record.prev_seq == first[-1]  # the log's order carried over
        _, last_seq, _ = store.load_scope("default", GOAL, "", 10)
        assert last_seq == record.seq
    finally:
        store.close()
