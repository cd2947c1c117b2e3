"""Who is calling: the bearer token (or an `api-key` / `x-api-key` header) resolved to a principal."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tiergate.gateway.accounting.keys import KEY_PREFIX, KeyCache, Limits, hash_key
from tiergate.gateway.errors import PermissionDenied, Unauthorized
from tiergate.policies.cache import CachePolicy

__all__ = [
    "MASTER",
    "Authenticator",
    "MasterKeyAuth",
    "Principal",
    "VirtualKeyAuth",
    "presented_key",
    "require_master",
]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "master" | "key"
    tenant_id: str | None = None
    key_id: str | None = None
    # None: every configured model; otherwise tier names and deployment names this caller may use.
    allowed_models: frozenset[str] | None = None
    # The tenant's own restriction, applied on top of the key's.
    tenant_allowed_models: frozenset[str] | None = None
    limits: Limits | None = None  # None: nothing limits this caller (the master key)
    trace_content: str | None = None  # the tenant's trace content policy (None: the config's default)
    # The tenant's cache policy with its admin-API override (None: the config's policy for the tenant).
    cache: CachePolicy | None = None
    cache_epoch: int = 0  # the tenant's cache generation: entries of an earlier one are never served


MASTER = Principal("master")


def require_master(principal: Principal) -> Principal:
    """The one check of every master-key route: the admin API, the route-table endpoints and `/metrics`.

    `authenticate` has already refused a missing or unknown key with 401 (and compared the master key in
    constant time); a tenant's valid key is a known caller that may not use this route, so 403.
    """
    if principal.kind != "master":
        raise PermissionDenied(
            "this route takes the master key, not a tenant's virtual key", code="master_key_required"
        )
    return principal


class Authenticator(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> Principal: ...


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The secret the client sent, from `Authorization: Bearer`, `api-key` (Azure's SDKs) or `x-api-key`
    (Anthropic's SDKs and Claude Code)."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return headers.get("api-key") or headers.get("x-api-key") or None


class MasterKeyAuth:
    """The master key alone (no database configured: tests of the data plane, embedders)."""

    def __init__(self, master_key: str | None) -> None:
        self._master = master_key.encode() if master_key else None

    def is_master(self, key: str) -> bool:
        return self._master is not None and hmac.compare_digest(key.encode(), self._master)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if self.is_master(key):
            return MASTER
        raise Unauthorized("invalid API key")


class VirtualKeyAuth(MasterKeyAuth):
    """The master key, and the tenants' virtual keys through the in-process key cache.

    Messages never repeat the key (not even its prefix): they end up in client logs.
    """

    def __init__(self, master_key: str | None, keys: KeyCache) -> None:
        super().__init__(master_key)
        self._keys = keys

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if self.is_master(key):
            return MASTER
        info = await self._keys.lookup(hash_key(key)) if key.startswith(KEY_PREFIX) else None
        if info is None:
            raise Unauthorized("invalid API key")
        if info.revoked:
            raise Unauthorized("this API key was revoked", code="api_key_revoked")
        if info.expires_ms is not None and time.time() * 1000 >= info.expires_ms:
            raise Unauthorized("this API key has expired", code="api_key_expired")
        return Principal(
            "key",
            tenant_id=info.tenant_id,
            key_id=info.key_id,
            allowed_models=info.allowed_models,
            tenant_allowed_models=info.tenant_allowed_models,
            limits=info.limits,
            trace_content=info.trace_content,
            cache=info.cache,
            cache_epoch=info.cache_epoch,
        )
