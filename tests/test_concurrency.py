"""Several threads and several processes sharing one Intelligence or one SQLite file.

Every count must come out exact: no outcome lost, none counted twice, every correction applied
once, whoever reports and whoever reads.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from kalibr_core import Intelligence

GOAL = "classify_ticket"
MODELS = ("model-a", "model-b", "model-c")
RATES = {"model-a": 0.8, "model-b": 0.5, "model-c": 0.3}


def _report_rounds(
    intel: Intelligence, worker: int, rounds: int, correct_every: int = 0
) -> dict[str, Any]:
    """decide + report ``rounds`` times; returns what this worker reported (after corrections)."""
    rng = np.random.default_rng(1000 + worker)
    outcomes: dict[str, tuple[str, bool]] = {}
    for i in range(rounds):
        decision = intel.decide(GOAL)
        success = bool(rng.random() < RATES[decision["model_id"]])
        intel.report_outcome(decision["trace_id"], GOAL, success=success)
        outcomes[decision["trace_id"]] = (decision["model_id"], success)
        if correct_every and i % correct_every == 0:
            # A late signal flips an earlier outcome of this worker.
            trace_id = list(outcomes)[int(rng.integers(len(outcomes)))]
            model, old = outcomes[trace_id]
            intel.update_outcome(trace_id, GOAL, success=not old)
            outcomes[trace_id] = (model, not old)
    counts: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    for model, success in outcomes.values():
        counts[model] += 1
        successes[model] += success
    return {"counts": dict(counts), "successes": dict(successes)}


def _process_worker(args: tuple[str, int, int, int]) -> dict[str, Any]:
    """Entry point of a spawned process: its own Intelligence on the shared file."""
    path, worker, rounds, correct_every = args
    with Intelligence(path, seed=worker) as intel:
        for model in MODELS:
            intel.register_path(GOAL, model)
        return _report_rounds(intel, worker, rounds, correct_every)


def _child_reports(path: str, model_rates: dict[str, float], n: int) -> None:
    with Intelligence(path) as intel:
        for i in range(n):
            for model, rate in model_rates.items():
                intel.report_outcome(
                    f"child-{model}-{i}", GOAL, success=i < rate * n, model_id=model
                )


def _merge(results: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    counts: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    for result in results:
        counts.update(result["counts"])
        successes.update(result["successes"])
    return counts, successes


def _assert_exact(intel: Intelligence, counts: Counter[str], successes: Counter[str]) -> None:
    stats = intel.stats(GOAL)
    assert stats["total_outcomes"] == sum(counts.values())
    rows = {p["model_id"]: p for p in stats["paths"]}
    for model in MODELS:
        assert rows[model]["total_outcomes"] == counts[model], model
        if counts[model]:
            assert rows[model]["lifetime_success_rate"] == pytest.approx(
                successes[model] / counts[model], abs=1e-4
            ), model
    assert stats["success_rate"] == pytest.approx(
        sum(successes.values()) / sum(counts.values()), abs=1e-4
    )


def _decision_rows(path: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.parametrize("correct_every", [0, 5], ids=["reports", "reports-and-corrections"])
def test_threads_sharing_one_intelligence(tmp_db: str, correct_every: int) -> None:
    threads_n, rounds = 8, 100
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    with Intelligence(tmp_db, seed=1) as intel:
        for model in MODELS:
            intel.register_path(GOAL, model)
        barrier = threading.Barrier(threads_n)

        def work(worker: int) -> None:
            try:
                barrier.wait()
                results.append(_report_rounds(intel, worker, rounds, correct_every))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert len(results) == threads_n
        counts, successes = _merge(results)
        assert sum(counts.values()) == threads_n * rounds
        assert intel.store.count_outcomes("default", GOAL) == threads_n * rounds
        _assert_exact(intel, counts, successes)  # the live, in-memory state
        intel.flush()
        assert _decision_rows(tmp_db) == threads_n * rounds
    with Intelligence(tmp_db) as fresh:  # the state rebuilt from the file
        _assert_exact(fresh, counts, successes)


def test_threads_with_their_own_intelligence_on_one_file(tmp_db: str) -> None:
    threads_n, rounds = 4, 80
    results: list[dict[str, Any]] = []
    instances = [Intelligence(tmp_db, seed=w) for w in range(threads_n)]
    try:
        for model in MODELS:
            instances[0].register_path(GOAL, model)
        threads = [
            threading.Thread(
                target=lambda w=w: results.append(_report_rounds(instances[w], w, rounds, 4))
            )
            for w in range(threads_n)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        counts, successes = _merge(results)
        assert sum(counts.values()) == threads_n * rounds
        for instance in instances:  # every instance converges on the same state
            _assert_exact(instance, counts, successes)
    finally:
        for instance in instances:
            instance.close()


@pytest.mark.parametrize("correct_every", [0, 6], ids=["reports", "reports-and-corrections"])
def test_processes_sharing_one_file(tmp_db: str, correct_every: int) -> None:
    processes_n, rounds = 4, 150
    with Intelligence(tmp_db) as setup:
        for model in MODELS:
            setup.register_path(GOAL, model)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes_n) as pool:
        results = pool.map(
            _process_worker,
            [(tmp_db, worker, rounds, correct_every) for worker in range(processes_n)],
        )
    counts, successes = _merge(results)
    assert sum(counts.values()) == processes_n * rounds
    with Intelligence(tmp_db) as fresh:
        assert fresh.store.count_outcomes("default", GOAL) == processes_n * rounds
        _assert_exact(fresh, counts, successes)
    assert _decision_rows(tmp_db) == processes_n * rounds


def test_another_process_sees_outcomes_within_the_sync_interval(tmp_db: str) -> None:
    interval = 0.3
    with Intelligence(tmp_db, sync_interval_s=interval, seed=3) as intel:
        intel.register_path(GOAL, "model-a")
        intel.register_path(GOAL, "model-b")
        before = Counter(intel.decide(GOAL)["model_id"] for _ in range(50))
        assert before["model-a"] > 5  # no preference yet

        context = multiprocessing.get_context("spawn")
        child = context.Process(
            target=_child_reports, args=(tmp_db, {"model-a": 0.0, "model-b": 1.0}, 40)
        )
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        reported_at = time.monotonic()

        time.sleep(interval + 0.1)
        decisions = [intel.decide(GOAL) for _ in range(100)]
        assert time.monotonic() - reported_at < 5 * interval + 1
        chosen = Counter(d["model_id"] for d in decisions)
        assert chosen["model-b"] > 90, chosen
        b_rows = [d for d in decisions if d["model_id"] == "model-b"]
        assert b_rows[0]["sample_count"] >= 40
        stats = intel.stats(GOAL)
        assert stats["total_outcomes"] == 80
