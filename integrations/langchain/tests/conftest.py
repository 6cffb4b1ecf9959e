"""Shared fixtures: a fresh in-memory Intelligence per test, and its stored outcomes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kalibr_core import Intelligence
from kalibr_core.store import OutcomeRecord

SEED = 20240611

Stored = Callable[[str], list[OutcomeRecord]]


@pytest.fixture
def intel() -> Iterator[Intelligence]:
    """A fresh Intelligence over an in-memory store, with seeded sampling; closed after."""
    instance = Intelligence(":memory:", seed=SEED)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def stored(intel: Intelligence) -> Stored:
    """``stored(goal)``: the outcomes the test's Intelligence stored for a goal, in order.

    Routers report through the Intelligence's background writer, so this flushes it first.
    """

    def outcomes(goal: str) -> list[OutcomeRecord]:
        intel.flush()
        return intel.store.outcomes_in_window(intel.tenant, goal, 0)

    return outcomes
