"""Persistence behind one interface: the embedded SQLite store (default), an in-memory one, and
PostgreSQL for state shared by several hosts.

``open_store`` turns a URL into a store: ``sqlite:///path/to.db`` or a plain path,
``memory://`` (or ``:memory:``) for an in-memory store, and ``postgresql://`` (or
``postgres://``) for :class:`PostgresStore` (``pip install 'kalibr-core[postgres]'``; a
``?schema=name`` parameter keeps the tables in their own PostgreSQL schema).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kalibr_core._errors import ConfigurationError
from kalibr_core.store._base import Store
from kalibr_core.store._records import (
    ApiKeyRecord,
    CorrectionRecord,
    DecisionRecord,
    OutcomeRecord,
    PathRecord,
    PathTotals,
)
from kalibr_core.store._sqlite import SCHEMA_VERSION, SqliteStore, default_db_path

if TYPE_CHECKING:  # imported on first use (see __getattr__): psycopg is optional
    from kalibr_core.store._postgres import PostgresStore as PostgresStore


def open_store(url: str | os.PathLike[str] | None = None) -> Store:
    """Open the store a URL names; None means ``$KALIBR_STORE_URL``, else the default file.

    Raises:
        ConfigurationError: the URL's scheme is not supported, or PostgreSQL's is and the
            ``postgres`` extra is not installed.
        StoreError: the store cannot be opened.
    """
    if url is None:
        url = os.environ.get("KALIBR_STORE_URL") or str(default_db_path())
    text = os.fspath(url)
    if text in {":memory:", "memory://", "memory:"}:
        return SqliteStore(":memory:")
    if text.startswith("sqlite:///"):
        return SqliteStore(text[len("sqlite:///") :] or ":memory:")
    if text.startswith(("postgresql://", "postgres://")):
        return _postgres_store_class()(text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"unsupported store URL scheme {scheme!r}; use sqlite:///path/to.db, a file path,"
            " memory:// or postgresql://"
        )
    return SqliteStore(text)


def _postgres_store_class() -> type[PostgresStore]:
    try:
        from kalibr_core.store._postgres import PostgresStore
    except ImportError as exc:
        raise ConfigurationError(
            "a postgresql:// store needs psycopg 3: pip install 'kalibr-core[postgres]'"
        ) from exc
    return PostgresStore


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        return _postgres_store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "ApiKeyRecord",
    "CorrectionRecord",
    "DecisionRecord",
    "OutcomeRecord",
    "PathRecord",
    "PathTotals",
    "SqliteStore",
    "Store",
    "default_db_path",
    "open_store",
]
