"""Authentication: every endpoint but health answers 401 JSON to missing or wrong credentials."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from kalibr_core import Intelligence
from kalibr_core.service import create_api_key, create_app, hash_key


def _authenticated_operations() -> list[tuple[str, str, dict | None]]:
    """(method, path, body) of every operation of the OpenAPI document but health.

    Derived from the document, so an endpoint added later is covered without editing this
    test. Path parameters get a placeholder; bodies are ``{}``: credentials are checked before
    anything else, so an invalid request still answers 401 without them.
    """
    with Intelligence(":memory:") as intel:
        document = create_app(intel).openapi()
    operations = []
    for path, item in sorted(document["paths"].items()):
        if path == "/api/v1/intelligence/health":
            continue
        for method, operation in item.items():
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            operations.append(
                (method.upper(), concrete, {} if "requestBody" in operation else None)
            )
    return operations


OPERATIONS = _authenticated_operations()


def test_the_operations_include_every_endpoint_of_the_spec():
    declared = {(method, path) for method, path, _ in OPERATIONS}
    assert declared >= {
        ("POST", "/api/v1/routing/decide"),
        ("POST", "/api/v1/routing/paths"),
        ("GET", "/api/v1/routing/paths"),
        ("DELETE", "/api/v1/routing/paths/x"),
        ("POST", "/api/v1/routing/paths/x/enable"),
        ("GET", "/api/v1/routing/stats"),
        ("GET", "/api/v1/routing/config"),
        ("POST", "/api/v1/routing/config"),
        ("POST", "/api/v1/intelligence/report-outcome"),
        ("POST", "/api/v1/intelligence/update-outcome"),
        ("GET", "/api/v1/intelligence/insights"),
        ("POST", "/api/v1/intelligence/policy"),
        ("POST", "/api/v1/intelligence/get-alternative"),
        ("POST", "/api/v1/intelligence/recommend"),
    }


def _call(client, method, path, body, headers):
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_missing_or_wrong_credentials_are_401(client, api, acme, globex, method, path, body):
    attempts = {
        "no headers": {},
        "no key": {"X-Tenant-ID": "acme"},
        "no tenant": {"X-API-Key": acme.key},
        "empty key": {"X-API-Key": "", "X-Tenant-ID": "acme"},
        "unknown key": {"X-API-Key": "kc_" + "x" * 43, "X-Tenant-ID": "acme"},
        "other tenant's key": {"X-API-Key": globex.key, "X-Tenant-ID": "acme"},
        "unknown tenant": {"X-API-Key": acme.key, "X-Tenant-ID": "nobody"},
    }
    for name, headers in attempts.items():
        response = _call(client, method, path, body, headers)
        error = api.error(response, 401)
        assert error["type"] == "unauthorized", name
    assert _call(client, method, path, body, acme.headers).status_code != 401


def test_messages_say_what_is_missing(client, api, acme):
    response = client.get("/api/v1/routing/stats?goal=g")
    assert "X-API-Key" in api.error(response, 401)["message"]
    response = client.get("/api/v1/routing/stats?goal=g", headers={"X-API-Key": acme.key})
    assert "X-Tenant-ID" in api.error(response, 401)["message"]
    mismatch = {"X-API-Key": acme.key, "X-Tenant-ID": "globex"}
    response = client.get("/api/v1/routing/stats?goal=g", headers=mismatch)
    assert "tenant" in api.error(response, 401)["message"]


def test_a_key_revoked_through_the_service_stops_working_at_once(app, client, api, acme):
    assert api.stats(acme, "g")["goal"] == "g"  # the key is now cached
    assert app.state.authenticator.revoke(acme.key_id).revoked_at is not None
    response = client.get("/api/v1/routing/stats?goal=g", headers=acme.headers)
    assert api.error(response, 401)["message"].startswith("invalid or revoked")
    decide = client.post("/api/v1/routing/decide", json={"goal": "g"}, headers=acme.headers)
    assert api.error(decide, 401)["type"] == "unauthorized"


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_ttl(service_intel, api):
    acme = create_api_key(service_intel.store, "acme")
    headers = {"X-API-Key": acme.key, "X-Tenant-ID": "acme"}
    ttl = 0.2
    with TestClient(create_app(service_intel, key_cache_ttl_s=ttl)) as client:
        path = {"goal": "g", "model_id": "gpt-4o"}
        response = client.post("/api/v1/routing/paths", json=path, headers=headers)
        assert response.status_code == 200
        service_intel.store.revoke_api_key(acme.record.key_id)  # as `kalibr-core keys revoke`
        time.sleep(ttl)
        decide = client.post("/api/v1/routing/decide", json={"goal": "g"}, headers=headers)
        assert api.error(decide, 401)["message"].startswith("invalid or revoked")
        stats = client.get("/api/v1/routing/stats?goal=g", headers=headers)
        assert api.error(stats, 401)["type"] == "unauthorized"


def test_without_a_cache_a_revocation_elsewhere_takes_effect_at_once(service_intel, api):
    acme = create_api_key(service_intel.store, "acme")
    headers = {"X-API-Key": acme.key, "X-Tenant-ID": "acme"}
    with TestClient(create_app(service_intel, key_cache_ttl_s=0)) as client:
        assert client.get("/api/v1/routing/stats?goal=g", headers=headers).status_code == 200
        service_intel.store.revoke_api_key(acme.record.key_id)
        response = client.get("/api/v1/routing/stats?goal=g", headers=headers)
        assert api.error(response, 401)["type"] == "unauthorized"


def test_a_known_key_is_looked_up_once_per_ttl(service_intel, acme, monkeypatch):
    lookups = []
    lookup = service_intel.store.tenant_for_key_hash
    monkeypatch.setattr(
        service_intel.store, "tenant_for_key_hash", lambda h: lookups.append(h) or lookup(h)
    )
    with TestClient(create_app(service_intel, key_cache_ttl_s=60)) as client:
        for _ in range(5):
            response = client.get("/api/v1/routing/stats?goal=g", headers=acme.headers)
            assert response.status_code == 200
            response = client.post(
                "/api/v1/routing/decide", json={"goal": "g"}, headers=acme.headers
            )
            assert response.status_code == 404  # no path: authenticated, then not found
        unknown = {"X-API-Key": "kc_" + "y" * 43, "X-Tenant-ID": "acme"}
        for _ in range(2):  # an unknown key is asked every time: a new key works at once
            assert client.get("/api/v1/routing/stats?goal=g", headers=unknown).status_code == 401
    assert lookups.count(hash_key(acme.key)) == 1
    assert lookups.count(hash_key(unknown["X-API-Key"])) >= 2


def test_only_the_hash_of_a_key_is_stored(acme, service_intel):
    assert service_intel.store.tenant_for_key_hash(hash_key(acme.key)) == "acme"
    assert service_intel.store.tenant_for_key_hash(acme.key) is None


def test_credentials_are_checked_before_the_body(client, api):
    response = client.post("/api/v1/routing/decide", json={"goal": "not valid!"})
    assert api.error(response, 401)["type"] == "unauthorized"


def test_a_bootstrap_key_works_for_its_tenant_only(service_intel, api):
    app = create_app(service_intel, bootstrap_key="local-dev-key", bootstrap_tenant="dev")
    with TestClient(app) as client:
        ok = client.get(
            "/api/v1/routing/stats?goal=g",
            headers={"X-API-Key": "local-dev-key", "X-Tenant-ID": "dev"},
        )
        assert ok.status_code == 200
        other = client.get(
            "/api/v1/routing/stats?goal=g",
            headers={"X-API-Key": "local-dev-key", "X-Tenant-ID": "default"},
        )
        assert api.error(other, 401)["type"] == "unauthorized"


def test_a_store_failure_during_authentication_is_503_not_500(client, api, acme, service_intel):
    service_intel.store.close()
    response = client.get("/api/v1/routing/stats?goal=g", headers=acme.headers)
    error = api.error(response, 503)
    assert error["type"] == "store_unavailable"
    assert "sqlite" not in error["message"].lower()


def test_the_document_requires_both_headers_together_except_for_health(client):
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} == {"X-API-Key", "X-Tenant-ID"}
    for path, item in document["paths"].items():
        for operation in item.values():
            if path == "/api/v1/intelligence/health":
                assert "security" not in operation
            else:
                assert operation["security"] == [{"ApiKey": [], "TenantId": []}]
