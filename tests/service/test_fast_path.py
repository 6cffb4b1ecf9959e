"""The direct path of the JSON POST routes answers exactly what FastAPI's own route answers.

A body sent as ``application/merge-patch+json`` is JSON to FastAPI but not to the direct path,
which passes it on: the same request, answered by each path, is compared byte for byte.
"""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError

from kalibr_core.service import create_app
from kalibr_core.service._models import (
    AlternativeRequest,
    DecideRequest,
    ExplorationConfigRequest,
    PolicyRequest,
    RecommendRequest,
    RegisterPathRequest,
    ReportOutcomeRequest,
    UpdateOutcomeRequest,
)

JSON = {"Content-Type": "application/json"}
PASSED_ON = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def handled(monkeypatch):
    """Paths of the requests that reached FastAPI's route handler (not the direct path)."""
    seen: list[str] = []
    original = APIRoute.handle

    async def counting(self, scope, receive, send):
        seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counting)
    return seen


def _both(client, creds, path, body):
    """(direct, passed on) responses of the same request."""
    content = json.dumps(body).encode()
    direct = client.post(path, content=content, headers={**creds.headers, **JSON})
    passed = client.post(path, content=content, headers={**creds.headers, **PASSED_ON})
    return direct, passed


def _same(direct, passed):
    assert direct.status_code == passed.status_code, (direct.text, passed.text)
    assert direct.content == passed.content
    for header in ("content-type", "content-length"):
        assert direct.headers[header] == passed.headers[header]


def test_decide_and_report_skip_fastapis_route_handler(client, api, acme, handled):
    api.register(acme, "g", "gpt-4o")
    handled.clear()
    decision = api.decide(acme, "g")
    api.report(acme, decision["trace_id"], "g")
    assert handled == []
    client.post(
        "/api/v1/routing/decide",
        content=b'{"goal": "g"}',
        headers={**acme.headers, **PASSED_ON},
    )
    assert handled == ["/api/v1/routing/decide"]


def test_the_direct_path_answers_as_fastapi_does(client, api, acme):
    api.seed(acme, "g", {"gpt-4o": 0.9, "claude-3-5-sonnet": 0.6}, n=10, cost={"gpt-4o": 0.01})
    path = {"goal": "g", "model_id": "gpt-4o"}  # registered by seed: created false, twice
    _same(*_both(client, acme, "/api/v1/routing/paths", path))
    config = {"goal": "g", "exploration_rate": 0.2, "rollback_threshold": None}
    _same(*_both(client, acme, "/api/v1/routing/config", config))
    report = {
        "trace_id": "t1",
        "goal": "g",
        "success": True,
        "model_id": "gpt-4o",
        "outcome_id": "o1",
    }
    api.ok(client.post("/api/v1/intelligence/report-outcome", json=report, headers=acme.headers))
    _same(*_both(client, acme, "/api/v1/intelligence/report-outcome", report))  # a replay
    update = {"trace_id": "t1", "goal": "g", "success": True}
    _same(*_both(client, acme, "/api/v1/intelligence/update-outcome", update))  # no_changes
    for path, body in [
        ("/api/v1/intelligence/policy", {"goal": "g", "constraints": {"max_cost_usd": 1}}),
        ("/api/v1/intelligence/get-alternative", {"goal": "g", "exclude_models": ["gpt-4o"]}),
        ("/api/v1/intelligence/recommend", {"goal": "g", "optimize_for": "cost"}),
    ]:
        direct, passed = _both(client, acme, path, body)
        assert direct.status_code == 200, direct.text
        _same(direct, passed)
    assert api.stats(acme, "g")["total_outcomes"] == 21  # the replays counted once


def test_a_decision_has_the_same_fields_on_both_paths(client, api, acme):
    api.register(acme, "g", "gpt-4o", params={"temperature": 0.2})
    direct, passed = _both(client, acme, "/api/v1/routing/decide", {"goal": "g"})
    assert direct.status_code == passed.status_code == 200
    first, second = direct.json(), passed.json()
    assert first.keys() == second.keys()
    assert {k: type(v) for k, v in first.items()} == {k: type(v) for k, v in second.items()}
    assert first["trace_id"] != second["trace_id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/routing/decide", {"goal": "nothing_registered"}),  # the engine's 404
        ("/api/v1/routing/decide", {"goal": "not valid!"}),  # the request model's 422
        ("/api/v1/routing/decide", {"goal": "g", "exploration_rate": 2}),
        ("/api/v1/intelligence/report-outcome", {"trace_id": "t", "goal": "g"}),
        ("/api/v1/intelligence/report-outcome", {"goal": "g", "failure_category": "oops"}),
        ("/api/v1/intelligence/update-outcome", {"trace_id": "none", "goal": "g"}),
        ("/api/v1/intelligence/recommend", {"goal": "g", "optimize_for": "speed"}),
    ],
)
def test_errors_are_the_same_on_both_paths(client, acme, path, body):
    direct, passed = _both(client, acme, path, body)
    assert direct.status_code in {404, 422}
    _same(direct, passed)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"goal": "g"', JSON),  # not JSON
        (b'["g"]', JSON),  # not an object
        (b"", JSON),
        (b'{"goal": "g"}', {"Content-Type": "text/plain"}),
        (b"\xff\xfe", JSON),  # not UTF-8
    ],
)
def test_malformed_requests_are_refused_as_before(client, api, acme, content, headers):
    response = client.post(
        "/api/v1/routing/decide", content=content, headers={**acme.headers, **headers}
    )
    assert api.error(response, 422)["type"] == "validation_error"
    no_key = client.post("/api/v1/routing/decide", content=b'{"goal": "g"}', headers=JSON)
    assert api.error(no_key, 401)["type"] == "unauthorized"


def test_a_streamed_body_over_the_limit_is_413(service_intel, api, acme):
    app = create_app(service_intel, max_body_bytes=64)
    chunks = iter([b'{"goal": "', b"x" * 100, b'"}'])
    with TestClient(app) as client:
        response = client.post(
            "/api/v1/routing/decide", content=chunks, headers={**acme.headers, **JSON}
        )
    assert api.error(response, 413)["type"] == "payload_too_large"


def test_a_streamed_body_within_the_limit_is_served_directly(service_intel, api, acme, handled):
    app = create_app(service_intel, max_body_bytes=64)
    chunks = iter([b'{"goal": "', b"streamed", b'"}'])  # chunked: no content-length
    with TestClient(app) as client:
        registered = client.post(
            "/api/v1/routing/paths",
            json={"goal": "streamed", "model_id": "gpt-4o"},
            headers=acme.headers,
        )
        assert registered.status_code == 200
        response = client.post(
            "/api/v1/routing/decide", content=chunks, headers={**acme.headers, **JSON}
        )
    assert response.status_code == 200, response.text
    assert response.json()["model_id"] == "gpt-4o"
    assert "/api/v1/routing/decide" not in handled


def test_a_declared_body_over_the_limit_is_413_unread(service_intel, api, acme):
    app = create_app(service_intel, max_body_bytes=64)
    with TestClient(app) as client:
        response = client.post(
            "/api/v1/routing/decide",
            content=json.dumps({"goal": "x" * 100}).encode(),
            headers={**acme.headers, **JSON},
        )
    assert api.error(response, 413)["type"] == "payload_too_large"


def test_an_unexpected_error_is_logged_and_answered_500(
    client, api, acme, service_intel, monkeypatch, caplog
):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service_intel, "decide", explode)
    with caplog.at_level(logging.ERROR, logger="kalibr_core.service"):
        response = client.post("/api/v1/routing/decide", json={"goal": "g"}, headers=acme.headers)
    error = api.error(response, 500)
    assert error["type"] == "internal_error"
    assert "secret" not in response.text
    assert len([r for r in caplog.records if "secret internal detail" in str(r.exc_info)]) == 1


_MINIMAL_BODIES = {
    DecideRequest: {"goal": "g"},
    ReportOutcomeRequest: {"trace_id": "t", "goal": "g", "success": True},
    UpdateOutcomeRequest: {"trace_id": "t", "goal": "g"},
    RegisterPathRequest: {"goal": "g", "model_id": "m"},
    ExplorationConfigRequest: {"goal": "g"},
    PolicyRequest: {"goal": "g"},
    AlternativeRequest: {"goal": "g", "exclude_models": []},
    RecommendRequest: {"goal": "g"},
}
_PLAUSIBLE = st.sampled_from(
    [
        *(None, True, False, 0, 1, 3, 0.5, 2.5, 168, -1, 2**64, 1e308),
        *("g", "a.b:c-d", "medium", "timeout", "balanced", "0.5", "1", "true", "", " ", "été"),
        *(["gpt-4o"], [], {"temperature": 0.2}, {"max_cost_usd": 0.5, "min_quality": 0.9}),
        {"nested": [1, None]},
    ]
)
_VALUES = (
    _PLAUSIBLE
    | _PLAUSIBLE
    | _PLAUSIBLE
    | st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=6),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    )
)


@st.composite
def _bodies(draw):
    """A valid body of a request model, with some of its fields set to arbitrary values."""
    model = draw(st.sampled_from(list(_MINIMAL_BODIES)))
    names = st.sampled_from(sorted(model.model_fields))
    changes = draw(st.dictionaries(names, _VALUES, max_size=2))
    return model, {**_MINIMAL_BODIES[model], **changes}


@settings(max_examples=500, deadline=None)
@given(case=_bodies())
def test_a_body_read_in_one_pass_is_what_fastapi_reads(case):
    """The direct path validates the raw bytes; where that succeeds, FastAPI's json.loads and
    validation read the same request (where it fails, the app's route answers)."""
    model, fields = case
    body = json.dumps(fields).encode()
    try:
        direct = model.model_validate_json(body)
    except PydanticValidationError:
        return
    standard = model.model_validate(json.loads(body))
    assert direct == standard
    assert direct.model_fields_set == standard.model_fields_set
