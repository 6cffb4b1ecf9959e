"""LangChain's own unit conformance suite for chat models (no provider is called)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kalibr_core import Intelligence
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_kalibr import ChatKalibr

SEED = 20240611


class TestChatKalibrUnit(ChatModelUnitTests):
    """``ChatModelUnitTests`` as LangChain ships it."""

    @pytest.fixture(autouse=True)
    def _intelligence(self) -> Iterator[None]:
        self.intelligence = Intelligence(":memory:", seed=SEED)
        yield
        self.intelligence.close()

    @property
    def chat_model_class(self) -> type[ChatKalibr]:
        return ChatKalibr

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "goal": "conformance",
            "paths": ["gpt-4o-mini", "claude-haiku-4-5"],
            "intelligence": self.intelligence,
        }
