"""Virtual keys: how they are made and hashed, and the in-process cache that answers "who is this?".

Keys look like `sk-tg-<40 random characters>`; the database keeps their SHA-256 (keys are random, so a
plain digest cannot be inverted by guessing) and a short visible prefix. The request path never waits on
the database for a key it has seen: entries are served from memory and refreshed in the background -
changed rows are polled every `key_refresh_s` and, with Redis, every replica hears each change at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from tiergate.gateway.config.cache import CacheSettings
from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.db.models import ApiKey, Tenant
from tiergate.policies.budget import Budget
from tiergate.policies.cache import CachePolicy

log = logging.getLogger("tiergate.keys")

KEY_PREFIX = "sk-tg-"
_VISIBLE = len(KEY_PREFIX) + 6
# An unknown key is remembered briefly, so a client retrying a wrong key does not reach the database each time.
_NEGATIVE_TTL_S = 1.0
# Changed rows are read with this overlap, so clocks of replicas that disagree a little lose nothing.
_POLL_OVERLAP_MS = 5_000


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:_VISIBLE]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit that applies to a key: its own and its tenant's (None: not limited)."""

    key_scope: str
    tenant_scope: str
    key_rpm: int | None = None
    key_tpm: int | None = None
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None
    key_budget: Budget | None = None
    tenant_budget: Budget | None = None

    @property
    def counts_tokens(self) -> bool:
        return bool(self.key_tpm or self.tenant_tpm or self.key_budget or self.tenant_budget)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    tenant_id: str
    limits: Limits
    allowed_models: frozenset[str] | None
    tenant_allowed_models: frozenset[str] | None
    expires_ms: int | None
    revoked: bool  # the key was revoked or its tenant deleted
    trace_content: str | None = None  # the tenant's trace content policy (None: the config's default)
    # The tenant's admin-API cache override resolved over the config's policy (None: no override).
    cache: CachePolicy | None = None
    cache_epoch: int = 0  # the tenant's cache generation, raised by a purge


def _budget(nano: int | None, period: str | None) -> Budget | None:
    return Budget(nano, period or "monthly") if nano is not None else None


def _tenant_cache(tenant: Tenant, config: CacheSettings) -> CachePolicy | None:
    if tenant.cache is None:
        return None
    try:
        return config.with_override(tenant.id, tenant.cache)
    except ConfigError as exc:
        # Checked when written, but a row written under other rules must not lock the tenant's keys out.
        log.warning(
            "tenant %s: its cache override is ignored (%s); the config's policy applies", tenant.id, exc
        )
        return None


def key_info(key: ApiKey, tenant: Tenant, config: CacheSettings) -> KeyInfo:
    limits = Limits(
        key_scope=f"k:{key.id}",
        tenant_scope=f"t:{tenant.id}",
        key_rpm=key.rpm,
        key_tpm=key.tpm,
        tenant_rpm=tenant.rpm,
        tenant_tpm=tenant.tpm,
        key_budget=_budget(key.budget_nano, key.budget_period),
        tenant_budget=_budget(tenant.budget_nano, tenant.budget_period),
    )
    return KeyInfo(
        key_id=key.id,
        tenant_id=tenant.id,
        limits=limits,
        allowed_models=frozenset(key.allowed_models) if key.allowed_models is not None else None,
        tenant_allowed_models=frozenset(tenant.allowed_models) if tenant.allowed_models is not None else None,
        expires_ms=key.expires_ms,
        revoked=key.revoked_ms is not None or tenant.deleted_ms is not None,
        trace_content=tenant.trace_content,
        cache=_tenant_cache(tenant, config),
        cache_epoch=tenant.cache_epoch,
    )


class KeyCache:
    """Key hash -> KeyInfo, filled on first sight and kept fresh in the background."""

    def __init__(
        self, engine: AsyncEngine, *, refresh_s: float, max_age_s: float, cache: CacheSettings
    ) -> None:
        self._engine = engine
        self._cache = cache
        self._refresh_s = refresh_s
        self._max_age_s = max_age_s
        self._entries: dict[str, tuple[KeyInfo | None, float]] = {}
        self._loading: dict[str, asyncio.Future[KeyInfo | None]] = {}
        self._watermark_ms = now_ms()
        self._stale: set[str] = set()

    async def lookup(self, digest: str) -> KeyInfo | None:
        hit = self._entries.get(digest)
        if hit is not None:
            info, fetched = hit
            age = time.monotonic() - fetched
            if info is None:
                if age < _NEGATIVE_TTL_S:
                    return None
            else:
                if age > self._max_age_s and digest not in self._stale:
                    self._stale.add(digest)  # serve it now, re-read it in the background
                    asyncio.get_running_loop().create_task(self._reload_hashes([digest]))
                return info
        pending = self._loading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyInfo | None] = asyncio.get_running_loop().create_future()
        self._loading[digest] = future
        try:
            rows = await self._load(ApiKey.key_hash == digest)
            info = rows.get(digest)
            self._entries[digest] = (info, time.monotonic())
            future.set_result(info)
            return info
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters get it through their own await
            raise
        finally:
            del self._loading[digest]

    async def _load(self, *conditions: object) -> dict[str, KeyInfo]:
        query = select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id).where(*conditions)  # type: ignore[arg-type]
        async with AsyncSession(self._engine) as session:
            rows = (await session.execute(query)).all()
            return {key.key_hash: key_info(key, tenant, self._cache) for key, tenant in rows}

    async def _reload_hashes(self, digests: Iterable[str]) -> None:
        wanted = list(digests)
        try:
            fresh = await self._load(ApiKey.key_hash.in_(wanted))  # type: ignore[attr-defined]
        except Exception as exc:  # the database is away: keep serving what we have, re-read it later
            log.warning("re-reading a cached key failed (it is served as cached): %s", exc.__class__.__name__)
            return
        finally:
            self._stale.difference_update(wanted)
        self._store(wanted, fresh)

    def _store(self, digests: Iterable[str], fresh: dict[str, KeyInfo]) -> None:
        stamp = time.monotonic()
        for digest in digests:
            self._entries[digest] = (fresh.get(digest), stamp)

    async def changed(self, *, key_ids: Iterable[str] = (), tenant_ids: Iterable[str] = ()) -> None:
        """Re-read the given keys and every key of the given tenants that is cached (a change was announced)."""
        key_ids, tenant_ids = list(key_ids), list(tenant_ids)
        conditions = []
        if key_ids:
            conditions.append(ApiKey.id.in_(key_ids))  # type: ignore[attr-defined]
        if tenant_ids:
            conditions.append(ApiKey.tenant_id.in_(tenant_ids))  # type: ignore[attr-defined]
        if conditions:
            await self._refresh(or_(*conditions))
        # A new key may be one a client already tried: forget what was not found.
        self._entries = {d: e for d, e in self._entries.items() if e[0] is not None}

    async def _refresh(self, condition: object) -> None:
        fresh = await self._load(condition)
        cached = [d for d in fresh if d in self._entries]
        self._store(cached, fresh)

    async def poll_once(self) -> None:
        """Re-read the cached keys whose key or tenant row changed since the last poll."""
        since = self._watermark_ms - _POLL_OVERLAP_MS
        started = now_ms()
        await self._refresh(or_(col(ApiKey.updated_ms) >= since, col(Tenant.updated_ms) >= since))
        self._entries = {d: e for d, e in self._entries.items() if e[0] is not None}
        self._watermark_ms = started

    async def run(self) -> None:
        """The background refresh loop; survives database hiccups (it logs and tries again)."""
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.poll_once()
            except Exception as exc:  # the database being away must not end the loop
                log.warning("refreshing virtual keys failed (will retry): %s", exc.__class__.__name__)
