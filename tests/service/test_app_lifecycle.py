"""``create_app`` over a store URL: it owns the Intelligence and closes it at shutdown."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kalibr_core import ConfigurationError, Intelligence
from kalibr_core.service import create_app


def test_an_app_over_a_store_url_writes_its_decisions_at_shutdown(tmp_db):
    headers = {"X-API-Key": "dev", "X-Tenant-ID": "default"}
    app = create_app(store_url=tmp_db, bootstrap_key="dev")
    with TestClient(app) as client:
        client.post(
            "/api/v1/routing/paths", json={"goal": "g", "model_id": "gpt-4o"}, headers=headers
        )
        trace_id = client.post(
            "/api/v1/routing/decide", json={"goal": "g"}, headers=headers
        ).json()["trace_id"]
    with Intelligence(tmp_db) as intel:
        decision = intel.store.get_decision("default", trace_id)
    assert decision is not None
    assert decision.model_id == "gpt-4o"


def test_an_intelligence_and_a_store_url_are_exclusive(tmp_db):
    with Intelligence(":memory:") as intel, pytest.raises(ConfigurationError):
        create_app(intel, store_url=tmp_db)


def test_the_public_surface_of_the_service_package():
    import kalibr_core.service as service

    assert sorted(service.__all__) == [
        "CreatedKey",
        "KeyAuthenticator",
        "create_api_key",
        "create_app",
        "hash_key",
    ]
    for name in service.__all__:
        assert getattr(service, name).__doc__


@pytest.mark.parametrize("module", ["kalibr_core.service._app", "kalibr_core.service._keys"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), verbose=False)
    assert (result.failed, result.attempted > 0) == (0, True)
