"""API keys of the service: creation, hashing, revocation.

A key is ``kc_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 hash is
stored, with the tenant it belongs to; the key itself is shown once, at creation. A slow hash
(bcrypt, argon2) protects low-entropy passwords; a 256-bit random key cannot be guessed from
its hash, and a plain hash lets the service find the key with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from kalibr_core._domain import validate_goal
from kalibr_core._errors import ValidationError
from kalibr_core.store import ApiKeyRecord, Store

KEY_PREFIX = "kc_"
_NAME_LIMIT = 200


def hash_key(key: str) -> str:
    """The stored form of a key: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def generate_key() -> str:
    """A new random key (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created: ``key`` is the only time the secret is available.

    Attributes:
        key: The secret to hand to the client (``X-API-Key``).
        record: What is stored (id, tenant, name, creation time; the hash is not exposed).
    """

    key: str
    record: ApiKeyRecord


def create_api_key(store: Store, tenant: str, name: str | None = None) -> CreatedKey:
    """Create a key for ``tenant`` and store its hash.

    Example:
        >>> from kalibr_core.store import SqliteStore
        >>> created = create_api_key(SqliteStore(":memory:"), "acme", name="ci")
        >>> created.key.startswith("kc_"), created.record.tenant
        (True, 'acme')

    Raises:
        ValidationError: the tenant or the name is invalid.
        StoreError: the store cannot save it.
    """
    tenant = validate_goal(tenant, field_name="tenant")
    if name is not None and (not isinstance(name, str) or len(name) > _NAME_LIMIT):
        raise ValidationError(f"name must be at most {_NAME_LIMIT} characters", field="name")
    key = generate_key()
    key_id = "key_" + secrets.token_hex(8)
    record = store.create_api_key(tenant, key_id, hash_key(key), name)
    return CreatedKey(key, record)
