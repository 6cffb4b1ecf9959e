"""The outbox file: a durable FIFO with dead letters, snapshots and one sender at a time."""

from __future__ import annotations

import doctest
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kalibr_core._outbox import Outbox, default_outbox_path, lease_owner


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    yield outbox
    outbox.close()


def test_entries_come_back_in_order_and_a_key_is_queued_once(box: Outbox) -> None:
    assert box.append("report", "o1", {"trace_id": "t1"})
    assert box.append("update", "u1", {"trace_id": "t1"})
    assert not box.append("report", "o1", {"trace_id": "t1"})  # the same outcome again

    assert [(e.kind, e.key) for e in box.head()] == [("report", "o1"), ("update", "u1")]
    assert box.count() == 2 and box.count("report") == 1


def test_what_was_appended_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path)
    first.append("report", "o1", {"trace_id": "t1", "goal": "g", "success": True})
    first.close()

    again = Outbox(path)
    (entry,) = again.head()
    assert entry.body == {"trace_id": "t1", "goal": "g", "success": True}
    again.close()


def test_a_rejected_entry_moves_to_the_dead_letters_and_can_be_requeued(box: Outbox) -> None:
    box.append("report", "o1", {"trace_id": "t1"})
    box.append("report", "o2", {"trace_id": "t2"})
    first = box.head()[0]
    box.note_failure(first.id, "HTTP 503")

    box.reject(first, 422, "score: not a number")

    assert [e.key for e in box.head()] == ["o2"]
    (dead,) = box.dead_letters()
    assert (dead.key, dead.status, dead.error, dead.body) == (
        "o1",
        422,
        "score: not a number",
        {"trace_id": "t1"},
    )
    assert box.requeue_dead_letters() == 1
    assert [e.key for e in box.head()] == ["o2", "o1"] and box.dead_letters() == []


def test_one_sender_at_a_time(box: Outbox, tmp_path: Path) -> None:
    other = Outbox(tmp_path / "outbox.sqlite3")
    me, you = lease_owner(), lease_owner()

    assert box.acquire_lease(me, 10)
    assert box.acquire_lease(me, 10)  # renewing
    assert not other.acquire_lease(you, 10)
    box.release_lease(me)
    assert other.acquire_lease(you, 10)
    other.close()


def test_an_expired_lease_is_taken_over(box: Outbox) -> None:
    assert box.acquire_lease(lease_owner(), 0.05)
    time.sleep(0.1)
    assert box.acquire_lease(lease_owner(), 10)


@pytest.mark.skipif(os.name != "posix", reason="dead processes are recognised on POSIX")
def test_the_lease_of_a_dead_process_is_taken_over_at_once(box: Outbox) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True
    )
    host, _, rest = lease_owner().partition(":")
    dead = f"{host}:{int(child.stdout)}:{rest.partition(':')[2]}"
    assert box.acquire_lease(dead, 3600)

    assert box.acquire_lease(lease_owner(), 10)


def test_the_newest_snapshot_wins(box: Outbox) -> None:
    box.save_snapshot("g", "", 200.0, {"paths": ["new"]})
    box.save_snapshot("g", "", 100.0, {"paths": ["old"]})  # a slower writer, older data

    assert box.load_snapshot("g", "") == (200.0, {"paths": ["new"]})
    assert box.load_snapshot("g", "other-pipeline") is None


def test_one_outbox_file_per_service_and_tenant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KALIBR_OUTBOX", str(tmp_path))
    a = default_outbox_path("http://a.test/", "acme")

    assert a == default_outbox_path("http://a.test", "acme")
    assert a != default_outbox_path("http://b.test", "acme")
    assert a != default_outbox_path("http://a.test", "other")
    assert a.parent == tmp_path and a.name.startswith("acme-")


@pytest.mark.parametrize("module", ["kalibr_core._outbox", "kalibr_core._remote"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), verbose=False)
    assert result.failed == 0 and result.attempted > 0
