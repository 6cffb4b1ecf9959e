"""The provider simulator for the whole session, with every provider SDK pointed at it.

The real ``openai`` and ``anthropic`` SDKs talk to it over loopback HTTP: nothing leaves the
machine and no key is needed. Tests that need a behaviour (failures, wrong answers) give a
model name of their own a script with ``sim.set_script``, so scripts and request counters
never leak between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kalibr_core import Intelligence
from kalibr_core.simulator import ProviderSimulator, _server

from langchain_kalibr import ChatKalibr

SEED = 20240611

_CLEARED = ("KALIBR_SESSION_ID", "KALIBR_PROVIDER_MAX_RETRIES", "LANGSMITH_TRACING")


@pytest.fixture(scope="session")
def sim() -> Iterator[ProviderSimulator]:
    """A provider simulator on a free loopback port; the SDKs' environment points at it.

    The listen backlog is raised from socketserver's 5: concurrent batches open many
    connections at once, and a real provider's backlog is far larger.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_server._Server, "request_queue_size", 128)
        simulator = ProviderSimulator(seed=SEED).start()
        patch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
        patch.setenv("OPENAI_API_KEY", "sim-key")
        patch.setenv("ANTHROPIC_BASE_URL", simulator.anthropic_base_url)
        patch.setenv("ANTHROPIC_API_KEY", "sim-key")
        for name in _CLEARED:
            patch.delenv(name, raising=False)
        try:
            yield simulator
        finally:
            simulator.stop()


@pytest.fixture(autouse=True)
def _simulated_providers(sim: ProviderSimulator) -> ProviderSimulator:
    """Every integration test runs against the simulator."""
    return sim


MakeLLM = Callable[..., ChatKalibr]


@pytest.fixture
def make_llm(intel: Intelligence) -> MakeLLM:
    """``make_llm(goal, paths, **options)``: a ChatKalibr routing with the test's Intelligence."""

    def make(goal: str, paths: list[Any], **options: Any) -> ChatKalibr:
        return ChatKalibr(goal=goal, paths=paths, intelligence=intel, **options)

    return make
