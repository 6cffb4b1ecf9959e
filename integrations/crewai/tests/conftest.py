"""Fixtures: CrewAI kept offline, one provider simulator per session, a fresh Intelligence.

CrewAI reaches the network on its own (telemetry, trace uploads, a version check, its first-run
prompt): the variables below switch all of that off before ``crewai`` is imported, and a guard
on ``socket`` refuses every connection and name lookup that is not loopback. A refused attempt
fails the test that made it, even when CrewAI swallowed the error.

The simulator serves the OpenAI and Anthropic protocols on loopback; ``OPENAI_BASE_URL`` and
``ANTHROPIC_BASE_URL`` point the Router's SDK clients at it. Tests that need a behaviour give a
model name of their own a script (``sim.set_script``), so scripts never leak between tests.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

_STATE_DIR = tempfile.mkdtemp(prefix="crewai-kalibr-tests-")
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true",
    CREWAI_DISABLE_TRACKING="true",
    OTEL_SDK_DISABLED="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_TESTING="true",  # no first-run tracing prompt
    CREWAI_DISABLE_VERSION_CHECK="true",
    CREWAI_STORAGE_DIR=_STATE_DIR,
    XDG_DATA_HOME=_STATE_DIR,  # CrewAI's user data (appdirs) stays out of $HOME
    KALIBR_STORE_URL=":memory:",  # a test that forgets intelligence= touches no file
)
os.environ.pop("KALIBR_INTELLIGENCE_URL", None)

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", ""})
_blocked: list[str] = []


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host is None:  # getaddrinfo(None, port): a local address
        return True
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _check(family: int, address: Any) -> None:
    if family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _blocked.append(str(address))
        raise ConnectionRefusedError(f"the tests stay offline: connection to {address} refused")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(self.family, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self.family, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _is_loopback(host):
        _blocked.append(f"lookup of {host}")
        raise socket.gaierror(f"the tests stay offline: name lookup of {host!r} refused")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo

# CrewAI's own import raises an ImportWarning (its crewai.rag package refuses a submodule
# attribute); it is CrewAI's, raised once, at import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ImportWarning)
    import crewai  # noqa: F401

import pytest  # noqa: E402

from kalibr_core import Intelligence  # noqa: E402
from kalibr_core.simulator import ProviderSimulator  # noqa: E402
from kalibr_core.store import OutcomeRecord  # noqa: E402

SEED = 20240611
SIM_KEY = "sim-key"

Stored = Callable[[str], list[OutcomeRecord]]


def pytest_configure(config: pytest.Config) -> None:
    """Warnings CrewAI raises from its own code during a kickoff (not ours to fix)."""
    for line in (
        # CrewAI reads its own deprecated fields (function_calling_llm, allow_code_execution,
        # reasoning, multimodal) on every agent and crew it builds.
        r"ignore:function_calling_llm is deprecated:DeprecationWarning",
        r"ignore:deprecated$:DeprecationWarning",
    ):
        config.addinivalue_line("filterwarnings", line)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put ``socket`` back and remove CrewAI's state directory."""
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo
    shutil.rmtree(_STATE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _offline() -> Iterator[None]:
    """Fail the test if anything tried to leave the machine (CrewAI may swallow the error)."""
    _blocked.clear()
    yield
    assert not _blocked, f"network access attempted: {_blocked}"


@pytest.fixture(scope="session")
def sim() -> Iterator[ProviderSimulator]:
    """The provider simulator for the session, with the SDKs pointed at it (dummy keys)."""
    simulator = ProviderSimulator(seed=SEED).start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
        patch.setenv("OPENAI_API_KEY", SIM_KEY)
        patch.setenv("ANTHROPIC_BASE_URL", simulator.anthropic_base_url)
        patch.setenv("ANTHROPIC_API_KEY", SIM_KEY)
        patch.delenv("KALIBR_PROVIDER_MAX_RETRIES", raising=False)
        try:
            yield simulator
        finally:
            simulator.stop()


@pytest.fixture
def intel() -> Iterator[Intelligence]:
    """A fresh in-memory Intelligence with seeded sampling, closed after the test."""
    instance = Intelligence(":memory:", seed=SEED)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def stored(intel: Intelligence) -> Stored:
    """``stored(goal)``: the outcomes stored for a goal, oldest first (after a flush)."""

    def outcomes(goal: str) -> list[OutcomeRecord]:
        intel.flush()
        return intel.store.outcomes_in_window(intel.tenant, goal, 0)

    return outcomes
