"""The public surface of kalibr_core: names, failure categories, errors, functional API."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

import kalibr_core
from kalibr_core import _api as api

EXPECTED_ALL = {
    "FAILURE_CATEGORIES",
    "AuthenticationError",
    "ConfigurationError",
    "ContextExceededError",
    "EmptyResponseError",
    "EngineTuning",
    "ExplorationConfig",
    "Intelligence",
    "IntelligenceUnavailableError",
    "InvalidFailureCategoryError",
    "KalibrError",
    "NoPathAvailableError",
    "NotFoundError",
    "Outbox",
    "PathSpec",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RemoteBudget",
    "RemoteIntelligence",
    "StoreError",
    "ValidationError",
    "__version__",
    "configure",
    "decide",
    "disable_path",
    "enable_path",
    "flush",
    "get_alternative",
    "get_exploration_config",
    "get_insights",
    "get_intelligence",
    "get_policy",
    "get_stats",
    "list_paths",
    "normalise_path",
    "register_path",
    "report_outcome",
    "set_exploration_config",
    "update_outcome",
}

SPEC_FAILURE_CATEGORIES = [
    "timeout",
    "context_exceeded",
    "tool_error",
    "rate_limited",
    "validation_failed",
    "hallucination_detected",
    "user_unsatisfied",
    "empty_response",
    "malformed_output",
    "auth_error",
    "provider_error",
    "healed",
    "unknown",
]


def test_all_is_exactly_the_public_surface() -> None:
    assert set(kalibr_core.__all__) == EXPECTED_ALL
    assert len(kalibr_core.__all__) == len(EXPECTED_ALL), "duplicates in __all__"
    for name in kalibr_core.__all__:
        assert hasattr(kalibr_core, name), name


def test_star_import_exports_only_all() -> None:
    namespace: dict[str, object] = {}
    exec("from kalibr_core import *", namespace)
    exported = {name for name in namespace if name != "__builtins__"}
    assert exported == EXPECTED_ALL


def test_version_is_a_version_string() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", kalibr_core.__version__)


def test_failure_categories_are_the_13_of_the_spec_in_order() -> None:
    assert list(kalibr_core.FAILURE_CATEGORIES) == SPEC_FAILURE_CATEGORIES
    assert len(kalibr_core.FAILURE_CATEGORIES) == 13
    assert "healed" in kalibr_core.FAILURE_CATEGORIES


def test_failure_categories_cannot_be_mutated_by_a_caller() -> None:
    with pytest.raises((TypeError, AttributeError)):
        kalibr_core.FAILURE_CATEGORIES.append("oops")  # type: ignore[attr-defined]


def test_error_hierarchy_is_rooted_and_catchable_as_builtins() -> None:
    k = kalibr_core
    for error in (
        k.ValidationError,
        k.InvalidFailureCategoryError,
        k.NotFoundError,
        k.NoPathAvailableError,
        k.StoreError,
        k.IntelligenceUnavailableError,
        k.ConfigurationError,
        k.ProviderError,
        k.ProviderTimeoutError,
        k.RateLimitedError,
        k.AuthenticationError,
        k.ContextExceededError,
        k.EmptyResponseError,
    ):
        assert issubclass(error, k.KalibrError), error
    assert issubclass(k.ValidationError, ValueError)
    assert issubclass(k.InvalidFailureCategoryError, k.ValidationError)
    assert issubclass(k.NotFoundError, LookupError)
    assert issubclass(k.NoPathAvailableError, k.NotFoundError)
    for error in (
        k.ProviderTimeoutError,
        k.RateLimitedError,
        k.AuthenticationError,
        k.ContextExceededError,
        k.EmptyResponseError,
    ):
        assert issubclass(error, k.ProviderError)
        assert error.failure_category in k.FAILURE_CATEGORIES


def test_errors_carry_their_context() -> None:
    error = kalibr_core.NotFoundError("no outcome", goal="g", trace_id="t1")
    assert error.goal == "g"
    assert error.trace_id == "t1"
    assert error.context() == {"goal": "g", "trace_id": "t1"}
    assert str(error) == "no outcome"


def test_functional_api_uses_the_configured_default(
    default_intel: kalibr_core.Intelligence,
) -> None:
    assert kalibr_core.get_intelligence() is default_intel
    registered = kalibr_core.register_path("extract_company", "gpt-4o")
    decision = kalibr_core.decide("extract_company")
    assert decision["path_id"] == registered["path_id"]
    accepted = kalibr_core.report_outcome(decision["trace_id"], "extract_company", success=True)
    assert accepted == {
        "status": "accepted",
        "trace_id": decision["trace_id"],
        "goal": "extract_company",
        "path_id": registered["path_id"],
    }
    updated = kalibr_core.update_outcome(decision["trace_id"], "extract_company", success=False)
    assert updated["fields_updated"] == ["success"]
    kalibr_core.flush()
    assert default_intel.store.get_decision("default", decision["trace_id"]) is not None
    stats = kalibr_core.get_stats("extract_company")
    assert stats["total_outcomes"] == 1
    assert stats["success_rate"] == 0.0
    assert kalibr_core.get_policy("extract_company")["recommended_model"] == "gpt-4o"
    assert kalibr_core.list_paths("extract_company")["paths"][0]["model_id"] == "gpt-4o"
    assert kalibr_core.get_insights()["goals"][0]["goal"] == "extract_company"
    kalibr_core.set_exploration_config("extract_company", exploration_rate=0.2)
    assert kalibr_core.get_exploration_config("extract_company")["exploration_rate"] == 0.2
    kalibr_core.register_path("extract_company", "claude-sonnet-4-20250514")
    alternative = kalibr_core.get_alternative("extract_company", exclude_models=["gpt-4o"])
    assert alternative["recommended_model"] == "claude-sonnet-4-20250514"
    assert kalibr_core.disable_path(registered["path_id"])["status"] == "disabled"
    assert kalibr_core.enable_path(registered["path_id"])["status"] == "enabled"


def test_configure_replaces_and_closes_the_previous_default(
    default_intel: kalibr_core.Intelligence,
) -> None:
    kalibr_core.register_path("g", "m")
    replacement = kalibr_core.configure(store=":memory:", tenant="acme")
    try:
        assert kalibr_core.get_intelligence() is replacement
        assert replacement.tenant == "acme"
        # The new default starts empty; the old one was flushed and closed.
        with pytest.raises(kalibr_core.NoPathAvailableError):
            kalibr_core.decide("g")
        with pytest.raises(kalibr_core.StoreError):
            default_intel.register_path("g", "m")
    finally:
        replacement.close()


def test_default_is_created_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_db: str, default_intel: kalibr_core.Intelligence
) -> None:
    monkeypatch.setenv("KALIBR_STORE_URL", f"sqlite:///{tmp_db}")
    monkeypatch.setenv("KALIBR_TENANT_ID", "acme")
    with api._default.lock:
        api._default.instance = None
    created = kalibr_core.get_intelligence()
    try:
        assert created is kalibr_core.get_intelligence()
        assert created.tenant == "acme"
        kalibr_core.register_path("g", "m")
        assert Path(tmp_db).exists()
    finally:
        with api._default.lock:
            api._default.instance = default_intel
        created.close()


def test_flush_without_a_default_is_harmless(default_intel: kalibr_core.Intelligence) -> None:
    with api._default.lock:
        api._default.instance = None
    try:
        kalibr_core.flush()
        assert api._default.instance is None
    finally:
        with api._default.lock:
            api._default.instance = default_intel


@pytest.mark.parametrize(
    "module",
    [
        "kalibr_core",
        "kalibr_core._intelligence",
        "kalibr_core.engine._config",
        "kalibr_core.engine._router",
        "kalibr_core.store._sqlite",
        "kalibr_core.engine._timeline",
    ],
)
def test_docstring_examples_run(module: str, default_intel: kalibr_core.Intelligence) -> None:
    result = doctest.testmod(importlib.import_module(module), verbose=False)
    assert result.failed == 0
    assert result.attempted > 0
