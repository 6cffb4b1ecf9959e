"""areport_outcome: durable when it returns, concurrent reports share commits, errors stay apart."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kalibr_core import Intelligence, StoreError, ValidationError
from kalibr_core.store import open_store

GOAL = "resolve_ticket"
BatchSizes = Callable[[Intelligence], list[int]]  # the batch_sizes fixture (conftest.py)


def test_an_async_report_is_durable_and_learned_when_it_returns(tmp_db: str) -> None:
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
        decision = intel.decide(GOAL)

        answer = asyncio.run(intel.areport_outcome(decision["trace_id"], GOAL, success=True))

        assert answer == {
            "status": "accepted",
            "trace_id": decision["trace_id"],
            "goal": GOAL,
            "path_id": decision["path_id"],
        }
        assert intel.pending_outcomes() == 0
        with Intelligence(tmp_db) as other:  # another process sees it: it is committed
            assert other.store.count_outcomes("default", GOAL) == 1
        (path,) = intel.stats(GOAL)["paths"]
        assert path["total_outcomes"] == 1


def test_the_reporter_draws_the_next_decision_once_it_is_idle(tmp_db: str) -> None:
    # A service's decide, then its report: the reporter thread stores and folds the outcome,
    # answers, and with no report waiting draws the next decision, which decide then takes.
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
        intel.register_path(GOAL, "claude-3-5-sonnet")
        router = intel._scope(intel.tenant, GOAL, "").router
        for _ in range(5):
            decision = intel.decide(GOAL)
            asyncio.run(intel.areport_outcome(decision["trace_id"], GOAL, success=True))
            deadline = time.monotonic() + 5
            while router._ahead is None and time.monotonic() < deadline:
                time.sleep(0.002)
            ahead = router._ahead
            assert ahead is not None, "the reporter drew no decision ahead"
            assert intel.decide(GOAL)["path_id"] == ahead.selection.path_id
            assert router._ahead is None


def test_concurrent_async_reports_share_commits_and_each_is_stored_once(
    tmp_db: str, batch_sizes: BatchSizes
) -> None:
    tasks = 300
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
        intel.register_path(GOAL, "claude-3-5-sonnet")
        batches = batch_sizes(intel)

        async def main() -> list[dict[str, Any]]:
            return await asyncio.gather(
                *(
                    intel.areport_outcome(
                        f"t{i}",
                        GOAL,
                        success=i % 3 != 0,
                        model_id="gpt-4o" if i % 2 else "claude-3-5-sonnet",
                    )
                    for i in range(tasks)
                )
            )

        answers = asyncio.run(main())

        assert [a["trace_id"] for a in answers] == [f"t{i}" for i in range(tasks)]
        assert sum(batches) == tasks
        assert len(batches) < tasks / 5  # many reports per commit, not one each
        stored = intel.store.outcomes_in_window("default", GOAL, 0)
        assert sorted(o.trace_id for o in stored) == sorted(f"t{i}" for i in range(tasks))
        totals = {p["model_id"]: p["total_outcomes"] for p in intel.stats(GOAL)["paths"]}
        assert totals == {"gpt-4o": tasks // 2, "claude-3-5-sonnet": tasks // 2}


def test_a_bad_report_fails_alone_and_the_batch_is_stored(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")

    async def main() -> list[Any]:
        calls = [
            intel.areport_outcome("t0", GOAL, success=True, model_id="gpt-4o"),
            intel.areport_outcome("t1", GOAL, success=False, failure_category="bogus"),
            intel.areport_outcome("t2", GOAL, success=True, model_id="gpt-4o"),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    good, bad, other = asyncio.run(main())

    assert good["status"] == other["status"] == "accepted"
    assert isinstance(bad, ValidationError)
    assert "timeout" in str(bad)  # names the valid categories
    assert sorted(o.trace_id for o in intel.store.outcomes_in_window("default", GOAL, 0)) == [
        "t0",
        "t2",
    ]


def test_an_outcome_the_store_refuses_fails_only_its_own_call(
    intel: Intelligence, monkeypatch: pytest.MonkeyPatch
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    record_outcomes = intel.store.record_outcomes

    def refusing(outcomes: Any) -> Any:
        if any(o.trace_id == "poison" for o in outcomes):
            raise StoreError("the database refused the row")
        return record_outcomes(outcomes)

    monkeypatch.setattr(intel.store, "record_outcomes", refusing)

    async def main() -> list[Any]:
        calls = [
            intel.areport_outcome(name, GOAL, success=True, model_id="gpt-4o")
            for name in ("t0", "poison", "t1")
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, poisoned, last = asyncio.run(main())

    assert isinstance(poisoned, StoreError)
    assert first["status"] == last["status"] == "accepted"
    assert sorted(o.trace_id for o in intel.store.outcomes_in_window("default", GOAL, 0)) == [
        "t0",
        "t1",
    ]


def test_a_cancelled_caller_still_has_its_outcome_stored(tmp_db: str) -> None:
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
        release = threading.Event()
        record_outcomes = intel.store.record_outcomes

        def slow(outcomes: Any) -> Any:
            release.wait(5)
            return record_outcomes(outcomes)

        intel.store.record_outcomes = slow  # type: ignore[method-assign]

        async def main() -> None:
            task = asyncio.create_task(
                intel.areport_outcome("t1", GOAL, success=True, model_id="gpt-4o")
            )
            await asyncio.sleep(0.05)
            task.cancel()  # the client went away mid-write
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()

        asyncio.run(main())
    with Intelligence(tmp_db) as reopened:  # close() waited for the reporter to finish
        assert [o.trace_id for o in reopened.store.outcomes_in_window("default", GOAL, 0)] == ["t1"]


@pytest.mark.parametrize("wait_for_the_answer", [True, False], ids=["loop open", "loop closed"])
def test_a_cancelled_callers_outcome_that_could_not_be_stored_is_logged(
    tmp_db: str, caplog: pytest.LogCaptureFixture, wait_for_the_answer: bool
) -> None:
    # Nobody is left to receive the error: it must not vanish without a word.
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
        release = threading.Event()

        def failing(outcomes: Any) -> Any:
            release.wait(5)
            raise StoreError("the database is read-only")

        intel.store.record_outcomes = failing  # type: ignore[method-assign]

        async def main() -> None:
            task = asyncio.create_task(
                intel.areport_outcome("t-lost", GOAL, success=True, model_id="gpt-4o")
            )
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            if wait_for_the_answer:
                deadline = time.monotonic() + 5
                while "t-lost" not in caplog.text and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)

        with caplog.at_level(logging.ERROR, logger="kalibr_core"):
            asyncio.run(main())
            intel.close()  # waits for the reporter
    lost = [r for r in caplog.records if "t-lost" in r.getMessage()]
    assert len(lost) == 1
    assert "was not stored" in lost[0].getMessage()
    assert "read-only" in lost[0].getMessage()


def test_reports_from_several_event_loops_are_each_answered(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    answers: dict[int, list[str]] = {}

    def loop_thread(k: int) -> None:
        async def main() -> list[dict[str, Any]]:
            return await asyncio.gather(
                *(
                    intel.areport_outcome(f"l{k}-{i}", GOAL, success=True, model_id="gpt-4o")
                    for i in range(40)
                )
            )

        answers[k] = [a["trace_id"] for a in asyncio.run(main())]

    threads = [threading.Thread(target=loop_thread, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert answers == {k: [f"l{k}-{i}" for i in range(40)] for k in range(4)}
    assert intel.store.count_outcomes("default", GOAL) == 160


def test_an_async_report_after_close_is_written_by_the_caller(tmp_db: str) -> None:
    store = open_store(tmp_db)
    try:
        intel = Intelligence(store)  # the caller owns the store: it outlives close()
        intel.register_path(GOAL, "gpt-4o")
        asyncio.run(intel.areport_outcome("t1", GOAL, success=True, model_id="gpt-4o"))
        intel.close()
        assert intel._reporter is None  # the reporter thread was stopped and joined

        asyncio.run(intel.areport_outcome("t2", GOAL, success=True, model_id="gpt-4o"))

        assert store.count_outcomes("default", GOAL) == 2
    finally:
        store.close()
