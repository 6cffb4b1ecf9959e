"""``kalibr-core keys create/list/revoke`` and ``serve``'s refusal of a public host."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from kalibr_core import Intelligence
from kalibr_core.cli import main
from kalibr_core.service import create_app


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_keys_create_list_revoke(capsys, tmp_db):
    code, out, err = run(
        capsys, "keys", "create", "--tenant", "acme", "--name", "ci", "--db", tmp_db
    )
    assert code == 0
    created = json.loads(out)
    assert created["tenant"] == "acme"
    assert created["name"] == "ci"
    assert created["api_key"].startswith("kc_")
    assert "cannot be shown again" in err
    run(capsys, "keys", "create", "--tenant", "globex", "--db", tmp_db)

    code, out, _ = run(capsys, "keys", "list", "--db", tmp_db)
    assert code == 0
    listed = json.loads(out)
    assert [k["tenant"] for k in listed] == ["acme", "globex"]
    assert created["api_key"] not in out
    assert all("api_key" not in k for k in listed)
    code, out, _ = run(capsys, "keys", "list", "--tenant", "acme", "--db", tmp_db)
    assert [k["key_id"] for k in json.loads(out)] == [created["key_id"]]

    headers = {"X-API-Key": created["api_key"], "X-Tenant-ID": "acme"}
    ttl = 0.2  # a running service trusts a key it found for this long (see docs/service.md)
    with (
        Intelligence(tmp_db) as intel,
        TestClient(create_app(intel, key_cache_ttl_s=ttl)) as client,
    ):
        assert client.get("/api/v1/routing/stats?goal=g", headers=headers).status_code == 200
        code, out, _ = run(capsys, "keys", "revoke", created["key_id"], "--db", tmp_db)
        assert code == 0
        assert json.loads(out)["revoked_at"] is not None
        time.sleep(ttl)
        assert client.get("/api/v1/routing/stats?goal=g", headers=headers).status_code == 401
    code, out, _ = run(capsys, "keys", "list", "--tenant", "acme", "--db", tmp_db)
    assert json.loads(out)[0]["revoked_at"] is not None


def test_keys_errors_are_messages_not_tracebacks(capsys, tmp_db):
    code, out, err = run(capsys, "keys", "revoke", "key_unknown", "--db", tmp_db)
    assert (code, out) == (1, "")
    assert "no API key 'key_unknown'" in err
    code, out, err = run(capsys, "keys", "create", "--tenant", "not valid!", "--db", tmp_db)
    assert (code, out) == (2, "")
    assert "invalid tenant" in err


def test_keys_require_a_tenant(capsys, tmp_db):
    with pytest.raises(SystemExit) as exc:
        main(["keys", "create", "--db", tmp_db])
    assert exc.value.code == 2
    assert "--tenant" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_serve_refuses_a_public_host_without_allow_remote(capsys, tmp_db, host):
    code, _, err = run(capsys, "serve", "--host", host, "--store-url", tmp_db)
    assert code == 2
    assert "--allow-remote" in err


def test_serve_refuses_workers_without_a_shared_store(capsys):
    code, _, err = run(capsys, "serve", "--workers", "2", "--store-url", "memory://")
    assert code == 1
    assert "a SQLite file or PostgreSQL" in err
    code, _, err = run(capsys, "serve", "--workers", "0", "--store-url", "memory://")
    assert code == 2
    assert "--workers must be at least 1" in err
