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


@pytest.fixture
def live(tmp_db) -> Iterator[tuple[str, dict[str, str]]]:
    """A uvicorn server on 127.0.0.1 (ephemeral port) over a SQLite file; (base URL, headers)."""
    intel = Intelligence(tmp_db)
    created = create_api_key(intel.store, "acme")
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it keep-alive requests wait ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(intel), log_config=None, log_level="warning", ws="none")
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


def test_kalibr_core_serve_runs_and_stops_cleanly(tmp_db, capsys):
    assert main(["keys", "create", "--tenant", "acme", "--db", tmp_db]) == 0
    key = json.loads(capsys.readouterr().out)["api_key"]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "KALIBR_BOOTSTRAP_KEY"}
    root = str(Path(kalibr_core.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "kalibr_core.cli", "serve", "--port", str(port), "--db", tmp_db],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": key, "X-Tenant-ID": "acme"}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/api/v1/intelligence/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "kalibr-core serve did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            http.post("/api/v1/routing/paths", json={"goal": "g", "model_id": "gpt-4o"})
            decision = http.post("/api/v1/routing/decide", json={"goal": "g"}).json()
            outcome = {"trace_id": decision["trace_id"], "goal": "g", "success": True}
            assert http.post("/api/v1/intelligence/report-outcome", json=outcome).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
    assert process.returncode in {0, -signal.SIGTERM}, stderr.decode()
    assert "Application shutdown complete" in stderr.decode()
    with Intelligence(tmp_db) as intel:
        stats = intel.stats("g", tenant="acme")
    assert stats["total_outcomes"] == 1
    assert stats["decisions"] == 0  # a fresh process: decisions are not replayed, outcomes are
