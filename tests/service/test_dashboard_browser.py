"""The dashboard in a real browser: Debian's chromium (headless, driven by Playwright) on loopback.

The service runs in uvicorn on 127.0.0.1 over a SQLite file, with a key created in its store.
Outcomes are reported through the HTTP API (a day of older history is written to the store
directly, as another process would, so the charts have something to draw); the page is opened,
signed into, checked for what a user would look at, and left to refresh by itself. A screenshot
lands in tests/artifacts/dashboard.png.

Skips when chromium (``/usr/bin/chromium``, from ``apt-get install chromium``; ``make test``
installs it when run as root) or the ``playwright`` package is missing. Playwright never
downloads a browser here: it drives the system's chromium, with a fresh profile, and every
request that does not go to the loopback service is aborted (and fails the test).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kalibr_core import Intelligence
from kalibr_core.service import create_api_key, create_app
from kalibr_core.service._http import CoalescingHttpToolsProtocol
from kalibr_core.store import OutcomeRecord

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
STATUS_LABELS = {
    "healthy": "Healthy",
    "degrading": "Degrading",
    "failing": "Failing",
    "insufficient_data": "Insufficient data",
}
# Chromium logs every failed fetch; the wrong key's 401 is expected (CSP violations are not).
EXPECTED_401 = "the server responded with a status of 401"
LOAD = 15_000  # ms a page load or a fetch may take on a busy CI machine
GOAL = "extract_company"
TENANT = "acme"


def _playwright() -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            "Debian's chromium is not installed (no `chromium` on PATH, no /usr/bin/chromium): "
            "`apt-get install chromium`, or run `make test` as root, which installs it"
        )
    return pytest.importorskip(
        "playwright.sync_api",
        reason="the playwright package is missing: pip install -e '.[dev]'",
    )


@dataclass
class Service:
    base: str
    key: str
    intel: Intelligence
    http: httpx.Client


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """The app in uvicorn on 127.0.0.1 (ephemeral port) over a SQLite file, with acme's key."""
    intel = Intelligence(str(tmp_path / "kalibr.db"))
    key = create_api_key(intel.store, TENANT, name="dashboard test").key
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(  # the protocol `kalibr-core serve` runs
        create_app(intel),
        log_config=None,
        log_level="warning",
        ws="none",
        http=CoalescingHttpToolsProtocol,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    headers = {"X-API-Key": key, "X-Tenant-ID": TENANT}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            yield Service(base, key, intel, http)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        intel.close()


@pytest.fixture
def sync_api() -> Any:
    """Playwright's sync API, or a skip saying what is missing (before any server starts)."""
    return _playwright()


@pytest.fixture
def page(sync_api: Any, tmp_path: Path, service: Service) -> Iterator[Any]:
    """A chromium page (fresh profile) that may only talk to the service; checked afterwards."""
    foreign: list[str] = []
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
        )

        def only_loopback(route: Any) -> None:
            if route.request.url.startswith(service.base + "/"):
                route.continue_()
            else:
                foreign.append(route.request.url)
                route.abort()

        context.route("**/*", only_loopback)
        tab = context.new_page()
        tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        tab.on(
            "console",
            lambda message: (
                problems.append(f"console {message.type}: {message.text}")
                if message.type == "error" and EXPECTED_401 not in message.text
                else None
            ),
        )
        try:
            yield tab
        finally:
            context.close()
    assert not foreign, f"the page tried to leave the service: {foreign}"
    assert not problems, problems


# -- data -------------------------------------------------------------------------------------
def _register(service: Service, model: str, goal: str = GOAL) -> str:
    body = {"goal": goal, "model_id": model}
    response = service.http.post("/api/v1/routing/paths", json=body)
    assert response.status_code == 200, response.text
    path_id: str = response.json()["path_id"]
    return path_id


def _report(service: Service, goal: str, model: str, n: int, successes: int, **fields: Any) -> None:
    for i in range(n):
        body = {
            "trace_id": f"{goal}-{model}-{time.monotonic_ns()}-{i}",
            "goal": goal,
            "model_id": model,
            "success": i < successes,
            **fields,
        }
        if i >= successes:
            body["failure_category"] = "timeout"
        response = service.http.post("/api/v1/intelligence/report-outcome", json=body)
        assert response.status_code == 200, response.text


def _history(service: Service, paths: dict[str, str]) -> None:
    """A day of hourly outcomes, written to the store as another process would.

    gpt-4o keeps succeeding; claude-3-haiku degrades halfway through and loses traffic.
    """
    now = time.time()
    records = []
    seen = dict.fromkeys(paths, 0)
    for hour in range(23):
        at = now - (23 - hour) * 3600
        degraded = hour >= 12
        plan = {
            "gpt-4o": (4 + hour // 3, 9),
            "claude-3-haiku": (max(2, 8 - (hour - 10)) if degraded else 8, 3 if degraded else 8),
        }
        for model, (n, per_ten) in plan.items():
            for i in range(n):
                seen[model] += 1
                success = (seen[model] * 7) % 10 < per_ten  # per_ten in every ten, spread out
                records.append(
                    OutcomeRecord(
                        tenant=TENANT,
                        goal=GOAL,
                        pipeline_id="",
                        trace_id=f"history-{model}-{hour}-{i}",
                        path_id=paths[model],
                        model_id=model,
                        tool_id=None,
                        params=None,
                        success=success,
                        score=None,
                        value=float(success),
                        failure_category=None if success else "timeout",
                        failure_reason=None,
                        metadata=None,
                        cost_usd=0.0042 if model == "gpt-4o" else 0.0004,
                        latency_ms=850.0 if model == "gpt-4o" else 420.0,
                        input_tokens=None,
                        output_tokens=None,
                        created_at=at + i * 60,
                    )
                )
    service.intel.store.record_outcomes(records)


def _summary(service: Service, goal: str) -> dict[str, Any]:
    response = service.http.get("/api/v1/dashboard/summary", params={"goal": goal})
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["goals"][0]
    return entry


# -- the test ---------------------------------------------------------------------------------
def test_dashboard_shows_goals_and_refreshes_itself(
    sync_api: Any, service: Service, page: Any
) -> None:
    expect = sync_api.expect
    paths = {m: _register(service, m) for m in ("gpt-4o", "claude-3-haiku", "mistral-small")}
    _history(service, paths)
    _report(service, GOAL, "gpt-4o", 30, 27, cost_usd=0.0042, latency_ms=870)
    _report(service, GOAL, "claude-3-haiku", 12, 4, cost_usd=0.0004, latency_ms=410)
    _report(service, GOAL, "mistral-small", 6, 1, cost_usd=0.0002, latency_ms=380)
    disabled = service.http.delete(f"/api/v1/routing/paths/{paths['mistral-small']}")
    assert disabled.status_code == 200, disabled.text
    api_view = _summary(service, GOAL)

    page.goto(f"{service.base}/dashboard")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=LOAD)

    # A wrong key is an error message on the sign-in form, not a blank page.
    page.get_by_label("Tenant").fill(TENANT)
    page.get_by_label("API key").fill("kc_not-a-real-key")
    page.get_by_role("button", name="Open dashboard").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid or revoked API key", timeout=LOAD)
    expect(page.locator("article.goal")).to_have_count(0)

    page.get_by_label("API key").fill(service.key)
    page.get_by_role("button", name="Open dashboard").click()
    goal = page.locator(f'article[data-goal="{GOAL}"]')
    expect(goal.get_by_role("heading", name=GOAL)).to_be_visible(timeout=LOAD)
    assert service.key not in page.url
    stored = page.evaluate("sessionStorage.getItem('kalibr-dashboard.credentials')")
    assert service.key in stored

    # The goal's status, its paths with their numbers, the signals, the disabled path.
    expect(goal.locator(".badge")).to_have_text(STATUS_LABELS[api_view["status"]])
    gpt = goal.locator(f'tr[data-path-id="{paths["gpt-4o"]}"]')
    expect(gpt).to_contain_text("gpt-4o")
    gpt_row = next(p for p in api_view["paths"] if p["model_id"] == "gpt-4o")
    expect(gpt).to_contain_text(f"{gpt_row['success_rate'] * 100:.1f}%")
    expect(gpt).to_contain_text(str(gpt_row["sample_count"]))
    expect(goal.locator("tbody tr")).to_have_count(2)  # the enabled paths
    signal = next(s for s in api_view["actionable_signals"] if s["severity"] != "info")
    expect(goal.locator(".signals")).to_contain_text(signal["message"])
    expect(goal.locator(".disabled-paths")).to_contain_text("mistral-small")

    # Both charts are drawn: stacked traffic bars and one rolling-success line per path.
    charts = goal.locator("svg.chart")
    expect(charts).to_have_count(2)
    assert charts.nth(0).locator("rect").count() > 20
    expect(charts.nth(1).locator("polyline")).to_have_count(3)

    # Outcomes reported after the page loaded appear without any click or reload.
    _register(service, "gpt-4o-mini", goal="summarize_ticket")
    _report(service, "summarize_ticket", "gpt-4o-mini", 5, 5)
    new_goal = page.locator('article[data-goal="summarize_ticket"]')
    expect(new_goal.get_by_role("heading", name="summarize_ticket")).to_be_visible(
        timeout=LOAD + 5_000  # one refresh period (5 s) on top
    )
    expect(new_goal).to_contain_text("gpt-4o-mini")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a rendered page, not an empty canvas

    # Signing out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('kalibr-dashboard.credentials')") is None
