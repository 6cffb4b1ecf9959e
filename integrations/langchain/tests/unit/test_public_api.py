"""The public surface of langchain_kalibr, and ``Router.as_langchain()``."""

from __future__ import annotations

import pytest
from kalibr_core import Intelligence
from kalibr_core.router import Router

import langchain_kalibr
from langchain_kalibr import ChatKalibr

EXPECTED_ALL = {
    "ChatKalibr",
    "KalibrCallbackHandler",
    "KalibrContextOverflowError",
    "KalibrModelAPIError",
    "KalibrModelAuthenticationError",
    "KalibrModelInvalidRequestError",
    "KalibrModelNotFoundError",
    "KalibrModelRateLimitError",
    "KalibrModelTimeoutError",
    "OutcomeParser",
    "__version__",
    "report_traces",
    "with_outcome",
}


def test_the_public_names_are_pinned() -> None:
    assert set(langchain_kalibr.__all__) == EXPECTED_ALL
    assert len(langchain_kalibr.__all__) == len(EXPECTED_ALL), "duplicates in __all__"
    for name in langchain_kalibr.__all__:
        assert getattr(langchain_kalibr, name) is not None


def test_as_langchain_returns_a_chat_model_routed_by_that_router(intel: Intelligence) -> None:
    router = Router("summarize", ["gpt-4o", "claude-sonnet-4-6"], intelligence=intel)

    llm = router.as_langchain(temperature=0.2, max_tokens=64)

    assert isinstance(llm, ChatKalibr)
    assert llm.router is router
    assert (llm.goal, llm.temperature, llm.max_tokens) == ("summarize", 0.2, 64)


def test_a_chat_model_needs_a_router_or_a_goal_and_paths(intel: Intelligence) -> None:
    router = Router("g", ["gpt-4o"], intelligence=intel)
    with pytest.raises(ValueError, match="router=Router"):
        ChatKalibr(goal="g")
    with pytest.raises(ValueError, match="not both"):
        ChatKalibr(router=router, goal="g", paths=["gpt-4o"])


def test_goal_and_paths_build_a_router_with_the_router_options(intel: Intelligence) -> None:
    def judge(output: str) -> bool:
        return bool(output)

    llm = ChatKalibr(
        goal="extract",
        paths=["gpt-4o", {"model": "claude-sonnet-4-6", "params": {"temperature": 0}}],
        success_when=judge,
        pipeline_id="billing",
        intelligence=intel,
    )

    router = llm.router
    assert (router.goal, router.success_when, router.pipeline_id) == ("extract", judge, "billing")
    assert [path.model_id for path in router.paths] == ["gpt-4o", "claude-sonnet-4-6"]
    assert router.intelligence is intel
