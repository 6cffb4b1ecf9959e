"""Authentication: ``X-API-Key`` names a tenant, ``X-Tenant-ID`` must be that tenant.

Every endpoint but health depends on :func:`authenticate`, which returns the tenant every
engine call of the request is scoped to. The key is looked up by its SHA-256 hash (one indexed
read, no cache, so a revoked key stops working with the next request); the tenant named in the
header is compared with the key's in constant time. Any missing or wrong credential is a 401.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from kalibr_core._domain import validate_goal
from kalibr_core.service._errors import ApiError
from kalibr_core.service._keys import hash_key
from kalibr_core.store import Store

API_KEY_HEADER = "X-API-Key"
TENANT_HEADER = "X-Tenant-ID"

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
    """

    def __init__(
        self,
        store: Store,
        *,
        bootstrap_key: str | None = None,
        bootstrap_tenant: str = "default",
    ) -> None:
        self._store = store
        self._bootstrap_hash = hash_key(bootstrap_key) if bootstrap_key else None
        self._bootstrap_tenant = validate_goal(bootstrap_tenant, field_name="bootstrap_tenant")

    def tenant_for(self, key: str | None, tenant: str | None) -> str:
        """The authenticated tenant.

        Raises:
            ApiError: 401 when a header is missing, the key is unknown or revoked, or the key
                belongs to another tenant.
            StoreError: the key could not be looked up (answered as 503).
        """
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
        digest = hash_key(key)
        owner: str | None = None
        if self._bootstrap_hash is not None and hmac.compare_digest(digest, self._bootstrap_hash):
            owner = self._bootstrap_tenant
        else:
            owner = self._store.tenant_for_key_hash(digest)
        if owner is None:
            raise _unauthorized(f"invalid or revoked API key (check {API_KEY_HEADER})")
        if not hmac.compare_digest(owner.encode(), tenant.encode()):
            raise _unauthorized(
                f"this API key is not valid for tenant {tenant[:128]!r}: a key belongs to one "
                f"tenant (check {TENANT_HEADER})"
            )
        return owner


def authenticate(
    request: Request,
    key: Annotated[str | None, Security(_api_key)],
    tenant: Annotated[str | None, Security(_tenant)],
) -> str:
    """FastAPI dependency: the tenant of the request's credentials (401 otherwise)."""
    authenticator: KeyAuthenticator = request.app.state.authenticator
    return authenticator.tenant_for(key, tenant)
