"""Fail-open: when the routing backend fails, calls still answer on the first path, and the
outcomes it could not take are kept until it is back."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kalibr_core import Intelligence, StoreError
from kalibr_core.router import Router
from kalibr_core.simulator import ProviderSimulator

pytestmark = pytest.mark.simulator

FIRST, SECOND = "claude-haiku-4-5", "gpt-4o"
SUM = "What is 17 + 25?"


class SwitchableIntelligence(Intelligence):
    """An Intelligence whose service can be taken down and brought back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.down = False

    def _gate(self) -> None:
        if self.down:
            # What a remote service's client raises: not a KalibrError.
            raise ConnectionRefusedError("the intelligence service is unreachable")

    def register_spec(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return super().register_spec(*args, **kwargs)

    def decide(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return super().decide(*args, **kwargs)

    def report_outcome(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return super().report_outcome(*args, **kwargs)

    def queue_outcome(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return super().queue_outcome(*args, **kwargs)


@pytest.fixture
def service() -> Any:
    instance = SwitchableIntelligence(":memory:", seed=7)
    try:
        yield instance
    finally:
        instance.down = False
        instance.close()


def ask(i: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"What is {i} + 100?"}]


def stored_of(intel: Intelligence, goal: str) -> list[Any]:
    intel.flush()
    return intel.store.outcomes_in_window(intel.tenant, goal, 0)


def test_calls_answer_on_the_first_path_while_the_service_is_down(
    sim_env: ProviderSimulator, service: SwitchableIntelligence, caplog: pytest.LogCaptureFixture
) -> None:
    service.down = True
    router = Router(
        "outage",
        [FIRST, SECOND],
        success_when=lambda out: out.strip().isdigit(),
        intelligence=service,
    )
    before = len(sim_env.records())

    with caplog.at_level(logging.WARNING, logger="kalibr_core.router"):
        responses = [router.completion(ask(i)) for i in range(8)]

    assert [r.choices[0].message.content for r in responses] == [str(i + 100) for i in range(8)]
    assert {r.model for r in responses} == {FIRST}
    assert {r.kalibr_decision for r in responses} == {"fail_open"}
    assert {r.model for r in sim_env.records()[before:]} == {FIRST}
    assert "using the first path" in caplog.text  # said, not hidden

    # The eight outcomes could not be stored: they are kept, not dropped.
    assert router.flush() == 8
    assert stored_of(service, "outage") == []

    service.down = False
    assert router.flush() == 0
    outcomes = stored_of(service, "outage")
    assert sorted(o.trace_id for o in outcomes) == sorted(r.kalibr_trace_id for r in responses)
    assert all(o.success and o.model_id == FIRST for o in outcomes)
    # Attributed to the first path, so they teach the routing once the service is back.
    assert {o.path_id for o in outcomes} == {router.paths[0].path_id}


def test_routing_resumes_when_the_service_comes_back(
    sim_env: ProviderSimulator, service: SwitchableIntelligence
) -> None:
    """A Router created during an outage registers its paths once the service answers."""
    service.down = True
    router = Router("recovery", [FIRST, SECOND], success_when=bool, intelligence=service)
    router.completion(ask(1))

    service.down = False
    decisions = [router.completion(ask(i)).kalibr_decision for i in range(12)]

    assert "fail_open" not in decisions
    assert {p["model_id"] for p in service.list_paths("recovery")["paths"]} == {FIRST, SECOND}


def test_reports_made_during_an_outage_are_stored_by_the_next_report(
    sim_env: ProviderSimulator, service: SwitchableIntelligence
) -> None:
    router = Router("outage_reports", [FIRST, SECOND], intelligence=service)
    first = router.completion(ask(1))
    service.down = True
    router.report(success=False, failure_category="user_unsatisfied")  # no exception

    service.down = False
    second = router.completion(ask(2))
    router.report(success=True)

    outcomes = {o.trace_id: o.success for o in stored_of(service, "outage_reports")}
    assert outcomes == {first.kalibr_trace_id: False, second.kalibr_trace_id: True}


def test_a_failing_decide_falls_back_to_the_first_path(
    sim_env: ProviderSimulator, intel: Intelligence, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = Router("decide_breaks", [FIRST, SECOND], intelligence=intel)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(intel, "decide", broken)
    responses = [router.completion(ask(i)) for i in range(5)]
    router.report(success=True)

    assert {r.model for r in responses} == {FIRST}
    [outcome] = stored_of(intel, "decide_breaks")  # one report for the context's calls
    assert (outcome.model_id, outcome.success) == (FIRST, True)


def test_a_closed_store_never_reaches_the_caller(
    sim_env: ProviderSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    intel = Intelligence(":memory:", seed=7)
    intel.close()

    with caplog.at_level(logging.WARNING, logger="kalibr_core.router"):
        router = Router("closed_store", [FIRST, SECOND], success_when=bool, intelligence=intel)
        response = router.completion(ask(1))
        router.completion(ask(2), force_model=SECOND)

    assert response.model == FIRST
    assert response.choices[0].message.content == "101"
    assert router.flush() == 2  # both outcomes kept
    assert "closed" in caplog.text


def test_outcomes_queued_for_a_failing_store_are_written_once_it_recovers(
    sim_env: ProviderSimulator, intel: Intelligence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Intelligence accepts outcomes but its store cannot write them for a while."""
    router = Router("store_outage", [FIRST, SECOND], success_when=bool, intelligence=intel)
    router.completion(ask(0))
    assert router.flush() == 0

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(intel.store, "record_outcomes", disk_full)
        responses = [router.completion(ask(i)) for i in range(1, 4)]
        assert router.flush() == 3

    assert router.flush() == 0
    stored = {o.trace_id for o in stored_of(intel, "store_outage")}
    assert {r.kalibr_trace_id for r in responses} <= stored
    assert len(stored) == 4
