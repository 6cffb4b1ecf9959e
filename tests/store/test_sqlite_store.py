"""The embedded SQLite store: schema versions, WAL, durability across restarts, the log."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import ConfigurationError, Intelligence, StoreError
from kalibr_core._domain import normalise_path
from kalibr_core.store import (
    SCHEMA_VERSION,
    DecisionRecord,
    OutcomeRecord,
    SqliteStore,
    _sqlite,
    open_store,
)

SeedOutcomes = Callable[..., None]  # the seed_outcomes fixture (conftest.py)
RunGoal = Callable[..., Counter[str]]  # the run_goal fixture (conftest.py)
GOAL = "extract_company"


def outcome(
    trace_id: str, value: float, *, path_id: str | None = "p1", goal: str = GOAL
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
        cost_usd=0.01,
        latency_ms=None,
        input_tokens=None,
        output_tokens=None,
        created_at=1_700_000_000.0,
    )


@pytest.fixture
def store(tmp_db: str) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_db)
    yield opened
    opened.close()


# -- opening -------------------------------------------------------------------------------------
def test_the_schema_version_is_recorded(store: SqliteStore, tmp_db: str) -> None:
    health = store.health()
    assert health["status"] == "healthy"
    assert health["schema_version"] == SCHEMA_VERSION
    connection = sqlite3.connect(tmp_db)
    try:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_version")]
    finally:
        connection.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_reopening_does_not_migrate_twice(tmp_db: str) -> None:
    SqliteStore(tmp_db).close()
    SqliteStore(tmp_db).close()
    connection = sqlite3.connect(tmp_db)
    try:
        count = connection.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0]
    finally:
        connection.close()
    assert count == SCHEMA_VERSION


def test_the_journal_is_in_wal_mode(store: SqliteStore, tmp_db: str) -> None:
    connection = sqlite3.connect(tmp_db)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()


def _wal_frames(path: str) -> int:
    """Frames in the WAL since it last started afresh (a PASSIVE checkpoint's report)."""
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        connection.close()


def test_the_wal_stays_small_under_a_steady_stream_of_commits(
    store: SqliteStore, tmp_db: str
) -> None:
    # One-outcome commits back to back never leave a concurrent checkpoint a WAL wholly
    # copied, so the WAL used to grow by about 24 KB a commit for as long as they came
    # (6,000 commits: ~140 MB, and every commit slower than the one before).
    for i in range(6_000):
        store.record_outcomes([outcome(f"t{i}", 1.0)])
    assert Path(f"{tmp_db}-wal").stat().st_size < 64 * 1024 * 1024
    assert _wal_frames(tmp_db) < 16_384
    assert store.count_outcomes("default") == 6_000


def test_a_reader_holding_an_old_snapshot_fails_no_write_and_the_wal_shrinks_after_it(
    store: SqliteStore, tmp_db: str
) -> None:
    # Another process reading an old snapshot keeps the WAL from starting afresh; the writes
    # go on (the checkpoint waits for that reader at most briefly, then leaves it be), and the
    # WAL is bounded again once the reader is done.
    store.record_outcomes([outcome("before", 1.0)])
    reader = sqlite3.connect(tmp_db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 1
        for i in range(6_000):
            store.record_outcomes([outcome(f"t{i}", 1.0)])
        assert reader.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 1
        reader.execute("COMMIT")
    finally:
        reader.close()
    store._checkpoint_due.set()  # the round after the reader left (else within 1 s)
    deadline = time.monotonic() + 10
    while _wal_frames(tmp_db) >= 16_384 and time.monotonic() < deadline:
        store.record_outcomes([outcome(f"after{time.monotonic()}", 1.0)])
        time.sleep(0.05)
    assert _wal_frames(tmp_db) < 16_384
    assert store.count_outcomes("default") >= 6_001


def test_closing_does_not_wait_for_a_checkpoint_round_under_way(
    tmp_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round that is under way when close() begins goes on to hold the writers back, which
    # takes the store's lock: close() used to hold that lock while it waited for the thread.
    monkeypatch.setattr(_sqlite, "_WAL_RESTART_FRAMES", 0)  # every round holds writers back
    in_round, go_on = threading.Event(), threading.Event()
    connect = sqlite3.connect

    class HeldCheckpoints:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self._connection = connection

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if "PASSIVE" in sql and not go_on.is_set():
                in_round.set()
                go_on.wait(10)
            return self._connection.execute(sql, *args)

        def close(self) -> None:
            self._connection.close()

    def connecting(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        if threading.current_thread().name == "kalibr-checkpoint":
            return HeldCheckpoints(connection)
        return connection

    monkeypatch.setattr(_sqlite.sqlite3, "connect", connecting)
    store = SqliteStore(tmp_db)
    store.record_outcomes([outcome("t", 1.0)])
    store._checkpoint_due.set()
    assert in_round.wait(10)
    closer = threading.Thread(target=store.close)
    started = time.monotonic()
    closer.start()
    time.sleep(0.2)  # close() is under way
    go_on.set()
    closer.join(10)
    assert time.monotonic() - started < 2.0  # it used to wait out its 5 s join
    monkeypatch.setattr(_sqlite.sqlite3, "connect", connect)
    reopened = SqliteStore(tmp_db)
    try:
        assert reopened.count_outcomes("default") == 1
    finally:
        reopened.close()


def test_a_database_from_a_newer_version_is_refused(tmp_db: str) -> None:
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
    connection = sqlite3.connect(tmp_db)
    with connection:
        connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(tmp_db)
    with pytest.raises(StoreError, match=f"v{SCHEMA_VERSION + 1}"):
        Intelligence(tmp_db)
    # Refused, not touched: the data is still there for the newer version.
    connection = sqlite3.connect(tmp_db)
    try:
        assert connection.execute("SELECT COUNT(*) FROM paths").fetchone()[0] == 1
    finally:
        connection.close()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SqliteStore(garbage)


def test_a_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path)


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "kalibr.db"
    SqliteStore(target).close()
    assert target.exists()


def test_a_closed_store_raises_store_error(tmp_db: str) -> None:
    store = SqliteStore(tmp_db)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_goals("default")
    assert store.health()["status"] == "unhealthy"


def test_open_store_understands_urls(tmp_path: Path) -> None:
    for url in (":memory:", "memory://", "sqlite:///" + str(tmp_path / "x.db"), tmp_path / "y.db"):
        store = open_store(url)
        try:
            assert store.health()["status"] == "healthy"
        finally:
            store.close()
    assert (tmp_path / "x.db").exists()
    assert (tmp_path / "y.db").exists()
    with pytest.raises(ConfigurationError, match="mongodb"):
        open_store("mongodb://localhost/kalibr")


def test_the_default_file_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "env" / "kalibr.db"
    monkeypatch.delenv("KALIBR_STORE_URL", raising=False)
    monkeypatch.setenv("KALIBR_DB", str(target))
    store = open_store()
    try:
        assert Path(store.path) == target
    finally:
        store.close()


# -- the outcome log -----------------------------------------------------------------------------
def test_outcomes_get_increasing_sequence_numbers(store: SqliteStore) -> None:
    first = store.record_outcomes([outcome("t1", 1.0), outcome("t2", 0.0)])
    second = store.record_outcomes([outcome("t3", 1.0)])
    assert first[0] < first[1] < second[0]
    log = store.outcomes_since("default", GOAL, "", 0)
    assert [o.trace_id for o in log] == ["t1", "t2", "t3"]
    assert [o.seq for o in log] == [*first, *second]
    assert [o.trace_id for o in store.outcomes_since("default", GOAL, "", first[1])] == ["t3"]
    assert store.count_outcomes("default") == 3
    assert store.count_outcomes("default", "other") == 0


def test_callers_who_share_a_commit_are_waited_for_and_a_lone_caller_is_soon_not(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three callers share a commit; the next lone caller's commit waits briefly for company
    # that does not come, is written alone, and stops the waiting for the ones after it.
    write = store._write_outcomes
    gate, commits = threading.Event(), []

    def held_write(jobs: Any) -> None:
        gate.wait(10)
        commits.append(sum(len(job.outcomes) for job in jobs))
        write(jobs)

    monkeypatch.setattr(store, "_write_outcomes", held_write)
    callers = [
        threading.Thread(target=store.record_outcomes, args=([outcome(f"t{i}", 1.0)],))
        for i in range(3)
    ]
    callers[0].start()
    while not store._writing:
        time.sleep(0.001)  # the first caller leads and is held in its write
    for caller in callers[1:]:
        caller.start()
    while len(store._queue) < 2:
        time.sleep(0.001)
    gate.set()
    for caller in callers:
        caller.join(10)
    assert commits == [1, 2]
    started = time.perf_counter()
    for i in range(3):
        store.record_outcomes([outcome(f"alone{i}", 1.0)])
    assert time.perf_counter() - started < 1.0  # waited at most _GATHER_S, never for good
    assert commits == [1, 2, 1, 1, 1]
    assert store._siblings == 1
    assert store.count_outcomes("default") == 6


def test_path_totals_are_kept_incrementally(store: SqliteStore) -> None:
    store.record_outcomes([outcome(f"t{i}", v) for i, v in enumerate([1, 1, 0, 0.5])])
    store.record_outcomes([outcome("x", 1.0, path_id=None)])  # unattributed: no totals
    totals, last_seq, last_correction = store.load_scope("default", GOAL, "", 100)
    [total] = totals
    assert total.path_id == "p1"
    assert (total.count, total.successes, total.failures) == (4, 2.5, 1.5)
    assert total.cost_sum == pytest.approx(0.04)
    assert total.cost_n == 4
    assert total.recent_values == [1, 1, 0, 0.5]
    assert last_seq == max(o.seq for o in store.outcomes_since("default", GOAL, "", 0))
    assert last_correction == 0


def test_a_correction_is_logged_and_applied_to_the_totals(store: SqliteStore) -> None:
    store.record_outcomes([outcome("t1", 1.0), outcome("t2", 1.0)])

    def fail(record: OutcomeRecord) -> OutcomeRecord:
        record.success, record.value = False, 0.0
        return record

    result = store.update_latest_outcome("default", GOAL, "t1", fail)
    assert result is not None
    before, after, correction = result
    assert before.value == 1.0
    assert after is not None
    assert after.value == 0.0
    assert correction is not None
    assert (correction.old_value, correction.new_value) == (1.0, 0.0)
    assert correction.outcome_seq == before.seq
    [total], _, last_correction = store.load_scope("default", GOAL, "", 100)
    assert (total.count, total.successes, total.failures) == (2, 1.0, 1.0)
    assert last_correction == correction.seq
    assert store.corrections_since("default", GOAL, "", 0) == [correction]
    assert store.update_latest_outcome("default", GOAL, "nope", fail) is None


def test_a_change_that_keeps_the_value_logs_no_correction(store: SqliteStore) -> None:
    store.record_outcomes([outcome("t1", 1.0)])

    def annotate(record: OutcomeRecord) -> OutcomeRecord:
        record.metadata = {"note": "checked"}
        return record

    result = store.update_latest_outcome("default", GOAL, "t1", annotate)
    assert result is not None
    assert result[2] is None
    assert store.corrections_since("default", GOAL, "", 0) == []
    [stored] = store.outcomes_since("default", GOAL, "", 0)
    assert stored.metadata == {"note": "checked"}


def test_decisions_are_recorded_once_per_trace(store: SqliteStore) -> None:
    def decision(path_id: str) -> DecisionRecord:
        return DecisionRecord(
            "default", "trace-1", GOAL, "", path_id, "gpt-4o", "optimal", False, 0.7, 1.0
        )

    store.record_decisions([decision("p1")])
    store.record_decisions([decision("p2")])
    stored = store.get_decision("default", "trace-1")
    assert stored is not None
    assert stored.path_id == "p1"
    assert stored.propensity == 0.7
    assert store.get_decision("other-tenant", "trace-1") is None


def test_registration_keeps_the_enabled_flag(store: SqliteStore) -> None:
    spec = normalise_path(GOAL, "gpt-4o")
    record, created = store.register_path("default", spec)
    assert created
    store.set_path_enabled("default", record.path_id, False)
    again, created = store.register_path("default", spec)
    assert not created
    assert again.enabled is False
    assert store.set_path_enabled("default", "path_unknown", True) is None


# -- restarts ------------------------------------------------------------------------------------
def test_everything_survives_a_restart(
    tmp_db: str, seed_outcomes: SeedOutcomes, run_goal: RunGoal
) -> None:
    with Intelligence(tmp_db, seed=1) as intel:
        intel.register_path(GOAL, "good")
        intel.register_path(GOAL, "bad")
        retired = intel.register_path(GOAL, "retired")["path_id"]
        intel.disable_path(retired)
        intel.set_exploration_config(GOAL, exploration_rate=0.02)
        run_goal(intel, GOAL, {"good": 0.9, "bad": 0.4}, n=300, seed=1)
        intel.report_outcome("late", GOAL, success=True, model_id="good", metadata={"n": 1})
        intel.update_outcome("late", GOAL, success=False)
        before = intel.stats(GOAL)
        trace_id = intel.decide(GOAL)["trace_id"]
    with Intelligence(tmp_db, seed=2) as reopened:
        after = reopened.stats(GOAL)
        assert after["total_outcomes"] == before["total_outcomes"] == 301
        assert after["success_rate"] == before["success_rate"]
        for row_before, row_after in zip(before["paths"], after["paths"], strict=True):
            for key in ("path_id", "enabled", "total_outcomes", "success_rate", "sample_count"):
                assert row_after[key] == row_before[key], key
        assert reopened.get_exploration_config(GOAL)["exploration_rate"] == 0.02
        assert [p["path_id"] for p in reopened.list_paths(GOAL)["paths"]] == [
            p["path_id"] for p in before["paths"] if p["enabled"]
        ]
        assert reopened.store.get_decision("default", trace_id) is not None
        [late] = [
            o for o in reopened.store.outcomes_in_window("default", GOAL, 0) if o.trace_id == "late"
        ]
        assert (late.success, late.metadata) == (False, {"n": 1})
        # The learned state steers the new process's decisions: the good path still wins.
        chosen = Counter(reopened.decide(GOAL)["model_id"] for _ in range(200))
        assert chosen["good"] > 170
        assert "retired" not in chosen
        assert reopened.get_policy(GOAL)["recommended_model"] == "good"


def test_a_detected_degradation_survives_a_restart(tmp_db: str, run_goal: RunGoal) -> None:
    with Intelligence(tmp_db, seed=1) as intel:
        intel.register_path(GOAL, "primary")
        intel.register_path(GOAL, "backup")
        run_goal(intel, GOAL, {"primary": 0.95, "backup": 0.6}, n=300, seed=1)
        run_goal(intel, GOAL, {"primary": 0.05, "backup": 0.6}, n=120, seed=2)
        assert intel.get_policy(GOAL)["recommended_model"] == "backup"
    with Intelligence(tmp_db, seed=2) as reopened:
        assert reopened.get_policy(GOAL)["recommended_model"] == "backup"
        chosen = Counter(reopened.decide(GOAL)["model_id"] for _ in range(200))
        assert chosen["backup"] > 170, chosen


def test_a_detected_drift_is_still_reported_after_a_restart(tmp_db: str, run_goal: RunGoal) -> None:
    with Intelligence(tmp_db, seed=1) as intel:
        intel.register_path(GOAL, "primary")
        intel.register_path(GOAL, "backup")
        run_goal(intel, GOAL, {"primary": 0.95, "backup": 0.6}, n=300, seed=1)
        run_goal(intel, GOAL, {"primary": 0.05, "backup": 0.6}, n=120, seed=2)
        signals = intel.get_insights(GOAL)["goals"][0]["actionable_signals"]
        assert "drift_detected" in {s["type"] for s in signals}
    with Intelligence(tmp_db, seed=2) as reopened:
        rows = {p["model_id"]: p for p in reopened.stats(GOAL)["paths"]}
        assert rows["primary"]["trend"] == "degrading"
        assert rows["primary"]["demoted"] is True
        signals = reopened.get_insights(GOAL)["goals"][0]["actionable_signals"]
        assert "drift_detected" in {s["type"] for s in signals}


def test_a_rollback_survives_a_restart(tmp_db: str, seed_outcomes: SeedOutcomes) -> None:
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "healthy")
        intel.register_path(GOAL, "broken")
        intel.stats(GOAL)
        seed_outcomes(intel, GOAL, {"healthy": 0.9, "broken": 0.05}, n=30)
        assert {p["model_id"]: p["rolled_back"] for p in intel.stats(GOAL)["paths"]} == {
            "healthy": False,
            "broken": True,
        }
    with Intelligence(tmp_db) as reopened:
        rows = {p["model_id"]: p for p in reopened.stats(GOAL)["paths"]}
        assert rows["broken"]["rolled_back"] is True
        assert rows["broken"]["demoted"] is True
        assert rows["healthy"]["rolled_back"] is False
