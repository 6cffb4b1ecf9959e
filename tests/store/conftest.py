"""Fixtures of the store tests: a PostgreSQL server (or a clear skip) and a schema per test.

The server is ``$KALIBR_TEST_POSTGRES_URL``, by default ``postgresql://postgres@127.0.0.1:5432/
test`` (trust auth). Without it (or without psycopg) the PostgreSQL tests skip and say why;
``KALIBR_REQUIRE_POSTGRES=1`` (for a CI that has the server) turns that skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _unavailable(reason: str) -> None:
    if os.environ.get("KALIBR_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (KALIBR_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; skips when psycopg is missing or the server is unreachable."""
    url = os.environ.get("KALIBR_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'kalibr-core[postgres]'")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        _unavailable(
            f"PostgreSQL is not reachable at {url} (set KALIBR_TEST_POSTGRES_URL): "
            + " ".join(str(exc).split())
        )
    return url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema name for one test, dropped (with its tables) afterwards."""
    import psycopg

    name = f"kalibr_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
