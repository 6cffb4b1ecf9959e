"""The service on a real socket: uvicorn in a thread, and ``kalibr-core serve`` as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

import kalibr_core
from kalibr_core import Intelligence
from kalibr_core.cli import main
from kalibr_core.service import create_api_key, create_app
from kalibr_core.service._http import CoalescingHttpToolsProtocol


@pytest.fixture(params=["httptools", "coalescing"])
def live(tmp_db, request) -> Iterator[tuple[str, dict[str, str]]]:
    """A uvicorn server on 127.0.0.1 (ephemeral port) over a SQLite file; (base URL, headers).

    Once with uvicorn's own httptools protocol (the app under any uvicorn), once with the one
    ``kalibr-core serve`` runs (each response in one write).
    """
    intel = Intelligence(tmp_db)
    created = create_api_key(intel.store, "acme")
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it keep-alive requests wait ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    protocol = CoalescingHttpToolsProtocol if request.param == "coalescing" else "httptools"
    config = uvicorn.Config(
        create_app(intel), log_config=None, log_level="warning", ws="none", http=protocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", {"X-API-Key": created.key, "X-Tenant-ID": "acme"}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        intel.close()


def test_round_trip_over_http(live):
    base, headers = live
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        assert http.get("/api/v1/intelligence/health", headers={}).json()["status"] == "healthy"
        for model in ("gpt-4o", "claude-x"):
            body = {"goal": "extract", "model_id": model}
            assert http.post("/api/v1/routing/paths", json=body).status_code == 200
        for _ in range(10):
            decision = http.post("/api/v1/routing/decide", json={"goal": "extract"}).json()
            outcome = {
                "trace_id": decision["trace_id"],
                "goal": "extract",
                "success": decision["model_id"] == "gpt-4o",
            }
            assert http.post("/api/v1/intelligence/report-outcome", json=outcome).status_code == 200
        stats = http.get("/api/v1/routing/stats", params={"goal": "extract"}).json()
        assert stats["total_outcomes"] == 10
        assert http.get("/openapi.json").json()["info"]["title"].startswith("kalibr-core")
        assert http.get("/api/v1/routing/stats", headers={"X-API-Key": ""}).status_code == 401


def test_concurrent_reports_with_replays_count_each_outcome_once(live):
    base, headers = live
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        http.post("/api/v1/routing/paths", json={"goal": "g", "model_id": "gpt-4o"})

        def report(i: int) -> int:
            body = {
                "trace_id": f"t{i % 20}",
                "goal": "g",
                "success": True,
                "model_id": "gpt-4o",
                "outcome_id": f"o{i % 20}",  # every outcome is sent three times
            }
            return http.post("/api/v1/intelligence/report-outcome", json=body).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(report, range(60))) == {200}
        assert (
            http.get("/api/v1/routing/stats", params={"goal": "g"}).json()["total_outcomes"] == 20
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_db: str, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """``kalibr-core serve`` over ``tmp_db`` as a process, once it answers; (process, base URL)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "KALIBR_BOOTSTRAP_KEY"}
    root = str(Path(kalibr_core.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "kalibr_core.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--db", tmp_db, *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/api/v1/intelligence/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"kalibr-core serve did not start: {process.communicate()[1]!r}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then the process's stderr once it has exited."""
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
    assert process.returncode in {0, -signal.SIGTERM}, stderr.decode()
    return stderr.decode()


def test_kalibr_core_serve_runs_and_stops_cleanly(tmp_db, capsys):
    assert main(["keys", "create", "--tenant", "acme", "--db", tmp_db]) == 0
    key = json.loads(capsys.readouterr().out)["api_key"]
    headers = {"X-API-Key": key, "X-Tenant-ID": "acme"}
    process, base = _serve(tmp_db)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            http.post("/api/v1/routing/paths", json={"goal": "g", "model_id": "gpt-4o"})
            decision = http.post("/api/v1/routing/decide", json={"goal": "g"}).json()
            outcome = {"trace_id": decision["trace_id"], "goal": "g", "success": True}
            assert http.post("/api/v1/intelligence/report-outcome", json=outcome).status_code == 200
    finally:
        stderr = _stop(process)
    assert "Application shutdown complete" in stderr
    with Intelligence(tmp_db) as intel:
        stats = intel.stats("g", tenant="acme")
    assert stats["total_outcomes"] == 1
    assert stats["decisions"] == 0  # a fresh process: decisions are not replayed, outcomes are


def test_serve_with_workers_shares_the_store_and_loses_no_outcome(tmp_db, capsys):
    assert main(["keys", "create", "--tenant", "acme", "--db", tmp_db]) == 0
    key = json.loads(capsys.readouterr().out)["api_key"]
    headers = {"X-API-Key": key, "X-Tenant-ID": "acme"}
    process, base = _serve(tmp_db, "--workers", "2", "--no-access-log")
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            http.post("/api/v1/routing/paths", json={"goal": "g", "model_id": "gpt-4o"})

        def pairs(client: int) -> list[int]:
            statuses = []
            # A connection of its own per client: the two workers share the connections.
            with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
                for i in range(10):
                    decision = http.post("/api/v1/routing/decide", json={"goal": "g"})
                    statuses.append(decision.status_code)
                    outcome = {
                        "trace_id": decision.json()["trace_id"],
                        "goal": "g",
                        "success": (client + i) % 2 == 0,
                    }
                    report = http.post("/api/v1/intelligence/report-outcome", json=outcome)
                    statuses.append(report.status_code)
            return statuses

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert {s for statuses in pool.map(pairs, range(4)) for s in statuses} == {200}
    finally:
        stderr = _stop(process)
    assert stderr.count("Application shutdown complete") == 2  # both workers closed the store
    with Intelligence(tmp_db) as intel:
        assert intel.stats("g", tenant="acme")["total_outcomes"] == 40
        assert intel.store.count_outcomes("acme", "g") == 40
