"""Process exit: what a process reported is delivered at exit, or stays in its outbox and is
replayed by the next process (even after a SIGKILL), exactly once.

Delivery at exit with the service up is in test_remote_service.py (it shares that module's
service).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kalibr_core._outbox import Outbox, default_outbox_path
from kalibr_core._remote import RemoteIntelligence
from kalibr_core.store import SqliteStore

TENANT = "acme"
GOAL = "exit_goal"


def stored(store_path: Path) -> list[Any]:
    store = SqliteStore(store_path)
    try:
        return store.outcomes_in_window(TENANT, GOAL, 0)
    finally:
        store.close()


def test_what_could_not_be_delivered_is_replayed_by_the_next_process(
    service: Any, tmp_path: Path, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = service.create_key(TENANT, cli=False)  # the service is down: nothing listens
    ways = ("exit", "kill")
    outboxes = {how: tmp_path / f"outboxes-{how}" for how in ways}
    started = time.monotonic()
    agents = {how: agent.start(service.url, key, TENANT, outboxes[how], how) for how in ways}
    reports = {how: agent.finish(agents[how], how) for how in ways}

    assert {r["source"] for r in reports.values()} == {"fail_open"}
    assert time.monotonic() - started < 30  # the exit flush gives up after budget.exit (2 s)
    for how in ways:
        monkeypatch.setenv("KALIBR_OUTBOX", str(outboxes[how]))
        # The registration and the outcome wait on disk, after an exit as after a SIGKILL.
        assert Outbox(default_outbox_path(service.url, TENANT)).count() == 2, how

    service.start()
    for how in ways:  # the next process of each agent
        monkeypatch.setenv("KALIBR_OUTBOX", str(outboxes[how]))
        with RemoteIntelligence(service.url, key, TENANT) as later:
            later.flush()
            assert later.pending_outcomes() == 0

    outcomes = stored(service.store)
    assert Counter(o.trace_id for o in outcomes) == Counter(
        {r["trace_id"]: 1 for r in reports.values()}
    )
    assert all(o.path_id is not None for o in outcomes)  # registered first, then attributed
