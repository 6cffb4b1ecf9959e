"""Shared fixtures: a fresh in-memory Intelligence, a database path, the functional API's default.

Learning tests drive goals through ``run_goal`` (decide, then report an outcome drawn from a
per-model success rate) and ``seed_outcomes`` (report outcomes attributed by model, without a
decision), so every scenario reads as "this is how each model behaves".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kalibr_core
from kalibr_core import Intelligence
from kalibr_core import _api as api

SEED = 20240611


@pytest.fixture
def intel() -> Iterator[Intelligence]:
    """A fresh Intelligence over an in-memory store, closed after the test."""
    instance = Intelligence(":memory:", seed=SEED)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def tmp_db(tmp_path: Path) -> str:
    """A path for a SQLite database file that does not exist yet."""
    return str(tmp_path / "kalibr.db")


@pytest.fixture
def default_intel() -> Iterator[Intelligence]:
    """``kalibr_core.configure(store=":memory:")`` for the test; the previous default comes back.

    ``configure`` closes the instance it replaces, so the previous default is detached first
    and re-installed afterwards (other tests, or the user's session, keep working).
    """
    with api._default.lock:
        previous, api._default.instance = api._default.instance, None
    fresh = kalibr_core.configure(store=":memory:", seed=SEED)
    try:
        yield fresh
    finally:
        with api._default.lock:
            current, api._default.instance = api._default.instance, previous
        if current is not None:
            current.close()
        fresh.close()


RunGoal = Callable[..., Counter[str]]
SeedOutcomes = Callable[..., None]


def _pattern(rate: float, n: int) -> list[bool]:
    """``n`` outcomes with exactly ``round(rate * n)`` successes, spread evenly."""
    k = round(rate * n)
    return [(i + 1) * k // n != i * k // n for i in range(n)]


@pytest.fixture
def seed_outcomes() -> SeedOutcomes:
    """Report ``n`` outcomes per model (attributed by ``model_id``, no decision) at exact rates.

    ``seed_outcomes(intel, goal, {"a": 0.9, "b": 0.5}, n=40, cost={"a": 0.01},
    latency={"a": 900}, failure_category="timeout", pipeline_id=None)``
    """

    def seed(
        target: Intelligence,
        goal: str,
        rates: Mapping[str, float],
        *,
        n: int = 40,
        cost: Mapping[str, float] | None = None,
        latency: Mapping[str, float] | None = None,
        failure_category: str | None = None,
        pipeline_id: str | None = None,
        prefix: str = "seed",
    ) -> None:
        for model, rate in rates.items():
            for i, success in enumerate(_pattern(rate, n)):
                target.report_outcome(
                    f"{prefix}-{model}-{i}",
                    goal,
                    success=success,
                    model_id=model,
                    failure_category=None if success else failure_category,
                    cost_usd=(cost or {}).get(model),
                    latency_ms=(latency or {}).get(model),
                    pipeline_id=pipeline_id,
                )

    return seed


@pytest.fixture
def run_goal() -> RunGoal:
    """Drive ``n`` decide/report rounds; returns how often each model was chosen.

    ``run_goal(intel, goal, {"a": 0.9, "b": 0.5}, n=200, seed=1, cost=None,
    on_decision=None, **decide_kwargs)``. Each outcome is a Bernoulli draw at the chosen
    model's rate; ``on_decision(i, decision)`` sees every decision.
    """

    def run(
        target: Intelligence,
        goal: str,
        rates: Mapping[str, float],
        *,
        n: int,
        seed: int = 0,
        cost: Mapping[str, float] | None = None,
        on_decision: Callable[[int, dict[str, Any]], None] | None = None,
        **decide_kwargs: Any,
    ) -> Counter[str]:
        rng = np.random.default_rng(seed)
        chosen: Counter[str] = Counter()
        for i in range(n):
            decision = target.decide(goal, **decide_kwargs)
            model = decision["model_id"]
            chosen[model] += 1
            if on_decision is not None:
                on_decision(i, decision)
            target.report_outcome(
                decision["trace_id"],
                goal,
                success=bool(rng.random() < rates[model]),
                cost_usd=(cost or {}).get(model),
            )
        return chosen

    return run


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> Callable[[Intelligence], list[int]]:
    """``batch_sizes(intel)``: from then on, the size of every batch its store is asked to write."""

    def watch(intel: Intelligence) -> list[int]:
        sizes: list[int] = []
        record_outcomes = intel.store.record_outcomes

        def counted(outcomes: Any) -> Any:
            sizes.append(len(outcomes))
            return record_outcomes(outcomes)

        monkeypatch.setattr(intel.store, "record_outcomes", counted)
        return sizes

    return watch
