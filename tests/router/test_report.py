"""Outcomes: judged automatically (success_when / score_when) or reported by the caller."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from kalibr_core import FAILURE_CATEGORIES, KalibrError, NotFoundError
from kalibr_core.router import router_for_trace
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    check_answer,
    company_extraction_examples,
)

pytestmark = pytest.mark.simulator

EXAMPLE = company_extraction_examples()[3]  # "... I'm Lena from Notion."
SUM = "What is 17 + 25?"


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def extracts(output: str) -> bool:
    return check_answer(EXAMPLE.prompt, output)


# -- automatic outcomes -------------------------------------------------------------------------
def test_success_when_reports_every_completion(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    sim_env.set_script("gpt-4o-wrong", ModelScript(accuracy=0.0))
    router = make_router("auto_success", ["gpt-4o", "gpt-4o-wrong"], success_when=extracts)

    right = router.completion(ask(EXAMPLE.prompt), force_model="gpt-4o")
    wrong = router.completion(ask(EXAMPLE.prompt), force_model="gpt-4o-wrong")

    outcomes = {o.trace_id: o for o in stored("auto_success")}
    assert len(outcomes) == 2
    assert outcomes[right.kalibr_trace_id].success is True
    assert outcomes[right.kalibr_trace_id].failure_category is None
    assert outcomes[wrong.kalibr_trace_id].success is False
    assert outcomes[wrong.kalibr_trace_id].failure_category == "validation_failed"


@pytest.mark.parametrize(
    ("raw", "score", "success"),
    [(0.8, 0.8, True), (1.7, 1.0, True), (-0.4, 0.0, False), (0.3, 0.3, False)],
)
def test_score_when_is_clamped_and_decides_success(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    raw: float,
    score: float,
    success: bool,
) -> None:
    router = make_router("auto_score", ["gpt-4o"], score_when=lambda _: raw)
    router.completion(ask(SUM))
    [outcome] = stored("auto_score")
    assert (outcome.score, outcome.success) == (score, success)


def test_score_when_wins_over_success_when(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    asked: list[str] = []

    def never(output: str) -> bool:
        asked.append(output)
        return False

    router = make_router("score_wins", ["gpt-4o"], success_when=never, score_when=lambda _: 0.9)
    router.completion(ask(SUM))
    [outcome] = stored("score_wins")
    assert (outcome.success, outcome.score) == (True, 0.9)


def test_without_callbacks_nothing_is_stored_until_report(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("manual", ["gpt-4o"])
    response = router.completion(ask(SUM))
    assert stored("manual") == []

    router.report(
        success=False,
        reason="the number was right but the format was not",
        score=0.2,
        failure_category="malformed_output",
    )

    [outcome] = stored("manual")
    assert outcome.trace_id == response.kalibr_trace_id
    assert (outcome.success, outcome.score, outcome.failure_category) == (
        False,
        0.2,
        "malformed_output",
    )
    assert outcome.failure_reason == "the number was right but the format was not"
    assert outcome.cost_usd == pytest.approx(response.kalibr_cost_usd)
    assert outcome.output_tokens == response.usage.completion_tokens


def test_a_report_score_is_clamped(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("manual_clamp", ["gpt-4o"])
    router.completion(ask(SUM))
    router.report(success=True, score=3.5)
    [outcome] = stored("manual_clamp")
    assert outcome.score == 1.0


def test_an_empty_answer_is_an_empty_response_failure(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    sim_env.set_script("gpt-4o-empty", ModelScript(empty=1.0))
    sim_env.set_script("claude-haiku-4-5-empty", ModelScript(empty=1.0))
    plain = make_router("empty_plain", ["gpt-4o-empty", "claude-haiku-4-5-empty"])
    judged = make_router("empty_judged", ["gpt-4o-empty"], success_when=extracts)

    for model in ("gpt-4o-empty", "claude-haiku-4-5-empty"):
        response = plain.completion(ask(SUM), force_model=model)
        assert response.choices[0].message.content == ""
    judged.completion(ask(EXAMPLE.prompt))

    for goal, count in (("empty_plain", 2), ("empty_judged", 1)):
        outcomes = stored(goal)
        assert len(outcomes) == count
        assert {(o.success, o.failure_category) for o in outcomes} == {(False, "empty_response")}


# -- one outcome per call -------------------------------------------------------------------
def test_a_second_report_warns_and_is_ignored(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("twice", ["gpt-4o"])
    router.completion(ask(SUM))
    router.report(success=True)

    with pytest.warns(UserWarning, match="already reported"):
        router.report(success=False, failure_category="user_unsatisfied")

    [outcome] = stored("twice")
    assert outcome.success is True


def test_a_second_report_by_trace_id_warns_and_is_ignored(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("twice_by_id", ["gpt-4o"])
    response = router.completion(ask(SUM))
    router.report(success=True, trace_id=response.kalibr_trace_id)

    with pytest.warns(UserWarning, match="already reported"):
        router.report(success=False, trace_id=response.kalibr_trace_id)

    assert [o.success for o in stored("twice_by_id")] == [True]


def test_reporting_an_automatically_judged_call_warns_and_is_ignored(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("auto_then_manual", ["gpt-4o"], success_when=lambda _: True)
    router.completion(ask(SUM))

    with pytest.warns(UserWarning, match="already reported"):
        router.report(success=False)

    assert [o.success for o in stored("auto_then_manual")] == [True]


def test_a_call_after_a_report_by_trace_id_gets_its_own_outcome(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("by_id_then_context", ["gpt-4o"])
    first = router.completion(ask(SUM))
    router.report(success=True, trace_id=first.kalibr_trace_id)
    second = router.completion(ask(SUM))

    router.report(success=False, failure_category="user_unsatisfied")

    outcomes = {o.trace_id: o.success for o in stored("by_id_then_context")}
    assert outcomes == {first.kalibr_trace_id: True, second.kalibr_trace_id: False}


def test_report_before_any_completion_raises(make_router: Any) -> None:
    router = make_router("too_early", ["gpt-4o"])
    with pytest.raises(KalibrError, match="before any completion"):
        router.report(success=True)


def test_report_in_another_thread_sees_none_of_this_threads_calls(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("other_thread", ["gpt-4o"])
    response = router.completion(ask(SUM))
    errors: list[BaseException] = []

    def report_elsewhere() -> None:
        try:
            router.report(success=True)
        except KalibrError as exc:
            errors.append(exc)
        router.report(success=True, trace_id=response.kalibr_trace_id)  # explicit: fine

    worker = threading.Thread(target=report_elsewhere)
    worker.start()
    worker.join()

    assert len(errors) == 1
    assert [o.trace_id for o in stored("other_thread")] == [response.kalibr_trace_id]


def test_report_for_an_unknown_trace_raises_not_found(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    router = make_router("unknown_trace", ["gpt-4o"])
    other = make_router("unknown_trace_other", ["gpt-4o"])
    foreign = other.completion(ask(SUM))

    with pytest.raises(NotFoundError, match="0" * 32):
        router.report(success=True, trace_id="0" * 32)
    with pytest.raises(LookupError):
        router.report(success=True, trace_id=foreign.kalibr_trace_id)


def test_an_invalid_failure_category_lists_the_valid_ones(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("bad_category", ["gpt-4o"])
    router.completion(ask(SUM))

    with pytest.raises(ValueError, match="slow") as caught:
        router.report(success=False, failure_category="slow")

    for category in FAILURE_CATEGORIES:
        assert category in str(caught.value)
    router.report(success=False, failure_category="timeout")  # the call is still reportable
    assert [o.failure_category for o in stored("bad_category")] == ["timeout"]


# -- conversations ------------------------------------------------------------------------------
def test_a_forced_conversation_gets_one_outcome_per_path_used(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("conversation", ["gpt-4o", "claude-sonnet-4-6"])
    conversation: list[dict[str, Any]] = [{"role": "user", "content": "I need help with 6 * 7"}]

    first = router.completion(conversation)
    model = first.model
    other = "claude-sonnet-4-6" if model == "gpt-4o" else "gpt-4o"
    conversation.append({"role": "assistant", "content": first.choices[0].message.content})
    conversation.append({"role": "user", "content": "That didn't work; what is 6 * 7?"})
    second = router.completion(conversation, force_model=model)
    conversation.append({"role": "assistant", "content": second.choices[0].message.content})
    conversation.append({"role": "user", "content": "Ask someone else: 6 * 7?"})
    third = router.completion(conversation, force_model=other)
    router.report(success=True)

    outcomes = stored("conversation")
    assert sorted(o.model_id for o in outcomes) == sorted([model, other])
    assert {o.trace_id for o in outcomes} == {first.kalibr_trace_id, third.kalibr_trace_id}
    assert all(o.success for o in outcomes)
    assert second.kalibr_decision == third.kalibr_decision == "forced"
    # Both paths learned from the conversation: one outcome each.
    learned = {
        p["model_id"]: p["total_outcomes"]
        for p in router.intelligence.stats("conversation")["paths"]
    }
    assert learned == {model: 1, other: 1}


def test_force_model_outside_the_paths_is_still_recorded(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("forced_outside", ["gpt-4o"], success_when=lambda _: True)
    before = len(sim_env.records("claude-haiku-4-5"))

    response = router.completion(ask(SUM), force_model="claude-haiku-4-5")

    assert response.model == "claude-haiku-4-5"
    assert len(sim_env.records("claude-haiku-4-5")) == before + 1
    [outcome] = stored("forced_outside")
    assert (outcome.model_id, outcome.success, outcome.path_id) == ("claude-haiku-4-5", True, None)


def test_session_and_pipeline_are_recorded_with_each_outcome(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KALIBR_SESSION_ID", "from-env")
    by_env = make_router("session", ["gpt-4o"], success_when=bool)
    explicit = make_router(
        "session", ["gpt-4o"], success_when=bool, session_id="chat-7", pipeline_id="support"
    )
    by_env.completion(ask(SUM))
    explicit.completion(ask(SUM))

    first, second = stored("session")
    assert first.metadata is not None
    assert second.metadata is not None
    assert (first.metadata["session_id"], first.pipeline_id) == ("from-env", "")
    assert (second.metadata["session_id"], second.pipeline_id) == ("chat-7", "support")


# -- a group of calls tracked by an adapter (trace_ids) -----------------------------------------
def test_trace_ids_report_a_group_from_another_thread_one_outcome_per_path(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("group", ["gpt-4o", "claude-haiku-4-5"])
    calls = [
        router.completion(ask(SUM), force_model="gpt-4o"),
        router.completion(ask(SUM), force_model="gpt-4o"),
        router.completion(ask(SUM), force_model="claude-haiku-4-5"),
    ]
    outside = router.completion(ask(SUM), force_model="gpt-4o")

    reporter = threading.Thread(
        target=router.report,
        kwargs={
            "success": False,
            "score": 0.25,
            "failure_category": "hallucination_detected",
            "trace_ids": [c.kalibr_trace_id for c in calls],
        },
    )
    reporter.start()
    reporter.join()

    outcomes = {o.trace_id: o for o in stored("group")}
    assert set(outcomes) == {calls[0].kalibr_trace_id, calls[2].kalibr_trace_id}
    assert {(o.model_id, o.score, o.failure_category) for o in outcomes.values()} == {
        ("gpt-4o", 0.25, "hallucination_detected"),
        ("claude-haiku-4-5", 0.25, "hallucination_detected"),
    }
    router.report(success=True)  # this thread's episode: only the call outside the group is left
    assert stored("group")[-1].trace_id == outside.kalibr_trace_id


def test_trace_ids_skip_calls_already_judged_without_a_warning(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("group_judged", ["gpt-4o"], success_when=lambda _: True)
    response = router.completion(ask(SUM))

    router.report(success=False, trace_ids=[response.kalibr_trace_id])  # no warning: ignored

    assert [o.success for o in stored("group_judged")] == [True]


def test_trace_ids_are_validated(sim_env: ProviderSimulator, make_router: Any) -> None:
    router = make_router("group_invalid", ["gpt-4o"])
    response = router.completion(ask(SUM))
    with pytest.raises(NotFoundError):
        router.report(success=True, trace_ids=[response.kalibr_trace_id, "0" * 32])
    with pytest.raises(KalibrError, match="not both"):
        router.report(success=True, trace_id=response.kalibr_trace_id, trace_ids=[])
    with pytest.raises(KalibrError, match="list of trace ids"):
        router.report(success=True, trace_ids=response.kalibr_trace_id)  # type: ignore[arg-type]


def test_router_for_trace_finds_the_router_that_issued_a_call(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    """Code holding only a response (a framework's parser) can report against its call."""
    first = make_router("issuer_one", ["gpt-4o"])
    second = make_router("issuer_two", ["gpt-4o"])
    earlier = first.completion(ask(SUM))
    response = second.completion(ask(SUM))

    assert router_for_trace(earlier.kalibr_trace_id) is first
    found = router_for_trace(response.kalibr_trace_id)
    assert found is second
    found.report(success=False, trace_id=response.kalibr_trace_id)
    assert [o.trace_id for o in stored("issuer_two")] == [response.kalibr_trace_id]
    assert router_for_trace("0" * 32) is None


def test_router_for_trace_does_not_keep_routers_alive(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    router = make_router("issuer_gone", ["gpt-4o"])
    trace_id = router.completion(ask(SUM)).kalibr_trace_id
    del router
    gc.collect()

    assert router_for_trace(trace_id) is None


def test_an_episode_that_is_never_reported_keeps_its_latest_calls_only() -> None:
    # A context that calls completion() in a loop and never report()s (it reports by trace id,
    # or not at all): each call must not cost more as calls pile up.
    from kalibr_core._domain import new_trace_id, normalise_path
    from kalibr_core.router._outcomes import EPISODE_LIMIT, Trace, TraceBook

    book = TraceBook()
    path = normalise_path("episodes", "gpt-4o")

    def call() -> Trace:
        trace = Trace(new_trace_id(), path, path.path_id, "optimal")
        book.add(trace)
        return trace

    calls = [call() for _ in range(EPISODE_LIMIT + 40)]
    assert [t.trace_id for t in book.episode()] == [t.trace_id for t in calls[-EPISODE_LIMIT:]]
    assert book.get(calls[0].trace_id) is calls[0]  # still reportable by its trace id

    for trace in calls:  # reported one by one (success_when): the episode shrinks to the next
        book.claim(trace, "success")
    latest = call()
    assert book.episode() == [latest]
