"""Input validation at every public entry point, and the identity of paths.

Every invalid argument raises ``kalibr_core.ValidationError`` (a ``ValueError``) whose message
says what is wrong, and nothing is stored when validation fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kalibr_core
from kalibr_core import Intelligence, ValidationError, normalise_path

GOAL = "book_meeting"

BAD_GOALS = [
    pytest.param("", id="empty"),
    pytest.param("g" * 129, id="too-long"),
    pytest.param("book meeting", id="space"),
    pytest.param("book/meeting", id="slash"),
    pytest.param("réserver", id="non-ascii"),
    pytest.param("drop;table", id="semicolon"),
    pytest.param(None, id="none"),
    pytest.param(42, id="int"),
]


# -- goals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("goal", BAD_GOALS)
def test_bad_goal_names_are_rejected_everywhere(intel: Intelligence, goal: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: intel.register_path(goal, "gpt-4o"),
        lambda: intel.decide(goal),
        lambda: intel.report_outcome("t1", goal, success=True, model_id="gpt-4o"),
        lambda: intel.update_outcome("t1", goal, success=True),
        lambda: intel.get_policy(goal),
        lambda: intel.get_alternative(goal, exclude_models=[]),
        lambda: intel.stats(goal),
        lambda: intel.get_exploration_config(goal),
        lambda: intel.set_exploration_config(goal, exploration_rate=0.1),
    ]
    if goal is not None:  # None means "every goal" for these two
        calls += [lambda: intel.get_insights(goal), lambda: intel.list_paths(goal)]
    for call in calls:
        with pytest.raises(ValidationError, match="goal") as excinfo:
            call()
        assert isinstance(excinfo.value, ValueError)
        assert excinfo.value.field == "goal"
    assert intel.store.list_goals("default") == []
    assert intel.store.count_outcomes("default") == 0


def test_goal_error_message_says_what_is_accepted(intel: Intelligence) -> None:
    with pytest.raises(ValidationError) as excinfo:
        intel.register_path("book meeting", "gpt-4o")
    message = str(excinfo.value)
    assert "'book meeting'" in message
    assert "1-128 characters" in message


@pytest.mark.parametrize("goal", ["g", "g" * 128, "Book_Meeting-v2.1:eu", "0"])
def test_valid_goal_names_are_accepted(intel: Intelligence, goal: str) -> None:
    assert intel.register_path(goal, "gpt-4o")["goal"] == goal


def test_bad_tenant_and_pipeline_ids_are_rejected(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    with pytest.raises(ValidationError, match="tenant"):
        intel.decide(GOAL, tenant="a b")
    with pytest.raises(ValidationError, match="pipeline_id"):
        intel.decide(GOAL, pipeline_id="a/b")
    with pytest.raises(ValidationError, match="pipeline_id"):
        intel.report_outcome("t", GOAL, success=True, model_id="gpt-4o", pipeline_id="")
    with pytest.raises(ValidationError, match="tenant"):
        Intelligence(":memory:", tenant="")
    assert intel.store.count_outcomes("default") == 0
    assert intel.stats(GOAL)["decisions"] == 0


# -- paths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "match"),
    [
        pytest.param({"tools": ["calendar_api"]}, "model", id="dict-without-model"),
        pytest.param({"model": ""}, "model", id="empty-model"),
        pytest.param({"model": "   "}, "model", id="blank-model"),
        pytest.param({"model": 4}, "model", id="model-not-str"),
        pytest.param({"model": "m" * 257}, "256", id="model-too-long"),
        pytest.param({"model": "gpt-4o", "temperature": 0.3}, "temperature", id="unknown-key"),
        pytest.param({"model": "gpt-4o", "model_id": "gpt-4o-mini"}, "not both", id="model-twice"),
        pytest.param({"model": "gpt-4o", "tools": 7}, "tools", id="tools-int"),
        pytest.param({"model": "gpt-4o", "tools": {"calc"}}, "tools", id="tools-set"),
        pytest.param({"model": "gpt-4o", "tools": ["calc", 3]}, "tool", id="tool-item-int"),
        pytest.param({"model": "gpt-4o", "tools": [""]}, "tool", id="tool-item-empty"),
        pytest.param(
            {"model": "gpt-4o", "tools": ["a"], "tool_id": "b"}, "not both", id="tools-twice"
        ),
        pytest.param({"model": "gpt-4o", "params": [1]}, "params", id="params-list"),
        pytest.param(
            {"model": "gpt-4o", "params": {"t": object()}}, "params", id="params-not-json"
        ),
        pytest.param({"model": "gpt-4o", "params": {"t": float("nan")}}, "params", id="params-nan"),
        pytest.param({"model": "gpt-4o", "risk_level": "extreme"}, "risk_level", id="risk"),
        pytest.param(42, "model string or a dict", id="not-str-or-dict"),
        pytest.param(["gpt-4o"], "model string or a dict", id="list"),
    ],
)
def test_malformed_paths_are_rejected_with_a_clear_message(path: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        normalise_path(GOAL, path)


def test_unknown_path_keys_are_named_with_the_accepted_ones() -> None:
    with pytest.raises(ValidationError) as excinfo:
        normalise_path(GOAL, {"model": "gpt-4o", "temprature": 0.3})
    message = str(excinfo.value)
    assert "temprature" in message
    assert "params" in message  # the accepted keys are listed


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"model_id": ""}, id="empty-model"),
        pytest.param({"model_id": None}, id="none-model"),
        pytest.param({"model_id": "gpt-4o", "tool_id": 5}, id="tool-int"),
        pytest.param({"model_id": "gpt-4o", "tool_id": [1, 2]}, id="tools-ints"),
        pytest.param({"model_id": "gpt-4o", "params": {"f": object()}}, id="params-not-json"),
        pytest.param({"model_id": "gpt-4o", "params": "temperature=0.3"}, id="params-str"),
        pytest.param({"model_id": "gpt-4o", "risk_level": "critical"}, id="risk-level"),
    ],
)
def test_register_path_rejects_bad_input_and_stores_nothing(
    intel: Intelligence, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        intel.register_path(GOAL, **kwargs)
    assert intel.list_paths(include_disabled=True)["paths"] == []


def test_risk_level_error_lists_the_valid_levels(intel: Intelligence) -> None:
    with pytest.raises(ValidationError, match="low, medium, high"):
        intel.register_path(GOAL, "gpt-4o", risk_level="extreme")
    intel.register_path(GOAL, "gpt-4o")
    with pytest.raises(ValidationError, match="task_risk_level"):
        intel.decide(GOAL, task_risk_level="critical")
    assert intel.stats(GOAL)["decisions"] == 0


def test_candidate_and_excluded_models_must_be_lists(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    with pytest.raises(ValidationError, match="candidate_model_ids"):
        intel.decide(GOAL, candidate_model_ids="gpt-4o")
    with pytest.raises(ValidationError, match="candidate_model_ids"):
        intel.decide(GOAL, candidate_model_ids=["gpt-4o", 3])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="exclude_models"):
        intel.get_alternative(GOAL, exclude_models=None)  # type: ignore[arg-type]


# -- outcomes ------------------------------------------------------------------------------------
BAD_OUTCOMES = [
    pytest.param({"trace_id": ""}, "trace_id", id="trace-empty"),
    pytest.param({"trace_id": "has space"}, "trace_id", id="trace-space"),
    pytest.param({"trace_id": "t" * 129}, "trace_id", id="trace-too-long"),
    pytest.param({"trace_id": None}, "trace_id", id="trace-none"),
    pytest.param({"trace_id": 1234}, "trace_id", id="trace-int"),
    pytest.param({"success": 1}, "success", id="success-int"),
    pytest.param({"success": "yes"}, "success", id="success-str"),
    pytest.param({"success": None}, "success", id="neither-success-nor-score"),
    pytest.param({"score": "high"}, "score", id="score-str"),
    pytest.param({"score": float("nan")}, "score", id="score-nan"),
    pytest.param({"score": float("inf")}, "score", id="score-inf"),
    pytest.param({"score": True}, "score", id="score-bool"),
    pytest.param({"failure_category": "bogus"}, "failure_category", id="category"),
    pytest.param({"failure_category": "Timeout"}, "failure_category", id="category-case"),
    pytest.param({"failure_reason": 42}, "failure_reason", id="reason-int"),
    pytest.param({"failure_reason": "x" * 5000}, "failure_reason", id="reason-too-long"),
    pytest.param({"metadata": {"obj": object()}}, "metadata", id="metadata-not-json"),
    pytest.param({"metadata": {"x": float("nan")}}, "metadata", id="metadata-nan"),
    pytest.param({"metadata": ["a"]}, "metadata", id="metadata-list"),
    pytest.param({"metadata": {1: "a"}}, "metadata", id="metadata-int-key"),
    pytest.param({"execution_params": {("t",): 1}}, "execution_params", id="params-tuple-key"),
    pytest.param({"execution_params": "t=1"}, "execution_params", id="params-str"),
    pytest.param({"model_id": 4}, "model_id", id="model-int"),
    pytest.param({"tool_id": 4}, "tool_id", id="tool-int"),
    pytest.param({"cost_usd": -0.01}, "cost_usd", id="cost-negative"),
    pytest.param({"cost_usd": float("nan")}, "cost_usd", id="cost-nan"),
    pytest.param({"cost_usd": "0.01"}, "cost_usd", id="cost-str"),
    pytest.param({"latency_ms": -1}, "latency_ms", id="latency-negative"),
    pytest.param({"latency_ms": float("inf")}, "latency_ms", id="latency-inf"),
    pytest.param({"input_tokens": -1}, "input_tokens", id="tokens-negative"),
    pytest.param({"output_tokens": 1.5}, "output_tokens", id="tokens-float"),
]


@pytest.mark.parametrize(("override", "match"), BAD_OUTCOMES)
def test_bad_outcomes_are_rejected_and_nothing_is_stored(
    intel: Intelligence, override: dict[str, Any], match: str
) -> None:
    path_id = intel.register_path(GOAL, "gpt-4o")["path_id"]
    decision = intel.decide(GOAL)
    kwargs: dict[str, Any] = {
        "trace_id": decision["trace_id"],
        "goal": GOAL,
        "success": True,
        "model_id": "gpt-4o",
        **override,
    }
    with pytest.raises(ValidationError, match=match) as excinfo:
        intel.report_outcome(**kwargs)
    assert isinstance(excinfo.value, ValueError)
    assert intel.store.count_outcomes("default") == 0
    stats = intel.stats(GOAL)
    assert stats["total_outcomes"] == 0
    assert [p["total_outcomes"] for p in stats["paths"] if p["path_id"] == path_id] == [0]


def test_functional_report_rejects_bad_input_too(default_intel: Intelligence) -> None:
    kalibr_core.register_path(GOAL, "gpt-4o")
    with pytest.raises(ValidationError, match="failure_category"):
        kalibr_core.report_outcome("t1", GOAL, success=False, failure_category="oops")
    with pytest.raises(ValidationError, match="cost_usd"):
        kalibr_core.report_outcome("t1", GOAL, success=True, cost_usd=-1)
    assert default_intel.store.count_outcomes("default") == 0


def test_unknown_failure_category_names_the_valid_ones(intel: Intelligence) -> None:
    with pytest.raises(kalibr_core.InvalidFailureCategoryError) as excinfo:
        intel.report_outcome("t1", GOAL, success=False, failure_category="slow")
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert isinstance(error, ValidationError)
    assert "'slow'" in str(error)
    for category in kalibr_core.FAILURE_CATEGORIES:
        assert category in str(error)


@pytest.mark.parametrize("category", kalibr_core.FAILURE_CATEGORIES)
def test_every_failure_category_is_accepted(intel: Intelligence, category: str) -> None:
    result = intel.report_outcome(
        "t1", GOAL, success=False, failure_category=category, model_id="m"
    )
    assert result["status"] == "accepted"
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.failure_category == category


@pytest.mark.parametrize(
    ("given", "stored"), [(1.7, 1.0), (-0.3, 0.0), (0, 0.0), (1, 1.0), (0.25, 0.25)]
)
def test_scores_are_clamped_to_the_unit_interval(
    intel: Intelligence, given: float, stored: float
) -> None:
    intel.register_path(GOAL, "m")
    intel.report_outcome("t1", GOAL, score=given, model_id="m")
    [outcome] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert outcome.score == stored
    assert outcome.value == stored
    assert intel.stats(GOAL)["paths"][0]["lifetime_success_rate"] == stored


def test_update_outcome_validates_like_report_outcome(intel: Intelligence) -> None:
    intel.register_path(GOAL, "m")
    intel.report_outcome("t1", GOAL, success=True, model_id="m", metadata={"a": 1})
    bad: list[dict[str, Any]] = [
        {"success": "no"},
        {"score": float("nan")},
        {"score": "0.5"},
        {"failure_category": "bogus"},
        {"failure_reason": 3},
        {"metadata": {"x": object()}},
        {"metadata": "note"},
    ]
    for kwargs in bad:
        with pytest.raises(ValidationError):
            intel.update_outcome("t1", GOAL, **kwargs)
    with pytest.raises(ValidationError, match="trace_id"):
        intel.update_outcome("", GOAL, success=False)
    [outcome] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert outcome.success is True
    assert outcome.metadata == {"a": 1}
    assert outcome.failure_category is None
    assert outcome.updated_at is None
    assert intel.stats(GOAL)["success_rate"] == 1.0


# -- policy, insights, exploration config ---------------------------------------------------------
@pytest.mark.parametrize("hours", [0, -1, -0.5, "24", True, None, float("nan")])
def test_window_hours_must_be_positive(intel: Intelligence, hours: Any) -> None:
    intel.register_path(GOAL, "m")
    intel.report_outcome("t1", GOAL, success=True, model_id="m")
    with pytest.raises(ValidationError, match="window_hours"):
        intel.get_insights(GOAL, window_hours=hours)
    if hours is not None:  # None means "live posteriors" for the policy
        with pytest.raises(ValidationError, match="window_hours"):
            intel.get_policy(GOAL, window_hours=hours)


@pytest.mark.parametrize(
    ("constraints", "match"),
    [
        pytest.param({"max_tokens": 100}, "max_tokens", id="unknown-key"),
        pytest.param({"maxCostUsd": 0.05}, "maxCostUsd", id="camel-case"),
        pytest.param({"max_cost_usd": -1}, "max_cost_usd", id="negative-cost"),
        pytest.param({"max_latency_ms": "fast"}, "max_latency_ms", id="latency-str"),
        pytest.param({"min_quality": 1.5}, "min_quality", id="quality-above-1"),
        pytest.param({"min_quality": float("nan")}, "constraints", id="quality-nan"),
        pytest.param(["max_cost_usd"], "constraints", id="not-a-dict"),
    ],
)
def test_bad_constraints_are_rejected(intel: Intelligence, constraints: Any, match: str) -> None:
    intel.register_path(GOAL, "m")
    intel.report_outcome("t1", GOAL, success=True, model_id="m")
    with pytest.raises(ValidationError, match=match):
        intel.get_policy(GOAL, constraints=constraints)
    with pytest.raises(ValidationError, match=match):
        intel.get_alternative(GOAL, exclude_models=[], constraints=constraints)


def test_unknown_constraint_error_lists_the_accepted_keys(intel: Intelligence) -> None:
    with pytest.raises(ValidationError) as excinfo:
        intel.get_policy(GOAL, constraints={"max_tokens": 1})
    for key in ("max_cost_usd", "max_latency_ms", "min_quality"):
        assert key in str(excinfo.value)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"exploration_rate": 1.5}, id="rate-above-1"),
        pytest.param({"exploration_rate": -0.1}, id="rate-negative"),
        pytest.param({"exploration_rate": "0.1"}, id="rate-str"),
        pytest.param({"rollback_threshold": 2}, id="rollback-above-1"),
        pytest.param({"min_samples_before_exploit": 0}, id="min-samples-zero"),
        pytest.param({"min_samples_before_exploit": 2.5}, id="min-samples-float"),
        pytest.param({"staleness_days": 0}, id="staleness-zero"),
        pytest.param({"exploration_on_high_risk": "yes"}, id="high-risk-str"),
        pytest.param({"explore_rate": 0.1}, id="unknown-key"),
        pytest.param({"explore_rate": None}, id="unknown-key-none"),
    ],
)
def test_bad_exploration_config_is_rejected_and_not_stored(
    intel: Intelligence, fields: dict[str, Any]
) -> None:
    intel.set_exploration_config(GOAL, exploration_rate=0.2)
    before = intel.get_exploration_config(GOAL)
    with pytest.raises(ValidationError):
        intel.set_exploration_config(GOAL, **fields)
    assert intel.get_exploration_config(GOAL) == before


# -- path identity -------------------------------------------------------------------------------
def test_path_id_is_the_same_for_string_and_dict_forms(intel: Intelligence) -> None:
    forms: list[Any] = [
        "gpt-4o",
        {"model": "gpt-4o"},
        {"model_id": "gpt-4o"},
        {"model": "gpt-4o", "model_id": "gpt-4o"},
        {"model": " gpt-4o "},
        {"model": "gpt-4o", "tools": [], "params": {}},
        {"model": "gpt-4o", "tools": None, "params": None},
    ]
    ids = {normalise_path(GOAL, form).path_id for form in forms}
    assert ids == {intel.register_path(GOAL, "gpt-4o")["path_id"]}


def test_tool_aliases_and_order_do_not_change_the_path(intel: Intelligence) -> None:
    forms: list[Any] = [
        {"model": "gpt-4o", "tools": ["calendar_api", "search"]},
        {"model": "gpt-4o", "tools": ["search", "calendar_api"]},
        {"model": "gpt-4o", "tools": ("search", "calendar_api", "search")},
        {"model": "gpt-4o", "tool_id": ["search", "calendar_api"]},
        {
            "model": "gpt-4o",
            "tools": [
                {"type": "function", "function": {"name": "search", "parameters": {}}},
                "calendar_api",
            ],
        },
    ]
    ids = {normalise_path(GOAL, form).path_id for form in forms}
    assert len(ids) == 1
    registered = intel.register_path(GOAL, "gpt-4o", tool_id=["search", "calendar_api"])
    assert ids == {registered["path_id"]}
    assert registered["tool_id"] == "calendar_api,search"
    assert normalise_path(GOAL, {"model": "gpt-4o", "tool_id": "calc"}).path_id == (
        normalise_path(GOAL, {"model": "gpt-4o", "tools": ["calc"]}).path_id
    )


def test_params_key_order_does_not_matter_but_values_do() -> None:
    a = normalise_path(GOAL, {"model": "m", "params": {"temperature": 0.3, "top_p": 1}})
    b = normalise_path(GOAL, {"model": "m", "params": {"top_p": 1, "temperature": 0.3}})
    c = normalise_path(GOAL, {"model": "m", "params": {"temperature": 0.7, "top_p": 1}})
    assert a.path_id == b.path_id
    assert a.path_id != c.path_id


def test_execution_hints_do_not_change_the_path_identity() -> None:
    plain = normalise_path(GOAL, "gpt-4o")
    hinted = normalise_path(
        GOAL,
        {
            "model": "gpt-4o",
            "provider": "openai",
            "base_url": "http://localhost:1234/v1",
            "api_key_env": "MY_KEY",
            "pricing": {"cost_per_call": 0.01},
            "risk_level": "high",
        },
    )
    assert hinted.path_id == plain.path_id
    assert hinted.risk_level == "high"
    assert hinted.extra["provider"] == "openai"


def test_different_goals_models_and_tools_give_different_paths() -> None:
    ids = {
        normalise_path("a", "gpt-4o").path_id,
        normalise_path("b", "gpt-4o").path_id,
        normalise_path("a", "gpt-4o-mini").path_id,
        normalise_path("a", {"model": "gpt-4o", "tools": ["calc"]}).path_id,
        normalise_path("a", {"model": "gpt-4o", "tools": ["calc", "web"]}).path_id,
    }
    assert len(ids) == 5
    for path_id in ids:
        assert path_id.startswith("path_")


def test_path_id_is_the_same_in_another_process() -> None:
    spec = {"model": "gpt-4o", "tools": ["search", "calendar_api"], "params": {"b": 2, "a": 1}}
    reordered = {"params": {"a": 1, "b": 2}, "tools": ["calendar_api", "search"], "model": "gpt-4o"}
    code = (
        "import json, sys\n"
        "from kalibr_core import normalise_path\n"
        "spec = json.loads(sys.argv[1])\n"
        "print(normalise_path('book_meeting', spec).path_id)\n"
        "print(normalise_path('book_meeting', 'gpt-4o').path_id)\n"
    )
    root = Path(kalibr_core.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(reordered)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    there = result.stdout.split()
    assert there == [
        normalise_path(GOAL, spec).path_id,
        normalise_path(GOAL, "gpt-4o").path_id,
    ]


# -- trace ids -----------------------------------------------------------------------------------
def test_trace_ids_are_unique_across_threads_and_batches() -> None:
    import re
    import threading

    from kalibr_core._domain import new_trace_id

    per_thread, threads = 2_000, 8  # many batches of 256 each, read concurrently
    found: list[list[str]] = [[] for _ in range(threads)]

    def take(bucket: list[str]) -> None:
        bucket.extend(new_trace_id() for _ in range(per_thread))

    workers = [threading.Thread(target=take, args=(bucket,)) for bucket in found]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ids = [trace_id for bucket in found for trace_id in bucket]
    assert len(set(ids)) == per_thread * threads
    assert all(re.fullmatch(r"[0-9a-f]{32}", trace_id) for trace_id in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_does_not_reuse_its_parents_trace_ids() -> None:
    from kalibr_core._domain import new_trace_id

    new_trace_id()  # the parent has read a batch and has ids left in it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave without running the test teardown
        os.close(read_end)
        os.write(write_end, "".join(new_trace_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(new_trace_id() for _ in range(4))
    assert len(child) == 128
    assert {child[i : i + 32] for i in range(0, 128, 32)}.isdisjoint(
        {parent[i : i + 32] for i in range(0, 128, 32)}
    )
