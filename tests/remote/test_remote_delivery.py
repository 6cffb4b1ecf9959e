"""Outcomes through the outbox: on disk before they are sent, gone only once acknowledged,
replayed in order and exactly once, rejected ones kept as dead letters."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import (
    Intelligence,
    IntelligenceUnavailableError,
    InvalidFailureCategoryError,
    NotFoundError,
    ValidationError,
)
from kalibr_core._outbox import Outbox

FakeService = Any  # conftest.FakeService
MakeRemote = Callable[..., Any]
WaitFor = Callable[..., bool]
GOAL = "summarize"
TRACE = "trace-1"


def test_an_outcome_is_on_disk_before_it_is_sent_and_gone_once_acknowledged(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    queued_when_sent: list[bool] = []
    fake.on_request = lambda request: queued_when_sent.append(
        Outbox(remote.outbox.path).count("report") == 1
    )

    answer = remote.report_outcome(TRACE, GOAL, success=True, model_id="gpt-4o")

    assert queued_when_sent == [True]
    assert answer["status"] == "accepted" and answer["trace_id"] == TRACE
    assert re.fullmatch(r"[0-9a-f]{32}", answer["outcome_id"])
    assert remote.pending_outcomes() == 0
    (stored,) = fake.outcomes.values()
    assert stored["outcome_id"] == answer["outcome_id"] and stored["model_id"] == "gpt-4o"


def test_wait_false_is_delivered_by_the_background_sender(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor
) -> None:
    remote = make_remote()

    answers = [
        remote.report_outcome(f"t{i}", GOAL, success=i % 2 == 0, wait=False) for i in range(20)
    ]

    assert {a["status"] for a in answers} == {"queued"}
    assert wait_for(lambda: len(fake.outcomes) == 20)
    assert wait_for(lambda: remote.pending_outcomes() == 0)
    assert [o["trace_id"] for o in fake.received] == [f"t{i}" for i in range(20)]  # in order


def test_outcomes_wait_out_an_outage_and_are_replayed_once_in_order(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor
) -> None:
    remote = make_remote()
    fake.down = True

    answers = [remote.report_outcome(f"t{i}", GOAL, success=True) for i in range(10)]

    # wait=True while the service is down: durable locally, answered at once, never an error.
    assert {a["status"] for a in answers} == {"queued"}
    assert remote.pending_outcomes() == 10
    fake.down = False
    assert wait_for(lambda: remote.pending_outcomes() == 0)
    assert [o["trace_id"] for o in fake.received] == [f"t{i}" for i in range(10)]
    assert sorted(fake.outcomes) == sorted(a["outcome_id"] for a in answers)


def test_a_lost_acknowledgement_is_replayed_with_the_same_outcome_id(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    key = "0" * 31 + "1"
    fake.lose_ack.add(key)

    first = remote.report_outcome(TRACE, GOAL, success=True, outcome_id=key)
    assert first["status"] == "queued"  # stored by the service, but the answer was lost
    remote.flush()

    assert [o["outcome_id"] for o in fake.received] == [key, key]  # delivered twice...
    assert list(fake.outcomes) == [key]  # ...stored once (the service's idempotency key)
    assert remote.pending_outcomes() == 0


def test_retries_after_5xx_keep_the_outcome_id(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor
) -> None:
    remote = make_remote()
    fake.fail_with["intelligence/report-outcome"] = 503
    answer = remote.report_outcome(TRACE, GOAL, success=False, wait=False)
    assert wait_for(lambda: fake.count("intelligence/report-outcome") >= 3)
    assert remote.pending_outcomes() == 1

    del fake.fail_with["intelligence/report-outcome"]

    assert wait_for(lambda: remote.pending_outcomes() == 0)
    sent = {body["outcome_id"] for _, path, body in fake.log if "report" in path}
    assert sent == {answer["outcome_id"]}


def test_a_rejected_outcome_moves_to_the_dead_letters_loudly(
    fake: FakeService, make_remote: MakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    remote = make_remote()
    fake.fail_with["intelligence/report-outcome"] = 422

    with caplog.at_level(logging.ERROR, logger="kalibr_core.remote"):
        queued = remote.report_outcome(TRACE, GOAL, success=True, wait=False)
        remote.flush()
        with pytest.raises(ValidationError, match="scripted 422"):
            remote.report_outcome("trace-2", GOAL, success=True)

    assert remote.pending_outcomes() == 0
    dead = remote.outbox.dead_letters()
    assert dead[0].key == queued["outcome_id"]
    assert {d.status for d in dead} == {422}
    assert {d.error for d in dead} == {"scripted 422"}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("dead letters" in m for m in errors)

    # Once the service accepts them again, they can be sent again.
    del fake.fail_with["intelligence/report-outcome"]
    assert remote.outbox.requeue_dead_letters() == 2
    remote.flush()
    assert sorted(o["trace_id"] for o in fake.outcomes.values()) == [TRACE, "trace-2"]
    assert remote.outbox.dead_letters() == []


def test_an_auth_failure_keeps_outcomes_for_replay_and_logs_an_error(
    fake: FakeService, make_remote: MakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    remote = make_remote()
    fake.fail_with["intelligence/report-outcome"] = 401

    with caplog.at_level(logging.ERROR, logger="kalibr_core.remote"):
        answer = remote.report_outcome(TRACE, GOAL, success=True)
        with pytest.raises(IntelligenceUnavailableError, match="still wait in the outbox"):
            remote.flush()

    assert answer["status"] == "queued"
    assert remote.pending_outcomes() == 1 and remote.outbox.dead_letters() == []
    assert any("HTTP 401" in r.getMessage() for r in caplog.records)
    del fake.fail_with["intelligence/report-outcome"]  # the operator fixes the key
    remote.flush()
    assert [o["trace_id"] for o in fake.outcomes.values()] == [TRACE]


def test_a_200_that_is_not_an_acknowledgement_keeps_the_outcome(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    fake.portal.add("intelligence/report-outcome")

    assert remote.report_outcome(TRACE, GOAL, success=True)["status"] == "queued"
    assert remote.pending_outcomes() == 1

    fake.portal.clear()
    remote.flush()
    assert remote.pending_outcomes() == 0


def test_flush_is_bounded_while_the_service_is_down(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    fake.down = True
    remote.report_outcome(TRACE, GOAL, success=True, wait=False)

    started = time.monotonic()
    with pytest.raises(IntelligenceUnavailableError, match="1 request"):
        remote.flush()
    assert time.monotonic() - started < 2  # budget.flush is 1 s in these tests
    assert remote.pending_outcomes() == 1


def test_corrections_and_registrations_are_queued_in_order_with_outcomes(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    fake.down = True

    registered = remote.register_path(GOAL, "gpt-4o")
    reported = remote.report_outcome(TRACE, GOAL, success=True)
    updated = remote.update_outcome(TRACE, GOAL, success=False, failure_category="timeout")
    fake.down = False
    remote.flush()

    assert registered["status"] == "queued" and registered["created"] is None
    assert reported["status"] == "queued" and updated["status"] == "queued"
    delivered = [path for _, path, _ in fake.log]
    assert delivered == [
        "routing/paths",
        "intelligence/report-outcome",
        "intelligence/update-outcome",
    ]
    assert fake.updates == [
        {"trace_id": TRACE, "goal": GOAL, "success": False, "failure_category": "timeout"}
    ]


def test_update_answers_like_the_local_intelligence(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    remote.report_outcome(TRACE, GOAL, success=True)

    answer = remote.update_outcome(TRACE, GOAL, success=False)
    assert answer == {
        "status": "updated",
        "trace_id": TRACE,
        "goal": GOAL,
        "fields_updated": ["success"],
    }
    with pytest.raises(NotFoundError, match="no outcome"):
        remote.update_outcome("unknown-trace", GOAL, success=False)


def test_a_fail_open_decision_lends_its_path_to_the_outcome(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, "gpt-4o", tool_id=["search", "calc"], params={"temperature": 0.2})
    fake.down = True
    decision = remote.decide(GOAL)
    remote.report_outcome(decision["trace_id"], GOAL, success=True)
    fake.down = False
    remote.flush()

    (stored,) = fake.outcomes.values()
    # The service never saw this trace id: the model, tools and params let it attribute it.
    assert stored["model_id"] == "gpt-4o"
    assert stored["tool_id"] == "calc,search"
    assert stored["execution_params"] == {"temperature": 0.2}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"success": True, "failure_category": "bogus"}, InvalidFailureCategoryError),
        ({"success": True, "score": float("nan")}, ValidationError),
        ({"success": "yes"}, ValidationError),
        ({}, ValidationError),
        ({"success": True, "metadata": {1: "x"}}, ValidationError),
        ({"success": True, "cost_usd": -1}, ValidationError),
        ({"success": True, "input_tokens": 1.5}, ValidationError),
    ],
)
def test_invalid_outcomes_raise_the_local_errors_and_queue_nothing(
    kwargs: dict[str, Any], error: type[Exception], fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    with Intelligence(":memory:") as local, pytest.raises(error) as expected:
        local.report_outcome(TRACE, GOAL, **kwargs)

    with pytest.raises(error) as raised:
        remote.report_outcome(TRACE, GOAL, **kwargs)

    assert str(raised.value) == str(expected.value)
    assert remote.pending_outcomes() == 0 and fake.log == []


def test_a_second_client_replays_what_the_first_left(
    fake: FakeService, make_remote: MakeRemote, tmp_path: Path
) -> None:
    path = tmp_path / "shared.sqlite3"
    first = make_remote(outbox=path)
    fake.down = True
    keys = [first.report_outcome(f"t{i}", GOAL, success=True)["outcome_id"] for i in range(5)]
    first.close()  # gives up after budget.exit; the outcomes stay on disk
    assert Outbox(path).count() == 5
    fake.down = False

    second = make_remote(outbox=path)
    second.flush()

    assert sorted(fake.outcomes) == sorted(keys)
    assert len(fake.received) == 5


def test_an_outcome_the_service_always_fails_on_does_not_hold_up_the_queue(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kalibr_core._sender.POISON_ATTEMPTS", 3)
    remote = make_remote()
    fake.poison.add("poison")

    remote.report_outcome("poison", GOAL, success=True, wait=False)
    remote.report_outcome("behind", GOAL, success=True, wait=False)

    assert wait_for(lambda: remote.pending_outcomes() == 0)
    assert [o["trace_id"] for o in fake.outcomes.values()] == ["behind"]
    (dead,) = remote.outbox.dead_letters()
    assert dead.body["trace_id"] == "poison" and dead.status == 500
    assert "each of 3 attempts" in dead.error
