"""Every error is ``{"error": {"type", "message", ...}}``, with a message a person can act on."""

from __future__ import annotations

import logging

from kalibr_core import FAILURE_CATEGORIES, StoreError


def test_unknown_route_and_wrong_method(client, api, acme):
    error = api.error(client.get("/api/v1/nothing-here", headers=acme.headers), 404)
    assert error["type"] == "not_found"
    assert "/docs" in error["message"]
    response = client.put("/api/v1/routing/decide", headers=acme.headers)
    error = api.error(response, 405)
    assert error["type"] == "method_not_allowed"
    assert "POST" in error["message"]
    assert response.headers["allow"] == "POST"


def test_malformed_and_non_object_bodies(client, api, acme):
    headers = {**acme.headers, "Content-Type": "application/json"}
    broken = client.post("/api/v1/routing/decide", content=b'{"goal": ', headers=headers)
    assert "not valid JSON" in api.error(broken, 422)["message"]
    array = client.post("/api/v1/routing/decide", content=b"[]", headers=headers)
    assert "JSON object" in api.error(array, 422)["message"]
    empty = client.post("/api/v1/routing/decide", headers=acme.headers)
    assert api.error(empty, 422)["type"] == "validation_error"


def test_a_json_body_without_content_type_is_read(client, api, acme):
    api.register(acme, "g", "gpt-4o")
    response = client.post("/api/v1/routing/decide", content=b'{"goal": "g"}', headers=acme.headers)
    assert response.status_code == 200


def test_validation_errors_list_every_field(api, acme):
    response = api.post(acme, "/api/v1/intelligence/report-outcome", {"score": "high"})
    error = api.error(response, 422)
    fields = {e["field"] for e in error["errors"]}
    assert fields >= {"trace_id", "goal", "success", "score"}
    assert error["field"] in fields


def test_the_failure_category_schema_is_the_13_categories(client):
    document = client.get("/openapi.json").json()
    schema = document["components"]["schemas"]["ReportOutcomeRequest"]
    variants = schema["properties"]["failure_category"]["anyOf"]
    enum = next(v["enum"] for v in variants if "enum" in v)
    assert tuple(enum) == FAILURE_CATEGORIES


def test_oversized_bodies_are_413(client, api, acme):
    response = client.post(
        "/api/v1/routing/decide",
        content=b'{"goal": "' + b"x" * (1 << 20) + b'"}',
        headers={**acme.headers, "Content-Type": "application/json"},
    )
    assert api.error(response, 413)["type"] == "payload_too_large"


def test_unexpected_errors_are_logged_and_answered_without_internals(
    client, api, acme, service_intel, monkeypatch, caplog
):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service_intel, "stats", explode)
    with caplog.at_level(logging.ERROR, logger="kalibr_core.service"):
        response = client.get("/api/v1/routing/stats?goal=g", headers=acme.headers)
    error = api.error(response, 500)
    assert error["type"] == "internal_error"
    assert "secret" not in response.text
    assert "secret internal detail" in caplog.text
    assert "/api/v1/routing/stats" in caplog.text


def test_store_errors_are_503(client, api, acme, service_intel, monkeypatch, caplog):
    def unavailable(*args, **kwargs):
        raise StoreError("connection to db-host:5432 refused")

    monkeypatch.setattr(service_intel, "decide", unavailable)
    with caplog.at_level(logging.ERROR, logger="kalibr_core.service"):
        response = api.post(acme, "/api/v1/routing/decide", {"goal": "g"})
    error = api.error(response, 503)
    assert error["type"] == "store_unavailable"
    assert "db-host" not in response.text
    assert "db-host" in caplog.text


def test_outcome_bodies_are_never_logged(client, api, acme, caplog):
    api.register(acme, "g", "gpt-4o")
    with caplog.at_level(logging.DEBUG):
        api.report(acme, "t", "g", model_id="gpt-4o", failure_reason="PRIVATE-REASON-TEXT")
        api.post(
            acme,
            "/api/v1/intelligence/report-outcome",
            {"trace_id": "t", "goal": "g", "success": True, "metadata": "PRIVATE-META"},
        )
    assert "PRIVATE" not in caplog.text
