"""LangChain's own conformance suite for chat models, offline against the provider simulator.

The model routes between an OpenAI and an Anthropic path, so every standard test exercises
both wire formats through the Router (tool calls, tool messages, streaming, usage).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kalibr_core import Intelligence
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_kalibr import ChatKalibr

SEED = 20240611
PATHS = ["gpt-4o-mini", "claude-haiku-4-5"]


class TestChatKalibrIntegration(ChatModelIntegrationTests):
    """``ChatModelIntegrationTests`` as LangChain ships it; see the overrides for why."""

    @pytest.fixture(autouse=True)
    def _intelligence(self) -> Iterator[None]:
        # A fresh in-memory Intelligence per test: nothing learnt leaks between tests.
        self.intelligence = Intelligence(":memory:", seed=SEED)
        yield
        self.intelligence.close()

    @property
    def chat_model_class(self) -> type[ChatKalibr]:
        return ChatKalibr

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"goal": "conformance", "paths": PATHS, "intelligence": self.intelligence}

    @property
    def model_override_value(self) -> str:
        # ``model=`` forces a path (force_model): here the Anthropic one.
        return PATHS[1]

    @property
    def supports_anthropic_inputs(self) -> bool:
        # Anthropic-style history (tool_use and thinking blocks, Anthropic tool dicts) is
        # converted to OpenAI's format, which the Router maps back for Anthropic paths.
        return True

    # Left at the suite's defaults, so their tests skip:
    # * supports_json_mode: Anthropic has no JSON mode, and the model routes to Claude too
    #   (json_mode on an OpenAI path is tested in test_parsers.py);
    # * image, PDF and audio inputs: those tests download their inputs from the internet,
    #   and this suite runs offline;
    # * enable_vcr_tests: nothing to record, the simulator is local.
