"""Who is calling: the bearer token (or Azure-style `api-key` header) resolved to a principal."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from tiergate.gateway.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "master" | "key"
    tenant_id: str | None = None
    key_id: str | None = None
    # None: every configured model; otherwise tier names and deployment names this caller may use.
    allowed_models: frozenset[str] | None = None


MASTER = Principal("master")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The secret the client sent, from `Authorization: Bearer` or `api-key`."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return headers.get("api-key") or None


class MasterKeyAuth:
    """The master key alone; virtual keys of tenants extend this (see the admin API)."""

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
