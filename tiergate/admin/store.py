"""Tenants and keys in the database: what the admin API and the CLI do, in one place.

Every change bumps the row's `updated_ms`, which is how replicas without Redis notice it (their key cache
polls for it); callers announce changes through `Accounting.announce` (or `publish_change`) for the rest.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from tiergate.admin.schemas import KeyCreate, KeyOut, KeyUpdate, TenantCreate, TenantOut, TenantUpdate
from tiergate.gateway.accounting.keys import hash_key, new_key, now_ms, visible_prefix
from tiergate.gateway.config.cache import CacheSettings, UnopenedCache
from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.db.models import ApiKey, Tenant
from tiergate.gateway.errors import BadRequest, GatewayError
from tiergate.gateway.learning.registry import load_rows
from tiergate.policies.pricing import nano, usd
from tiergate.policies.routing import AUTO
from tiergate.policies.tiers import TIERS


class UnknownId(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class CacheNotOpened(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "cache_not_opened"


class KeyRevoked(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "key_revoked"


def iso(ms: int | None) -> str | None:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
        if ms is not None
        else None
    )


def _ms(value: str | None) -> int | None:
    return int(datetime.fromisoformat(value).timestamp() * 1000) if value is not None else None


def _usd(value: int | None) -> float | None:
    return usd(value) if value is not None else None


def tenant_out(t: Tenant) -> TenantOut:
    return TenantOut(
        id=t.id, name=t.name, budget_usd=_usd(t.budget_nano), budget_period=t.budget_period,
        rpm=t.rpm, tpm=t.tpm, allowed_models=t.allowed_models, metadata=t.meta,
        trace_content=t.trace_content, trace_retention_days=t.trace_retention_days,
        cache=t.cache, cache_epoch=t.cache_epoch, created_at=iso(t.created_ms) or "", updated_at=iso(t.updated_ms) or "",
    )  # fmt: skip


def key_status(k: ApiKey, at_ms: int) -> str:
    if k.revoked_ms is not None:
        return "revoked"
    if k.expires_ms is not None and k.expires_ms <= at_ms:
        return "expired"
    return "active"


def key_out(k: ApiKey) -> dict[str, Any]:
    return KeyOut(
        id=k.id, tenant_id=k.tenant_id, name=k.name, prefix=k.prefix, budget_usd=_usd(k.budget_nano),
        budget_period=k.budget_period, rpm=k.rpm, tpm=k.tpm, allowed_models=k.allowed_models,
        expires_at=iso(k.expires_ms), revoked_at=iso(k.revoked_ms), rotated_from=k.rotated_from,
        created_at=iso(k.created_ms) or "", status=key_status(k, now_ms()),
    ).model_dump()  # fmt: skip


def _limits(fields: dict[str, Any]) -> dict[str, Any]:
    """API field names and units -> column names and units."""
    out = dict(fields)
    if "budget_usd" in out:
        value = out.pop("budget_usd")
        out["budget_nano"] = nano(value) if value is not None else None
    if "metadata" in out:
        out["meta"] = out.pop("metadata")
    if "expires_at" in out:
        out["expires_ms"] = _ms(out.pop("expires_at"))
    return out


def _check_cache(config: CacheSettings, tenant_id: str | None, override: Any) -> None:
    if override is None:
        return
    try:
        config.check_override(tenant_id, override)
    except UnopenedCache as exc:
        raise CacheNotOpened(str(exc), param=exc.where) from None
    except ConfigError as exc:
        raise BadRequest(str(exc), param=exc.where, code="invalid_value") from None


def configured_model_names(settings: Settings) -> list[str]:
    """`auto`, every tier and the configured deployments' names: what `allowed_models` may always hold."""
    return [AUTO, *TIERS, *dict.fromkeys(d.name for d in settings.deployments)]


async def check_limits(engine: AsyncEngine, settings: Settings, body: BaseModel) -> None:
    """Refuse what validation of the body alone cannot see: `allowed_models` naming a model this gateway does
    not know (a typo would lock the key out of everything), and an `expires_at` already past."""
    written = body.model_dump(exclude_unset=True)
    models = written.get("allowed_models") or []
    if models:
        known = set(configured_model_names(settings))
        known |= {row.model for row in await load_rows(engine)}  # registered with `tiergate models register`
        unknown = [m for m in models if m not in known]
        if unknown:
            raise BadRequest(
                f"'allowed_models': no model named {', '.join(map(repr, unknown[:5]))}; a key may name auto,"
                f" a tier ({', '.join(TIERS)}) or a deployment: {', '.join(sorted(known - {AUTO, *TIERS})[:20])}",
                param="allowed_models",
            )
    expires = written.get("expires_at")
    if expires is not None and (_ms(expires) or 0) <= now_ms():
        raise BadRequest(
            f"'expires_at': {expires} is in the past; a key's expiry must lie in the future",
            param="expires_at",
        )


async def create_tenant(engine: AsyncEngine, body: TenantCreate, cache: CacheSettings) -> Tenant:
    """`cache`: the config's cache settings, which a tenant's `cache` override is checked against."""
    _check_cache(cache, None, body.cache)
    stamp = now_ms()
    values = _limits(body.model_dump())
    if values.get("budget_nano") is not None and values.get("budget_period") is None:
        values["budget_period"] = "monthly"
    tenant = Tenant(id="ten_" + secrets.token_hex(8), created_ms=stamp, updated_ms=stamp, **values)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        session.add(tenant)
        await session.commit()
    return tenant


async def get_tenant(engine: AsyncEngine, tenant_id: str) -> Tenant:
    async with AsyncSession(engine) as session:
        tenant = await session.get(Tenant, tenant_id)
    if tenant is None or tenant.deleted_ms is not None:
        raise UnknownId(f"no tenant with id '{tenant_id}'", param="tenant_id")
    return tenant


async def list_tenants(engine: AsyncEngine) -> list[Tenant]:
    async with AsyncSession(engine) as session:
        rows = await session.execute(
            select(Tenant).where(col(Tenant.deleted_ms).is_(None)).order_by(col(Tenant.created_ms))
        )
        return list(rows.scalars())


async def update_tenant(
    engine: AsyncEngine, tenant_id: str, body: TenantUpdate, cache: CacheSettings
) -> Tenant:
    changes = _limits(body.model_dump(exclude_unset=True))
    if changes.get("name", "") is None:
        raise BadRequest("'name' cannot be removed", param="name")
    _check_cache(cache, tenant_id, changes.get("cache"))
    async with AsyncSession(engine, expire_on_commit=False) as session:
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None or tenant.deleted_ms is not None:
            raise UnknownId(f"no tenant with id '{tenant_id}'", param="tenant_id")
        for name, value in changes.items():
            setattr(tenant, name, value)
        if tenant.budget_nano is not None and tenant.budget_period is None:
            tenant.budget_period = "monthly"
        tenant.updated_ms = now_ms()
        await session.commit()
    return tenant


async def purge_cache(engine: AsyncEngine, tenant_id: str) -> Tenant:
    """Raise the tenant's cache generation, in one statement (two purges at once raise it twice)."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        raised = await session.execute(
            update(Tenant)
            .where(col(Tenant.id) == tenant_id, col(Tenant.deleted_ms).is_(None))
            .values(cache_epoch=col(Tenant.cache_epoch) + 1, updated_ms=now_ms())
        )
        if raised.rowcount != 1:  # type: ignore[attr-defined]
            raise UnknownId(f"no tenant with id '{tenant_id}'", param="tenant_id")
        await session.commit()
    return await get_tenant(engine, tenant_id)


async def delete_tenant(engine: AsyncEngine, tenant_id: str) -> None:
    """Soft delete: the row stays for the ledger's sake; the tenant's keys stop working at once."""
    stamp = now_ms()
    async with AsyncSession(engine) as session:
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None or tenant.deleted_ms is not None:
            raise UnknownId(f"no tenant with id '{tenant_id}'", param="tenant_id")
        tenant.deleted_ms = tenant.updated_ms = stamp
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.tenant_id) == tenant_id, col(ApiKey.revoked_ms).is_(None))
            .values(revoked_ms=stamp, updated_ms=stamp)
        )
        await session.commit()


async def create_key(
    engine: AsyncEngine, body: KeyCreate, *, rotated_from: str | None = None
) -> tuple[ApiKey, str]:
    """A new key and its plaintext (returned once, never stored)."""
    await get_tenant(engine, body.tenant_id)
    secret = new_key()
    stamp = now_ms()
    values = _limits(body.model_dump())
    if values.get("budget_nano") is not None and values.get("budget_period") is None:
        values["budget_period"] = "monthly"
    key = ApiKey(
        id="key_" + secrets.token_hex(8), key_hash=hash_key(secret), prefix=visible_prefix(secret),
        rotated_from=rotated_from, created_ms=stamp, updated_ms=stamp, **values,
    )  # fmt: skip
    async with AsyncSession(engine, expire_on_commit=False) as session:
        session.add(key)
        await session.commit()
    return key, secret


async def get_key(engine: AsyncEngine, key_id: str) -> ApiKey:
    async with AsyncSession(engine) as session:
        key = await session.get(ApiKey, key_id)
    if key is None:
        raise UnknownId(f"no key with id '{key_id}'", param="key_id")
    return key


async def list_keys(engine: AsyncEngine, tenant_id: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(col(ApiKey.created_ms))
    async with AsyncSession(engine) as session:
        if tenant_id is not None:
            # A deleted tenant's keys are still listed (revoked), as `GET /keys/{id}` shows each of them.
            if await session.get(Tenant, tenant_id) is None:
                raise UnknownId(f"no tenant with id '{tenant_id}'", param="tenant_id")
            query = query.where(col(ApiKey.tenant_id) == tenant_id)
        return list((await session.execute(query)).scalars())


async def update_key(engine: AsyncEngine, key_id: str, body: KeyUpdate) -> ApiKey:
    changes = _limits(body.model_dump(exclude_unset=True))
    async with AsyncSession(engine, expire_on_commit=False) as session:
        key = await session.get(ApiKey, key_id)
        if key is None:
            raise UnknownId(f"no key with id '{key_id}'", param="key_id")
        if key.revoked_ms is not None:
            raise KeyRevoked(f"the key '{key_id}' is revoked and cannot be changed")
        for name, value in changes.items():
            setattr(key, name, value)
        if key.budget_nano is not None and key.budget_period is None:
            key.budget_period = "monthly"
        key.updated_ms = now_ms()
        await session.commit()
    return key


async def revoke_key(engine: AsyncEngine, key_id: str) -> ApiKey:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        key = await session.get(ApiKey, key_id)
        if key is None:
            raise UnknownId(f"no key with id '{key_id}'", param="key_id")
        if key.revoked_ms is None:
            key.revoked_ms = key.updated_ms = now_ms()
            await session.commit()
    return key


async def rotate_key(engine: AsyncEngine, key_id: str, grace_s: float) -> tuple[ApiKey, str, ApiKey]:
    """A new key with the old one's settings; the old one expires after `grace_s`. Returns (new, secret, old)."""
    old = await get_key(engine, key_id)
    if old.revoked_ms is not None:
        raise KeyRevoked(f"the key '{key_id}' is revoked and cannot be rotated")
    body = KeyCreate(
        tenant_id=old.tenant_id, name=old.name, budget_usd=_usd(old.budget_nano), budget_period=old.budget_period,  # type: ignore[arg-type]
        rpm=old.rpm, tpm=old.tpm, allowed_models=old.allowed_models, expires_at=iso(old.expires_ms),
    )  # fmt: skip
    new, secret = await create_key(engine, body, rotated_from=old.id)
    stamp = now_ms()
    ends = stamp + int(grace_s * 1000)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        fresh = await session.get(ApiKey, old.id)
        assert fresh is not None
        fresh.expires_ms = min(ends, fresh.expires_ms) if fresh.expires_ms is not None else ends
        fresh.updated_ms = stamp
        await session.commit()
    return new, secret, fresh
