"""Remote-mode fixtures: a scriptable fake service (httpx.MockTransport) and the real one.

Unit tests talk to :class:`FakeService` through ``httpx.MockTransport``: it speaks the wire
format of the service (``kalibr_core.service``) closely enough to script outages, slow answers,
5xx, 401 and 422. Integration tests run the real service, ``kalibr-core serve``, in a
subprocess on a loopback port (:class:`ServiceProcess`), so it can be killed and restarted on
the same port over the same store file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kalibr_core import _api as api
from kalibr_core._domain import normalise_path
from kalibr_core._remote import RemoteBudget, RemoteIntelligence
from kalibr_core.store import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
KEY = "kc_test_key"
_CLI = (sys.executable, "-m", "kalibr_core.cli")

# Fast budgets for tests: back-off from 20 ms to 200 ms, short flushes.
FAST = RemoteBudget(
    decide=0.25, report=1.0, query=2.0, flush=1.0, exit=0.5, retry_initial=0.02, retry_max=0.2
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Outboxes under the test's directory, no remote settings from the environment, and the
    functional API's default restored afterwards."""
    monkeypatch.setenv("KALIBR_OUTBOX", str(tmp_path / "outboxes"))
    for name in ("KALIBR_INTELLIGENCE_URL", "KALIBR_API_KEY", "KALIBR_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    with api._default.lock:
        previous, api._default.instance = api._default.instance, None
    try:
        yield
    finally:
        with api._default.lock:
            current, api._default.instance = api._default.instance, previous
        if current is not None:
            current.close()


class FakeService:
    """The service's wire format over MockTransport, with switches for failures.

    Attributes:
        down: Every request fails with ``httpx.ConnectError`` (nothing listens).
        fail_with: ``{route: status}``: answer that status (with the service's error body).
        delay_s: ``{route: seconds}``: sleep before answering.
        portal: Routes answered 200 with an HTML page (a captive portal, a misrouted proxy).
        poison: Trace ids whose outcomes the service fails on (HTTP 500), every time.
        lose_ack: Outcome ids whose next delivery is stored, then answered with a read
            timeout (the acknowledgement is lost on the way back).
        outcomes: Stored outcomes by ``outcome_id`` (a replay is acknowledged, stored once).
        received: Every outcome delivery, in order (replays included).
        log: ``(method, path, body)`` of every request that reached the service.
        stats: ``{goal: stats body}`` answered by ``GET /routing/stats``.
        headers: The headers of the last request.
    """

    def __init__(self) -> None:
        self.down = False
        self.fail_with: dict[str, int] = {}
        self.delay_s: dict[str, float] = {}
        self.portal: set[str] = set()
        self.poison: set[str] = set()
        self.lose_ack: set[str] = set()
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.paths: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[str, str, Any]] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.headers: httpx.Headers | None = None
        self.on_request: Callable[[httpx.Request], None] | None = None
        self.lock = threading.Lock()
        self.decisions = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, p, _ in self.log if p == path)

    def handle(self, request: httpx.Request) -> httpx.Response:
        route = request.url.path.removeprefix("/api/v1/")
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else None
        with self.lock:
            self.log.append((request.method, route, body))
            self.headers = request.headers
        if self.on_request is not None:
            self.on_request(request)
        if route in self.delay_s:
            time.sleep(self.delay_s[route])
        if route in self.portal:
            return httpx.Response(200, text="<html>please log in</html>")
        status = self.fail_with.get(route)
        if status is not None:
            kind = {401: "unauthorized", 422: "validation_error"}.get(status, "internal_error")
            return httpx.Response(
                status, json={"error": {"type": kind, "message": f"scripted {status}"}}
            )
        return self._answer(request, route, body)

    def _answer(self, request: httpx.Request, route: str, body: Any) -> httpx.Response:
        if route == "routing/decide":
            goal = body["goal"]
            paths = [p for p in self.paths.values() if p["goal"] == goal]
            if not paths:
                return httpx.Response(
                    404, json={"error": {"type": "no_path_available", "message": "no path"}}
                )
            with self.lock:
                self.decisions += 1
            path = paths[-1]  # the service prefers the last path: not the fail-open choice
            return httpx.Response(
                200,
                json={
                    "trace_id": f"{self.decisions:032x}",
                    "path_id": path["path_id"],
                    "model_id": path["model_id"],
                    "tool_id": path["tool_id"],
                    "params": path["params"],
                    "goal": goal,
                    "pipeline_id": None,
                    "reason": "optimal",
                    "confidence": 0.9,
                    "exploration": False,
                    "success_rate": 0.9,
                    "sample_count": 40,
                },
            )
        if route == "routing/paths" and request.method == "POST":
            spec = normalise_path(
                body["goal"],
                {"model": body["model_id"], "tools": body.get("tool_id"), "params": body["params"]},
            )
            record = {
                "path_id": spec.path_id,
                "goal": spec.goal,
                "model_id": spec.model_id,
                "tool_id": spec.tool_id,
                "params": dict(spec.params),
                "risk_level": body.get("risk_level") or "low",
                "enabled": True,
            }
            created = spec.path_id not in self.paths
            self.paths.setdefault(spec.path_id, record)
            return httpx.Response(200, json={**record, "created": created})
        if route == "intelligence/report-outcome":
            if body["trace_id"] in self.poison:
                return httpx.Response(
                    500, json={"error": {"type": "internal_error", "message": "a bug"}}
                )
            with self.lock:
                self.received.append(body)
                self.outcomes.setdefault(body["outcome_id"], body)
                lost = body["outcome_id"] in self.lose_ack
                self.lose_ack.discard(body["outcome_id"])
            if lost:
                raise httpx.ReadTimeout("the answer was lost", request=request)
            answer = {"status": "accepted", "trace_id": body["trace_id"], "goal": body["goal"]}
            return httpx.Response(200, json={**answer, "path_id": None})
        if route == "intelligence/update-outcome":
            with self.lock:
                self.updates.append(body)
            known = any(o["trace_id"] == body["trace_id"] for o in self.outcomes.values())
            if not known:
                return httpx.Response(
                    404, json={"error": {"type": "not_found", "message": "no outcome"}}
                )
            fields = [k for k in body if k not in ("trace_id", "goal")]
            return httpx.Response(
                200,
                json={
                    "status": "updated",
                    "trace_id": body["trace_id"],
                    "goal": body["goal"],
                    "fields_updated": fields,
                },
            )
        if route == "routing/stats":
            goal = request.url.params["goal"]
            return httpx.Response(200, json=self.stats.get(goal, {"goal": goal, "paths": []}))
        if route == "intelligence/health":
            return httpx.Response(200, json={"status": "healthy"})
        return httpx.Response(404, json={"error": {"type": "not_found", "message": "no route"}})


@pytest.fixture(scope="session")
def fast_budget() -> RemoteBudget:
    """Budgets for tests: back-off from 20 ms to 200 ms, 1 s flushes."""
    return FAST


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


MakeRemote = Callable[..., RemoteIntelligence]


@pytest.fixture
def make_remote(fake: FakeService, tmp_path: Path) -> Iterator[MakeRemote]:
    """``make_remote(**kwargs)``: a RemoteIntelligence over the fake service, closed after."""
    made: list[RemoteIntelligence] = []

    def make(**kwargs: Any) -> RemoteIntelligence:
        kwargs.setdefault("budget", FAST)
        kwargs.setdefault("outbox", tmp_path / "outbox.sqlite3")
        kwargs.setdefault("transport", fake.transport())
        kwargs.setdefault("seed", 7)
        remote = RemoteIntelligence("http://kalibr.test", KEY, TENANT, **kwargs)
        made.append(remote)
        return remote

    yield make
    # A healthy service at close: whatever a test left queued is delivered at once.
    fake.down = False
    fake.fail_with.clear()
    fake.delay_s.clear()
    for remote in made:
        remote.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def wait_for() -> Callable[..., bool]:
    """``wait_for(condition, timeout=5.0)``: poll until it holds; whether it did."""
    return _wait_for


# -- the real service -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process that imports this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KALIBR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def python_env() -> Callable[..., dict[str, str]]:
    """``python_env(**extra)``: the environment of a child Python importing this checkout."""
    return child_env


# An agent that reports without waiting (as the Router does) and ends at once: normally (the
# exit flush runs) or killed (nothing runs after the report returned).
_AGENT = """
import json, os, signal, sys
import kalibr_core

goal = sys.argv[2]
kalibr_core.register_path(goal, "gpt-4o")
decision = kalibr_core.decide(goal)
kalibr_core.get_intelligence().report_outcome(decision["trace_id"], goal, success=True, wait=False)
print(json.dumps({"trace_id": decision["trace_id"], "source": decision["source"]}), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


class AgentRunner:
    """Runs ``_AGENT`` in a child process configured for remote mode by the environment."""

    def start(
        self, url: str, key: str, tenant: str, outboxes: Path, how: str, goal: str = "exit_goal"
    ) -> subprocess.Popen[bytes]:
        """Start an agent that ends with ``how``: ``"exit"`` or ``"kill"`` (SIGKILL)."""
        env = child_env(
            KALIBR_INTELLIGENCE_URL=url,
            KALIBR_API_KEY=key,
            KALIBR_TENANT_ID=tenant,
            KALIBR_OUTBOX=str(outboxes),
        )
        return subprocess.Popen(
            [sys.executable, "-c", _AGENT, how, goal],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def finish(self, agent: subprocess.Popen[bytes], how: str) -> dict[str, Any]:
        """Wait for the agent; what it printed (its trace id and the decision's source)."""
        stdout, stderr = agent.communicate(timeout=60)
        assert agent.returncode == (-9 if how == "kill" else 0), stderr.decode()
        report: dict[str, Any] = json.loads(stdout.decode().splitlines()[-1])
        return report


@pytest.fixture(scope="session")
def agent() -> AgentRunner:
    """Start and finish agent processes (see AgentRunner)."""
    return AgentRunner()


class ServiceProcess:
    """``kalibr-core serve`` in a subprocess on a fixed loopback port over one store file."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def create_key(self, tenant: str, *, cli: bool = True) -> str:
        """``kalibr-core keys create --tenant T``: the key it prints (once).

        ``cli=False`` creates it in this process (the same function; a second faster).
        """
        if not cli:
            from kalibr_core.service import create_api_key

            store = SqliteStore(self.store)
            try:
                return create_api_key(store, tenant).key
            finally:
                store.close()
        done = subprocess.run(
            [*_CLI, "keys", "create", "--tenant", tenant, "--db", str(self.store)],
            env=child_env(),
            capture_output=True,
            check=True,
            timeout=60,
        )
        return str(json.loads(done.stdout)["api_key"])

    def start(self) -> ServiceProcess:
        assert self.process is None
        command = [*_CLI, "serve", "--port", str(self.port), "--store-url", str(self.store)]
        self.process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"the service exited at start:\n{stderr}")
            try:
                if httpx.get(f"{self.url}/api/v1/intelligence/health", timeout=1).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the service did not start within 30 s")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, requests in flight are cut."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None


@pytest.fixture(scope="session")
def service_process() -> type[ServiceProcess]:
    """The ServiceProcess class, for module-scoped services."""
    return ServiceProcess


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The real service (not started yet) over a store file of the test's own."""
    server = ServiceProcess(tmp_path / "service.db")
    try:
        yield server
    finally:
        server.stop()
