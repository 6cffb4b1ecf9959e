"""Fixtures: the provider simulator with the SDKs pointed at it, a fresh Intelligence, and
LlamaIndex kept offline and isolated.

Nothing leaves the machine: every ``Kalibr`` call reaches the simulator over loopback through
the real provider SDKs; embeddings come from :class:`WordHashEmbedding` (local and
deterministic, so retrieval finds the document that shares the query's words), and
LlamaIndex's tokenizer is a whitespace split, so no tiktoken encoding is ever loaded.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import llama_index.core
import pytest
from kalibr_core import Intelligence
from kalibr_core import _api as kalibr_api
from kalibr_core.router import Router
from kalibr_core.simulator import ProviderSimulator
from kalibr_core.store import OutcomeRecord
from llama_index.core import Settings
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.instrumentation import get_dispatcher

from llama_index.llms.kalibr import Kalibr, KalibrEventHandler

SEED = 20240611
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    re.findall(r"\w+", "a an and are as at be by for from in is it of on or the to what who")
)

MakeLLM = Callable[..., Kalibr]
Stored = Callable[[str], list[OutcomeRecord]]


class WordHashEmbedding(BaseEmbedding):
    """Bag-of-words embeddings by feature hashing: texts sharing words are close."""

    dimensions: int = 256

    @classmethod
    def class_name(cls) -> str:
        return "WordHashEmbedding"

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            if word not in _STOP:
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                vector[int.from_bytes(digest, "big") % self.dimensions] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


@pytest.fixture(autouse=True)
def offline_llama_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local embeddings and tokenizer for LlamaIndex; its global Settings restored afterwards.

    ``Settings`` keeps its LLM and embedding model in private attributes, patched here so a
    test that sets ``Settings.llm`` leaves nothing behind.
    """
    monkeypatch.setattr(llama_index.core, "global_tokenizer", str.split)
    monkeypatch.setattr(Settings, "_llm", None)
    monkeypatch.setattr(Settings, "_embed_model", WordHashEmbedding())
    monkeypatch.setattr(Settings, "_tokenizer", None)


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    """A provider simulator on a free loopback port, shared by the tests of one module."""
    with ProviderSimulator(seed=SEED) as simulator:
        yield simulator


@pytest.fixture
def sim_env(sim: ProviderSimulator, monkeypatch: pytest.MonkeyPatch) -> ProviderSimulator:
    """The OpenAI and Anthropic SDKs pointed at the simulator (dummy keys)."""
    monkeypatch.setenv("OPENAI_BASE_URL", sim.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sim-key")
    for name in ("KALIBR_SESSION_ID", "KALIBR_PROVIDER_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    return sim


@pytest.fixture
def intel() -> Iterator[Intelligence]:
    """A fresh in-memory Intelligence with seeded sampling, closed after the test."""
    instance = Intelligence(":memory:", seed=SEED)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def default_intel() -> Iterator[Intelligence]:
    """The process-wide Intelligence as a fresh in-memory one; the previous one comes back.

    For ``Kalibr(goal=..., paths=[...])`` without a router: it reports to the default.
    """
    with kalibr_api._default.lock:
        previous, kalibr_api._default.instance = kalibr_api._default.instance, None
    fresh = kalibr_api.configure(store=":memory:", seed=SEED)
    try:
        yield fresh
    finally:
        with kalibr_api._default.lock:
            kalibr_api._default.instance = previous
        fresh.close()


@pytest.fixture
def make_llm(intel: Intelligence) -> MakeLLM:
    """``make_llm(goal, paths, **router_kwargs)``: a Kalibr LLM deciding with ``intel``."""

    def make(
        goal: str, paths: list[Any], llm_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> Kalibr:
        router = Router(goal, paths, intelligence=intel, **kwargs)
        return Kalibr(router=router, **(llm_kwargs or {}))

    return make


@pytest.fixture
def stored(intel: Intelligence) -> Stored:
    """``stored(goal)``: the outcomes stored for a goal, in order (after a flush)."""

    def outcomes(goal: str) -> list[OutcomeRecord]:
        intel.flush()
        return intel.store.outcomes_in_window(intel.tenant, goal, 0)

    return outcomes


@pytest.fixture
def handler() -> Iterator[KalibrEventHandler]:
    """A KalibrEventHandler on LlamaIndex's root dispatcher, removed after the test."""
    root = get_dispatcher()
    instance = KalibrEventHandler()
    root.add_event_handler(instance)
    try:
        yield instance
    finally:
        root.event_handlers = [h for h in root.event_handlers if h is not instance]
