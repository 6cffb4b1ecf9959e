"""Fixtures of the service tests: an app over an in-memory store, and API keys of two tenants.

``acme`` and ``globex`` are two tenants with one key each; ``client`` is a TestClient of the
app. Helpers post with a tenant's headers and seed outcomes through the API itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kalibr_core import Intelligence
from kalibr_core.service import create_api_key, create_app

SEED = 20240611


@dataclass(frozen=True)
class Creds:
    """A tenant's credentials."""

    tenant: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key, "X-Tenant-ID": self.tenant}


@pytest.fixture
def service_intel() -> Iterator[Intelligence]:
    """The Intelligence behind the app (in-memory store)."""
    instance = Intelligence(":memory:", seed=SEED)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def app(service_intel: Intelligence) -> FastAPI:
    return create_app(service_intel)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _creds(intel: Intelligence, tenant: str) -> Creds:
    created = create_api_key(intel.store, tenant, name=f"{tenant} tests")
    return Creds(tenant, created.key, created.record.key_id)


@pytest.fixture
def acme(service_intel: Intelligence) -> Creds:
    return _creds(service_intel, "acme")


@pytest.fixture
def globex(service_intel: Intelligence) -> Creds:
    return _creds(service_intel, "globex")


class Api:
    """Calls through the test client, as a tenant (``api.register(acme, goal, model)``)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, creds: Creds, path: str, body: Mapping[str, Any]) -> Any:
        return self.client.post(path, json=dict(body), headers=creds.headers)

    def get(self, creds: Creds, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=creds.headers)

    def ok(self, response: Any) -> dict[str, Any]:
        """The body of a 200 response."""
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def register(self, creds: Creds, goal: str, model: str, **fields: Any) -> dict[str, Any]:
        """Register a path; returns the response body."""
        body = {"goal": goal, "model_id": model, **fields}
        return self.ok(self.post(creds, "/api/v1/routing/paths", body))

    def decide(self, creds: Creds, goal: str, **fields: Any) -> dict[str, Any]:
        return self.ok(self.post(creds, "/api/v1/routing/decide", {"goal": goal, **fields}))

    def report(self, creds: Creds, trace_id: str, goal: str, **fields: Any) -> dict[str, Any]:
        body = {"trace_id": trace_id, "goal": goal, "success": True, **fields}
        return self.ok(self.post(creds, "/api/v1/intelligence/report-outcome", body))

    def stats(self, creds: Creds, goal: str) -> dict[str, Any]:
        return self.ok(self.get(creds, "/api/v1/routing/stats", goal=goal))

    def seed(
        self,
        creds: Creds,
        goal: str,
        rates: Mapping[str, float],
        *,
        n: int = 40,
        cost: Mapping[str, float] | None = None,
        latency: Mapping[str, float] | None = None,
        failure_category: str | None = None,
    ) -> None:
        """Register each model and report ``n`` outcomes at exactly its rate (by model_id)."""
        for model, rate in rates.items():
            self.register(creds, goal, model)
            successes = round(rate * n)
            for i in range(n):
                success = i < successes
                self.report(
                    creds,
                    f"seed-{model}-{i}",
                    goal,
                    success=success,
                    model_id=model,
                    cost_usd=(cost or {}).get(model),
                    latency_ms=(latency or {}).get(model),
                    failure_category=None if success else failure_category,
                )

    @staticmethod
    def error(response: Any, status: int) -> dict[str, Any]:
        """The ``error`` object of an error response, asserting its status and shape."""
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"}, body
        error: dict[str, Any] = body["error"]
        assert isinstance(error["type"], str) and error["type"]
        assert isinstance(error["message"], str) and error["message"]
        return error


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)
