"""Router fixtures: a provider simulator per module, the SDKs pointed at it, a fresh Intelligence.

Every provider family the Router dispatches to (OpenAI, Anthropic, Google, DeepSeek, Ollama,
Hugging Face) is reached through its real SDK over loopback HTTP; nothing leaves the machine.
Tests that need a particular behaviour give a model a script with ``sim.set_script`` under a
model name of their own, so scripts and request counters never leak between tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kalibr_core import Intelligence
from kalibr_core.router import Router
from kalibr_core.simulator import ProviderSimulator, _server
from kalibr_core.store import OutcomeRecord

SEED = 20240611
SIM_KEY = "sim-key"

# Every variable the Router reads for a provider: set to the simulator, or removed, per test.
_URL_VARS = ("OPENAI_BASE_URL", "DEEPSEEK_BASE_URL", "GOOGLE_BASE_URL", "OLLAMA_BASE_URL")
_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "GOOGLE_API_KEY")
_CLEARED = (
    "GEMINI_API_KEY",
    "OLLAMA_API_KEY",
    "HF_API_TOKEN",
    "HF_TOKEN",
    "KALIBR_SESSION_ID",
    "KALIBR_PROVIDER_MAX_RETRIES",
)

MakeRouter = Callable[..., Router]
Stored = Callable[[str], list[OutcomeRecord]]


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    """A provider simulator on a free loopback port, shared by the tests of one module.

    Its server listens with socketserver's default backlog of 5 pending connections: a burst
    of 50 new connections (the concurrency tests) overflows it, and the kernel drops or resets
    some of them (1 s SYN retries, ``ReadError``). A real provider's backlog is far larger.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_server._Server, "request_queue_size", 128)
        simulator = ProviderSimulator(seed=SEED).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def sim_env(sim: ProviderSimulator, monkeypatch: pytest.MonkeyPatch) -> ProviderSimulator:
    """Point every provider family's SDK at the simulator (keys are dummies)."""
    for name in _URL_VARS:
        monkeypatch.setenv(name, sim.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.anthropic_base_url)
    monkeypatch.setenv("HF_BASE_URL", sim.hf_base_url)
    for name in _KEY_VARS:
        monkeypatch.setenv(name, SIM_KEY)
    for name in _CLEARED:
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
def make_router(intel: Intelligence) -> MakeRouter:
    """``make_router(goal, paths, **kwargs)``: a Router deciding with the test's Intelligence."""

    def make(goal: str, paths: Any, **kwargs: Any) -> Router:
        return Router(goal, paths, intelligence=intel, **kwargs)

    return make


@pytest.fixture
def stored(intel: Intelligence) -> Stored:
    """``stored(goal)``: the outcomes the test's Intelligence has stored for a goal, in order.

    Routers report through the Intelligence's background writer, so this flushes it first.
    """

    def outcomes(goal: str) -> list[OutcomeRecord]:
        intel.flush()
        return intel.store.outcomes_in_window(intel.tenant, goal, 0)

    return outcomes


@contextmanager
def _loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port; yields its ``/v1`` base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _CannedHandler(BaseHTTPRequestHandler):
    """A quiet handler answering each POST with :meth:`answer`'s (status, type, body)."""

    def answer(self, request: bytes) -> tuple[int, str, bytes]:
        raise NotImplementedError

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        status, content_type, body = self.answer(self.rfile.read(length))
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RejectingHandler(_CannedHandler):
    """Answers every request with OpenAI's 401 (a revoked key)."""

    def answer(self, request: bytes) -> tuple[int, str, bytes]:
        error = {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        return 401, "application/json", json.dumps({"error": error}).encode()


@pytest.fixture(scope="module")
def rejecting_url() -> Iterator[str]:
    """The base URL of a loopback OpenAI-compatible server that rejects every key (HTTP 401).

    The simulator accepts any key, so a revoked key needs a server of its own.
    """
    with _loopback_server(_RejectingHandler) as url:
        yield url


#: What the odd server answers (HTTP 200) for each model name: not an OpenAI completion.
ODD_BODIES = {
    "odd-list": ("application/json", b"[]"),
    "odd-choice": ("application/json", b'{"id": "x", "choices": ["not an object"]}'),
    "odd-html": ("text/html", b"<html><body>Sign in to the network</body></html>"),
}


class _OddBodyHandler(_CannedHandler):
    """Answers 200 with a body that is not a completion (a captive portal, a broken proxy)."""

    def answer(self, request: bytes) -> tuple[int, str, bytes]:
        content_type, body = ODD_BODIES[json.loads(request)["model"]]
        return 200, content_type, body


@pytest.fixture(scope="module")
def odd_body_url() -> Iterator[str]:
    """The base URL of a loopback server answering 200 with what is not a completion."""
    with _loopback_server(_OddBodyHandler) as url:
        yield url
