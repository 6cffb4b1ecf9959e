"""Persistence behind one interface: the embedded SQLite store (default) and an in-memory one.

``open_store`` turns a URL into a store: ``sqlite:///path/to.db`` or a plain path, and
``memory://`` (or ``:memory:``) for an in-memory store.
"""

from __future__ import annotations

import os

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


def open_store(url: str | os.PathLike[str] | None = None) -> Store:
    """Open the store a URL names; None means ``$KALIBR_STORE_URL``, else the default file.

    Raises:
        ConfigurationError: the URL's scheme is not supported.
    """
    if url is None:
        url = os.environ.get("KALIBR_STORE_URL") or str(default_db_path())
    text = os.fspath(url)
    if text in {":memory:", "memory://", "memory:"}:
        return SqliteStore(":memory:")
    if text.startswith("sqlite:///"):
        return SqliteStore(text[len("sqlite:///") :] or ":memory:")
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"unsupported store URL scheme {scheme!r}; use sqlite:///path/to.db, a file path,"
            " or memory://"
        )
    return SqliteStore(text)


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
