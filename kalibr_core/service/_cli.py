"""``kalibr-core serve`` and ``kalibr-core keys``: run the service, manage its API keys.

The argument parsers live in :mod:`kalibr_core.cli`; these functions do the work.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kalibr_core._errors import KalibrError
from kalibr_core.service._keys import create_api_key
from kalibr_core.store import ApiKeyRecord, SqliteStore, open_store

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("kalibr_core.service")

BOOTSTRAP_KEY_ENV = "KALIBR_BOOTSTRAP_KEY"
BOOTSTRAP_TENANT_ENV = "KALIBR_BOOTSTRAP_TENANT"
# How `serve --workers N` hands the app's settings to its worker processes (JSON). Private: set
# by serve for its own children, never meant to be set by hand.
WORKER_SETTINGS_ENV = "_KALIBR_SERVE_WORKER_SETTINGS"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _key_dict(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "tenant": record.tenant,
        "name": record.name,
        "created_at": _iso(record.created_at),
        "revoked_at": _iso(record.revoked_at),
    }


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"kalibr-core: {message}\n")
    return code


def keys_create(tenant: str, name: str | None, store_url: str | None) -> int:
    """Create a key and print it once (JSON on stdout: key_id, tenant, name, api_key)."""
    try:
        store = open_store(store_url)
    except KalibrError as exc:
        return _fail(exc.message)
    try:
        created = create_api_key(store, tenant, name)
    except KalibrError as exc:
        return _fail(exc.message, 2)
    finally:
        store.close()
    _print_json({**_key_dict(created.record), "api_key": created.key})
    sys.stderr.write("Store the api_key now: only its hash is kept, it cannot be shown again.\n")
    return 0


def keys_list(tenant: str | None, store_url: str | None) -> int:
    """Print the keys (of one tenant if given), revoked ones included; never the secrets."""
    try:
        store = open_store(store_url)
    except KalibrError as exc:
        return _fail(exc.message)
    try:
        records = store.list_api_keys(tenant)
    except KalibrError as exc:
        return _fail(exc.message)
    finally:
        store.close()
    _print_json([_key_dict(r) for r in records])
    return 0


def keys_revoke(key_id: str, store_url: str | None) -> int:
    """Revoke a key (idempotent): the next request that uses it gets a 401."""
    try:
        store = open_store(store_url)
    except KalibrError as exc:
        return _fail(exc.message)
    try:
        record = store.revoke_api_key(key_id)
    except KalibrError as exc:
        return _fail(exc.message)
    finally:
        store.close()
    if record is None:
        return _fail(f"no API key {key_id!r} (see `kalibr-core keys list`)")
    _print_json(_key_dict(record))
    return 0


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def worker_app() -> FastAPI:
    """The app of one ``serve --workers N`` worker process (uvicorn's factory, in the child).

    The settings come from the parent ``serve`` through the environment.
    """
    from kalibr_core.service._app import create_app

    settings = json.loads(os.environ[WORKER_SETTINGS_ENV])
    return create_app(
        store_url=settings["store_url"],
        bootstrap_key=settings["bootstrap_key"],
        bootstrap_tenant=settings["bootstrap_tenant"],
    )


def _check_shared_store(store_url: str | None) -> str | None:
    """Open (and migrate) the store once before the workers start; an error message or None."""
    try:
        store = open_store(store_url)
    except KalibrError as exc:
        return exc.message
    try:
        if isinstance(store, SqliteStore) and store.path == ":memory:":
            return (
                "--workers needs a store the processes share (a SQLite file or PostgreSQL); "
                "an in-memory store would be one per worker"
            )
    finally:
        store.close()
    return None


def serve(
    *,
    host: str,
    port: int,
    store_url: str | None,
    allow_remote: bool,
    dev_key: str | None,
    log_level: str,
    workers: int = 1,
    access_log: bool = True,
) -> int:
    """Run the service with uvicorn until interrupted (SIGINT/SIGTERM close the store cleanly).

    Refuses a non-loopback ``host`` unless ``allow_remote``: the service speaks plain HTTP,
    so anything beyond this machine belongs behind a TLS-terminating proxy.

    With ``workers`` > 1, uvicorn starts that many processes on the same socket, each with its
    own Intelligence over the shared store (each sees the others' outcomes within
    ``sync_interval_s``). uvloop and httptools are used when installed (uvicorn's default),
    httptools through :class:`~kalibr_core.service._http.CoalescingHttpToolsProtocol`, which
    sends each response in one write.
    """
    if not is_loopback(host) and not allow_remote:
        return _fail(
            f"refusing to listen on {host}: it is reachable from other machines and the "
            "service speaks plain HTTP. Put it behind a TLS proxy and pass --allow-remote, "
            "or use --host 127.0.0.1",
            2,
        )
    if workers < 1:
        return _fail(f"--workers must be at least 1, got {workers}", 2)
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise ImportError(
            "kalibr-core serve needs uvicorn: pip install 'kalibr-core[service]'"
        ) from exc
    from kalibr_core.service._app import create_app

    bootstrap_key = dev_key or os.environ.get(BOOTSTRAP_KEY_ENV) or None
    bootstrap_tenant = os.environ.get(BOOTSTRAP_TENANT_ENV) or "default"
    if bootstrap_key:
        logger.warning(
            "a bootstrap API key is accepted for tenant %r (local use only; create real keys "
            "with `kalibr-core keys create`)",
            bootstrap_tenant,
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
    }
    from kalibr_core.service._http import HAVE_HTTPTOOLS, CoalescingHttpToolsProtocol

    if HAVE_HTTPTOOLS:
        options["http"] = CoalescingHttpToolsProtocol  # one write per response
    if workers > 1:
        problem = _check_shared_store(store_url)
        if problem is not None:
            return _fail(problem)
        os.environ[WORKER_SETTINGS_ENV] = json.dumps(
            {
                "store_url": store_url,
                "bootstrap_key": bootstrap_key,
                "bootstrap_tenant": bootstrap_tenant,
            }
        )
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)
        return 0
    try:
        app = create_app(
            store_url=store_url, bootstrap_key=bootstrap_key, bootstrap_tenant=bootstrap_tenant
        )
    except KalibrError as exc:
        return _fail(exc.message)
    uvicorn.run(app, **options)
    return 0
