"""The Store contract, run against every backend: a SQLite file and PostgreSQL.

Each test describes behaviour the engine relies on (the seq-ordered log, idempotency keys,
corrections, epochs, keys); a backend passes only if it behaves like the reference.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import Intelligence, StoreError
from kalibr_core._domain import normalise_path
from kalibr_core.store import DecisionRecord, OutcomeRecord, SqliteStore, Store

GOAL = "extract_company"
RunGoal = Callable[..., Counter[str]]  # the run_goal fixture (tests/conftest.py)


def outcome(
    trace_id: str,
    value: float,
    *,
    path_id: str | None = "p1",
    goal: str = GOAL,
    pipeline_id: str = "",
    tenant: str = "default",
    outcome_id: str | None = None,
    created_at: float = 1_700_000_000.0,
    cost_usd: float | None = 0.01,
    latency_ms: float | None = None,
    failure_reason: str | None = None,
) -> OutcomeRecord:
    return OutcomeRecord(
        tenant=tenant,
        goal=goal,
        pipeline_id=pipeline_id,
        trace_id=trace_id,
        path_id=path_id,
        model_id="gpt-4o",
        tool_id=None,
        params={"temperature": 0.2},
        success=value >= 0.5,
        score=None,
        value=value,
        failure_category=None,
        failure_reason=failure_reason,
        metadata={"k": [1, 2]},
        cost_usd=cost_usd,
        latency_ms=latency_ms,
        input_tokens=10,
        output_tokens=20,
        created_at=created_at,
        outcome_id=outcome_id,
    )


Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (and reopens) one database of the backend under test; closes what it opened."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def open_sqlite() -> Store:
            opened.append(SqliteStore(tmp_path / "kalibr.db"))
            return opened[-1]

        yield open_sqlite
    else:
        url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
        from kalibr_core.store._postgres import PostgresStore

        def open_postgres() -> Store:
            opened.append(PostgresStore(url, schema=schema))
            return opened[-1]

        yield open_postgres
    for store in opened:
        store.close()


@pytest.fixture
def store(open_backend: Opener) -> Store:
    return open_backend()


def fail(record: OutcomeRecord) -> OutcomeRecord:
    record.success, record.value = False, 0.0
    return record


# -- lifecycle -----------------------------------------------------------------------------------
def test_a_new_store_is_healthy(store: Store) -> None:
    health = store.health()
    assert health["status"] == "healthy"
    assert health["backend"] in {"sqlite", "postgresql"}
    expected = sys.modules[type(store).__module__].SCHEMA_VERSION  # each backend's latest
    assert health["schema_version"] == expected


def test_a_closed_store_raises_store_error(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_goals("default")
    with pytest.raises(StoreError, match="closed"):
        store.record_outcomes([outcome("t1", 1.0)])
    assert store.health()["status"] == "unhealthy"


# -- paths and configs ---------------------------------------------------------------------------
def test_registration_is_idempotent_and_keeps_the_enabled_flag(store: Store) -> None:
    spec = normalise_path(GOAL, {"model": "gpt-4o", "params": {"temperature": 0.2}})
    record, created = store.register_path("default", spec)
    assert created
    assert (record.model_id, record.params, record.enabled) == (
        "gpt-4o",
        {"temperature": 0.2},
        True,
    )
    assert store.set_path_enabled("default", record.path_id, False) is not None
    again, created = store.register_path(
        "default",
        normalise_path(
            GOAL, {"model": "gpt-4o", "params": {"temperature": 0.2}}, risk_level="high"
        ),
    )
    assert not created
    assert again.path_id == record.path_id
    assert again.enabled is False
    assert again.risk_level == "high"
    stored = store.get_path("default", record.path_id)
    assert stored is not None
    assert (stored.risk_level, stored.enabled) == ("high", False)
    assert store.set_path_enabled("default", "path_unknown", True) is None
    assert store.get_path("other-tenant", record.path_id) is None


def test_paths_are_listed_in_registration_order(store: Store) -> None:
    ids = [store.register_path("default", normalise_path(GOAL, m))[0].path_id for m in "zyxw"]
    store.register_path("default", normalise_path("other_goal", "a"))
    store.register_path("tenant-b", normalise_path(GOAL, "b"))
    store.set_path_enabled("default", ids[1], False)
    assert [p.path_id for p in store.list_paths("default", GOAL, include_disabled=True)] == ids
    assert [p.path_id for p in store.list_paths("default", GOAL)] == [ids[0], *ids[2:]]
    assert len(store.list_paths("default")) == 4
    enabled = store.set_path_enabled("default", ids[1], True)
    assert enabled is not None
    assert enabled.enabled is True
    store.record_outcomes([outcome("t1", 1.0, goal="goal_with_outcomes_only", path_id=None)])
    assert store.list_goals("default") == [GOAL, "goal_with_outcomes_only", "other_goal"]
    assert store.list_goals("tenant-b") == [GOAL]


def test_configs_are_stored_per_tenant_and_goal(store: Store) -> None:
    assert store.get_config("default", GOAL) is None
    store.set_config("default", GOAL, {"exploration_rate": 0.1, "nested": {"a": [1, 2]}})
    store.set_config("default", GOAL, {"exploration_rate": 0.2})
    assert store.get_config("default", GOAL) == {"exploration_rate": 0.2}
    assert store.get_config("tenant-b", GOAL) is None


def test_decisions_are_recorded_once_per_trace(store: Store) -> None:
    def decision(path_id: str, tenant: str = "default") -> DecisionRecord:
        return DecisionRecord(
            tenant, "trace-1", GOAL, "", path_id, "gpt-4o", "optimal", True, 0.7, 1.5
        )

    store.record_decisions([decision("p1"), decision("p2")])
    store.record_decisions([decision("p3"), decision("q", tenant="tenant-b")])
    store.record_decisions([])
    assert store.get_decision("default", "trace-1") == decision("p1")
    assert store.get_decision("tenant-b", "trace-1") == decision("q", tenant="tenant-b")
    assert store.get_decision("default", "trace-2") is None


# -- the outcome log -----------------------------------------------------------------------------
def test_outcomes_get_increasing_seqs_and_link_to_their_scopes_previous(store: Store) -> None:
    first = store.record_outcomes(
        [outcome("t1", 1.0), outcome("t2", 0.0, pipeline_id="etl"), outcome("t3", 1.0)]
    )
    second = store.record_outcomes([outcome("t4", 0.0)])
    seqs = [*first, *second]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 4
    log = store.outcomes_since("default", GOAL, "", 0)
    assert [o.trace_id for o in log] == ["t1", "t3", "t4"]
    assert [o.seq for o in log] == [seqs[0], seqs[2], seqs[3]]
    # prev_seq is the previous outcome of the same scope (tenant, goal, pipeline), so a
    # process whose view ends there can apply the outcome without reading the log.
    records = [outcome("t5", 1.0), outcome("t6", 1.0, pipeline_id="etl"), outcome("t7", 1.0)]
    store.record_outcomes(records)
    assert [r.prev_seq for r in records] == [seqs[3], seqs[1], records[0].seq]
    assert [r.duplicate for r in records] == [False, False, False]
    assert [o.trace_id for o in store.outcomes_since("default", GOAL, "", seqs[2])] == [
        "t4",
        "t5",
        "t7",
    ]
    assert [o.trace_id for o in store.outcomes_since("default", GOAL, "", 0, limit=2)] == [
        "t1",
        "t3",
    ]
    assert store.outcomes_since("default", GOAL, "", records[2].seq) == []
    assert store.count_outcomes("default") == 7
    assert store.count_outcomes("default", GOAL) == 7
    assert store.count_outcomes("default", "other") == 0
    assert store.count_outcomes("tenant-b") == 0


def test_an_outcome_round_trips_every_field(store: Store) -> None:
    record = outcome("t1", 0.25, latency_ms=120.5, failure_reason="bad JSON", outcome_id="o-1")
    record.score, record.failure_category, record.tool_id = 0.25, "validation_failed", "search"
    record.updated_at = 1_700_000_001.5
    [seq] = store.record_outcomes([record])
    [stored] = store.outcomes_since("default", GOAL, "", 0)
    assert stored.seq == seq
    for name in OutcomeRecord.__slots__:
        if name not in {"prev_seq", "duplicate"}:
            assert getattr(stored, name) == getattr(record, name), name


def test_a_replayed_outcome_id_is_counted_once(store: Store) -> None:
    [seq] = store.record_outcomes([outcome("t1", 1.0, outcome_id="key-1")])
    replays = [outcome("t1", 1.0, outcome_id="key-1"), outcome("t1", 1.0, outcome_id="key-1")]
    fresh = outcome("t2", 0.0, outcome_id="key-2")
    assert store.record_outcomes([*replays, fresh]) == [seq, seq, fresh.seq]
    assert [r.duplicate for r in replays] == [True, True]
    assert fresh.duplicate is False
    # Twice in one batch: stored once, the second acknowledged with the first's seq.
    twins = [outcome("t3", 1.0, outcome_id="key-3"), outcome("t3", 1.0, outcome_id="key-3")]
    store.record_outcomes(twins)
    assert twins[1].seq == twins[0].seq
    assert (twins[0].duplicate, twins[1].duplicate) == (False, True)
    # Keys are per tenant.
    other = outcome("t1", 1.0, outcome_id="key-1", tenant="tenant-b")
    store.record_outcomes([other])
    assert not other.duplicate
    assert store.count_outcomes("default") == 3
    [total], _, _ = store.load_scope("default", GOAL, "", 100)
    assert (total.count, total.successes) == (3, 2.0)


def test_path_totals_are_kept_incrementally(store: Store) -> None:
    values = [1, 1, 0, 0.5]
    store.record_outcomes(
        [
            outcome(f"t{i}", v, created_at=1_700_000_000.0 + i, latency_ms=100.0 * i or None)
            for i, v in enumerate(values)
        ]
    )
    store.record_outcomes([outcome("x", 1.0, path_id=None)])  # unattributed: no totals
    store.record_outcomes([outcome("y", 1.0, cost_usd=None, created_at=1.0)])
    totals, last_seq, last_correction = store.load_scope("default", GOAL, "", 100)
    [total] = totals
    assert total.path_id == "p1"
    assert (total.count, total.successes, total.failures) == (5, 3.5, 1.5)
    assert (total.eff_count, total.eff_successes, total.eff_failures) == (5, 3.5, 1.5)
    assert total.epoch_seq == -1
    assert total.cost_sum == pytest.approx(0.04)
    assert total.cost_n == 4
    assert (total.latency_sum, total.latency_n) == (600.0, 3)
    assert total.last_outcome_at == 1_700_000_003.0
    assert total.recent_values == [1, 1, 0, 0.5, 1]
    log = store.outcomes_since("default", GOAL, "", 0)
    assert total.recent_seqs == [o.seq for o in log if o.path_id == "p1"]
    assert last_seq == log[-1].seq
    assert last_correction == 0
    [limited], _, _ = store.load_scope("default", GOAL, "", 2)
    assert limited.recent_values == [0.5, 1]
    assert store.load_scope("default", GOAL, "other", 100) == ([], 0, 0)


# -- corrections ---------------------------------------------------------------------------------
def test_a_correction_rewrites_the_latest_outcome_of_the_trace(store: Store) -> None:
    store.record_outcomes([outcome("t1", 1.0), outcome("t2", 1.0), outcome("t1", 1.0)])
    latest_seq = store.outcomes_since("default", GOAL, "", 0)[-1].seq
    result = store.update_latest_outcome("default", GOAL, "t1", fail)
    assert result is not None
    before, after, correction = result
    assert before.seq == latest_seq
    assert before.value == 1.0
    assert after is not None
    assert after.value == 0.0
    assert correction is not None
    assert (correction.outcome_seq, correction.old_value, correction.new_value) == (
        latest_seq,
        1.0,
        0.0,
    )
    assert (correction.path_id, correction.pipeline_id) == ("p1", "")
    [total], _, last_correction = store.load_scope("default", GOAL, "", 100)
    assert (total.count, total.successes, total.failures) == (3, 2.0, 1.0)
    assert (total.eff_successes, total.eff_failures) == (2.0, 1.0)
    assert total.recent_values == [1.0, 1.0, 0.0]
    assert last_correction == correction.seq
    assert store.corrections_since("default", GOAL, "", 0) == [correction]
    assert store.corrections_since("default", GOAL, "", correction.seq) == []
    assert [o.success for o in store.outcomes_since("default", GOAL, "", 0)] == [
        True,
        True,
        False,
    ]
    assert store.update_latest_outcome("default", GOAL, "nope", fail) is None
    assert store.update_latest_outcome("tenant-b", GOAL, "t1", fail) is None


def test_corrections_get_increasing_seqs(store: Store) -> None:
    store.record_outcomes([outcome("t1", 1.0), outcome("t2", 1.0)])
    first = store.update_latest_outcome("default", GOAL, "t1", fail)
    second = store.update_latest_outcome("default", GOAL, "t2", fail)
    assert first is not None
    assert second is not None
    assert first[2] is not None
    assert second[2] is not None
    assert first[2].seq < second[2].seq
    assert store.corrections_since("default", GOAL, "", first[2].seq) == [second[2]]


def test_a_change_that_keeps_the_value_logs_no_correction(store: Store) -> None:
    store.record_outcomes([outcome("t1", 1.0)])

    def annotate(record: OutcomeRecord) -> OutcomeRecord:
        record.metadata = {"note": "checked"}
        record.failure_reason = "none really"
        return record

    result = store.update_latest_outcome("default", GOAL, "t1", annotate)
    assert result is not None
    assert result[2] is None
    assert store.update_latest_outcome("default", GOAL, "t1", lambda _: None) is not None
    assert store.corrections_since("default", GOAL, "", 0) == []
    [stored] = store.outcomes_since("default", GOAL, "", 0)
    assert (stored.metadata, stored.failure_reason) == ({"note": "checked"}, "none really")
    [total], _, _ = store.load_scope("default", GOAL, "", 100)
    assert total.successes == 1.0


def test_an_error_in_the_rewrite_changes_nothing(store: Store) -> None:
    store.record_outcomes([outcome("t1", 1.0)])

    def explode(record: OutcomeRecord) -> OutcomeRecord:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.update_latest_outcome("default", GOAL, "t1", explode)
    [stored] = store.outcomes_since("default", GOAL, "", 0)
    assert stored.value == 1.0
    store.record_outcomes([outcome("t2", 1.0)])  # the store is still usable


# -- epochs --------------------------------------------------------------------------------------
def test_set_epoch_restarts_the_effective_statistics(store: Store) -> None:
    seqs = store.record_outcomes([outcome(f"t{i}", 1.0) for i in range(6)])
    store.record_outcomes([outcome(f"f{i}", 0.0) for i in range(3)])
    epoch = store.outcomes_since("default", GOAL, "", 0)[6].seq  # the first failure
    store.set_epoch("default", GOAL, "", "p1", epoch)
    [total], _, _ = store.load_scope("default", GOAL, "", 100)
    assert (total.count, total.successes, total.failures) == (9, 6.0, 3.0)
    assert (total.eff_count, total.eff_successes, total.eff_failures) == (3, 0.0, 3.0)
    assert total.epoch_seq == epoch
    assert total.recent_values == [0.0, 0.0, 0.0]
    # Idempotent, and an older epoch never overrides a newer one.
    store.set_epoch("default", GOAL, "", "p1", epoch)
    store.set_epoch("default", GOAL, "", "p1", seqs[0])
    [again], _, _ = store.load_scope("default", GOAL, "", 100)
    assert (again.eff_count, again.epoch_seq) == (3, epoch)
    # Later outcomes count in the epoch; a correction of an outcome before it does not.
    store.record_outcomes([outcome("late", 1.0)])
    store.update_latest_outcome("default", GOAL, "t0", fail)
    [later], _, _ = store.load_scope("default", GOAL, "", 100)
    assert (later.eff_count, later.eff_successes, later.eff_failures) == (4, 1.0, 3.0)
    assert (later.successes, later.failures) == (6.0, 4.0)
    # An unknown path or scope is a no-op.
    store.set_epoch("default", GOAL, "", "p-unknown", epoch)
    store.set_epoch("default", GOAL, "etl", "p1", epoch)


# -- windows -------------------------------------------------------------------------------------
def test_outcomes_in_window_filters_by_time_goal_and_tenant(store: Store) -> None:
    store.record_outcomes(
        [
            outcome("old", 1.0, created_at=100.0),
            outcome("new", 1.0, created_at=200.0),
            outcome("edge", 0.0, created_at=150.0),
            outcome("elsewhere", 1.0, goal="other", created_at=300.0),
            outcome("b", 1.0, tenant="tenant-b", created_at=300.0),
        ]
    )
    assert [o.trace_id for o in store.outcomes_in_window("default", GOAL, 150.0)] == [
        "new",
        "edge",
    ]
    assert [o.trace_id for o in store.outcomes_in_window("default", None, 0.0)] == [
        "old",
        "new",
        "edge",
        "elsewhere",
    ]


def test_free_text_with_a_nul_character_is_stored(store: Store) -> None:
    # Provider error messages can contain anything; storing one must not fail the report.
    [seq] = store.record_outcomes([outcome("t1", 0.0, failure_reason="bad\x00byte")])
    [stored] = store.outcomes_since("default", GOAL, "", 0)
    assert stored.seq == seq
    assert stored.failure_reason is not None
    assert stored.failure_reason.startswith("bad")
    assert stored.failure_reason.endswith("byte")


# -- API keys ------------------------------------------------------------------------------------
def test_api_keys_are_created_listed_and_revoked(store: Store) -> None:
    first = store.create_api_key("acme", "key-1", "hash-1", "ci")
    store.create_api_key("acme", "key-2", "hash-2", None)
    store.create_api_key("globex", "key-3", "hash-3", "prod")
    assert (first.key_id, first.tenant, first.name, first.revoked_at) == (
        "key-1",
        "acme",
        "ci",
        None,
    )
    assert [k.key_id for k in store.list_api_keys()] == ["key-1", "key-2", "key-3"]
    assert [k.key_id for k in store.list_api_keys("acme")] == ["key-1", "key-2"]
    assert store.tenant_for_key_hash("hash-1") == "acme"
    assert store.tenant_for_key_hash("hash-unknown") is None
    revoked = store.revoke_api_key("key-1")
    assert revoked is not None
    assert revoked.revoked_at is not None
    again = store.revoke_api_key("key-1")
    assert again is not None
    assert again.revoked_at == revoked.revoked_at  # idempotent: the first revocation stands
    assert store.revoke_api_key("key-unknown") is None
    assert store.tenant_for_key_hash("hash-1") is None
    assert store.tenant_for_key_hash("hash-3") == "globex"
    assert [k.revoked_at is not None for k in store.list_api_keys("acme")] == [True, False]
    with pytest.raises(StoreError):
        store.create_api_key("acme", "key-4", "hash-2", None)  # a hash is one key's only


# -- through Intelligence ------------------------------------------------------------------------
def test_learned_state_survives_a_restart(open_backend: Opener, run_goal: RunGoal) -> None:
    with Intelligence(open_backend(), seed=1) as intel:
        intel.register_path(GOAL, "good")
        intel.register_path(GOAL, "bad")
        retired = intel.register_path(GOAL, "retired")["path_id"]
        intel.disable_path(retired)
        intel.set_exploration_config(GOAL, exploration_rate=0.02)
        run_goal(intel, GOAL, {"good": 0.9, "bad": 0.3}, n=200, seed=1)
        intel.report_outcome("late", GOAL, success=True, model_id="good", outcome_id="late-1")
        intel.report_outcome("late", GOAL, success=True, model_id="good", outcome_id="late-1")
        intel.update_outcome("late", GOAL, success=False)
        before = intel.stats(GOAL)
    with Intelligence(open_backend(), seed=2) as reopened:
        after = reopened.stats(GOAL)
        assert after["total_outcomes"] == before["total_outcomes"] == 201
        for row_before, row_after in zip(before["paths"], after["paths"], strict=True):
            for key in ("path_id", "enabled", "total_outcomes", "success_rate", "sample_count"):
                assert row_after[key] == row_before[key], key
        assert reopened.get_exploration_config(GOAL)["exploration_rate"] == 0.02
        chosen = Counter(reopened.decide(GOAL)["model_id"] for _ in range(200))
        assert chosen["good"] > 170, chosen
        assert "retired" not in chosen


def _stats_by_model(stats: dict[str, Any]) -> dict[str, int]:
    return {row["model_id"]: row["total_outcomes"] for row in stats["paths"]}


def test_two_instances_on_one_database_see_each_others_outcomes(open_backend: Opener) -> None:
    with (
        Intelligence(open_backend(), seed=1, sync_interval_s=0.0) as first,
        Intelligence(open_backend(), seed=2, sync_interval_s=0.0) as second,
    ):
        first.register_path(GOAL, "steady")
        first.register_path(GOAL, "flaky")
        second.decide(GOAL)  # loaded before the outcomes exist: must pick them up from the log
        for i in range(30):
            first.report_outcome(f"s{i}", GOAL, success=True, model_id="steady")
            first.report_outcome(f"f{i}", GOAL, success=False, model_id="flaky")
        chosen = Counter(second.decide(GOAL)["model_id"] for _ in range(100))
        assert chosen["steady"] > 90, chosen
        assert _stats_by_model(second.stats(GOAL)) == {"steady": 30, "flaky": 30}
        # A late correction made through one instance reaches the other's posterior too.
        rates = {row["model_id"]: row["success_rate"] for row in second.stats(GOAL)["paths"]}
        for i in range(10):
            first.update_outcome(f"s{i}", GOAL, success=False)
        second.decide(GOAL)
        corrected = {row["model_id"]: row["success_rate"] for row in second.stats(GOAL)["paths"]}
        assert corrected["steady"] < rates["steady"]
        assert corrected == {
            row["model_id"]: row["success_rate"] for row in first.stats(GOAL)["paths"]
        }
