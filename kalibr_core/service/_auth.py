"""Authentication: ``X-API-Key`` names a tenant, ``X-Tenant-ID`` must be that tenant.

Every endpoint but health depends on :func:`authenticate`, which returns the tenant every
engine call of the request is scoped to. The key is looked up by its SHA-256 hash (one indexed
read), and the answer is cached in the process for ``cache_ttl_s`` (1 s by default): a key
revoked through :meth:`KeyAuthenticator.revoke` stops working with the next request, a key
revoked elsewhere (``kalibr-core keys revoke``, another replica) within ``cache_ttl_s``. Unknown
keys are never cached, so a key just created works at once. The tenant named in the header is
compared with the key's in constant time. Any missing or wrong credential is a 401.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from kalibr_core._domain import validate_goal
from kalibr_core._errors import ConfigurationError
from kalibr_core.service._errors import ApiError
from kalibr_core.service._keys import hash_key
from kalibr_core.store import ApiKeyRecord, Store

API_KEY_HEADER = "X-API-Key"
TENANT_HEADER = "X-Tenant-ID"
KEY_CACHE_TTL_S = 1.0
_CACHE_LIMIT = 10_000  # distinct keys remembered at once; more only cost extra lookups

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="A key from `kalibr-core keys create --tenant TENANT` (shown once).",
    auto_error=False,
)
_tenant = APIKeyHeader(
    name=TENANT_HEADER,
    scheme_name="TenantId",
    description="The tenant the API key belongs to; every call is scoped to it.",
    auto_error=False,
)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


class KeyAuthenticator:
    """Maps an API key and a tenant header to the tenant, or refuses with a 401.

    Args:
        store: Where the keys' hashes live (the service's store).
        bootstrap_key: An extra key accepted for ``bootstrap_tenant`` without being stored
            (``KALIBR_BOOTSTRAP_KEY`` / ``serve --dev-key``: for local use).
        bootstrap_tenant: The tenant of the bootstrap key.
        cache_ttl_s: How long a key found in the store is trusted without asking again: the
            delay before a revocation made by another process takes effect. 0 asks the store
            on every request.

    Example:
        >>> from kalibr_core.store import SqliteStore
        >>> authenticator = KeyAuthenticator(SqliteStore(":memory:"), bootstrap_key="dev")
        >>> authenticator.tenant_for("dev", "default")
        'default'
    """

    def __init__(
        self,
        store: Store,
        *,
        bootstrap_key: str | None = None,
        bootstrap_tenant: str = "default",
        cache_ttl_s: float = KEY_CACHE_TTL_S,
    ) -> None:
        if not cache_ttl_s >= 0:
            raise ConfigurationError(f"cache_ttl_s must be >= 0 seconds, got {cache_ttl_s!r}")
        self._store = store
        self._bootstrap_hash = hash_key(bootstrap_key) if bootstrap_key else None
        self._bootstrap_tenant = validate_goal(bootstrap_tenant, field_name="bootstrap_tenant")
        self._ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, str]] = {}  # key hash -> (expiry, tenant)
        self._revocations = 0  # a lookup that overlapped a revoke() is not cached
        self._lock = threading.Lock()  # lookups run in worker threads

    def tenant_for(self, key: str | None, tenant: str | None) -> str:
        """The authenticated tenant (asks the store, blocking, when the key is not cached).

        Raises:
            ApiError: 401 when a header is missing, the key is unknown or revoked, or the key
                belongs to another tenant.
            StoreError: the key could not be looked up (answered as 503).
        """
        digest = self._digest(key, tenant)
        owner = self._known(digest)
        if owner is None:
            owner = self._lookup(digest)
        return self._check(owner, tenant)

    async def tenant_for_request(self, key: str | None, tenant: str | None) -> str:
        """:meth:`tenant_for` for the event loop: a store lookup runs in the thread pool."""
        digest = self._digest(key, tenant)
        owner = self._known(digest)
        if owner is None:
            owner = await run_in_threadpool(self._lookup, digest)
        return self._check(owner, tenant)

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke a key in the store; this authenticator refuses it from the next request on.

        Returns:
            The revoked key's record, None when the store has no such key.
        """
        try:
            return self._store.revoke_api_key(key_id)
        finally:
            with self._lock:
                self._revocations += 1
                self._cache.clear()  # it knows hashes, not key ids; revocations are rare

    def _digest(self, key: str | None, tenant: str | None) -> str:
        if not key:
            raise _unauthorized(
                f"missing {API_KEY_HEADER} header: every endpoint but "
                "/api/v1/intelligence/health needs an API key "
                "(create one with `kalibr-core keys create --tenant TENANT`)"
            )
        if not tenant:
            raise _unauthorized(
                f"missing {TENANT_HEADER} header: send the tenant your API key belongs to"
            )
        return hash_key(key)

    def _known(self, digest: str) -> str | None:
        """The tenant of the bootstrap key or of a cached key; None means ask the store."""
        if self._bootstrap_hash is not None and hmac.compare_digest(digest, self._bootstrap_hash):
            return self._bootstrap_tenant
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def _lookup(self, digest: str) -> str | None:
        with self._lock:
            asked, revocations = time.monotonic(), self._revocations
        owner = self._store.tenant_for_key_hash(digest)
        if owner is not None and self._ttl_s > 0:
            with self._lock:
                if revocations == self._revocations:  # no revoke() since the question
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.clear()
                    # Timed from the question: a revocation the store had not seen then is
                    # trusted no longer than the TTL.
                    self._cache[digest] = (asked + self._ttl_s, owner)
        return owner

    @staticmethod
    def _check(owner: str | None, tenant: str | None) -> str:
        if owner is None:
            raise _unauthorized(f"invalid or revoked API key (check {API_KEY_HEADER})")
        assert tenant is not None  # _digest refused a missing header
        if not hmac.compare_digest(owner.encode(), tenant.encode()):
            raise _unauthorized(
                f"this API key is not valid for tenant {tenant[:128]!r}: a key belongs to one "
                f"tenant (check {TENANT_HEADER})"
            )
        return owner


async def authenticate(
    request: Request,
    key: Annotated[str | None, Security(_api_key)],
    tenant: Annotated[str | None, Security(_tenant)],
) -> str:
    """FastAPI dependency: the tenant of the request's credentials (401 otherwise).

    A coroutine, so FastAPI runs it in the event loop: a cached key costs no thread hop.
    """
    authenticator: KeyAuthenticator = request.app.state.authenticator
    return await authenticator.tenant_for_request(key, tenant)
