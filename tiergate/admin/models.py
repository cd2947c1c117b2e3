"""Registered models: newly trained (or newly offered) models added at run time, as candidates of a tier.

A registered model serves no traffic while its status is `candidate`: every gateway loads it within
`learning.models.refresh_s` and shadow evaluation compares it on its tier's traffic (its evaluations carry
its deployment id, `registered/<tier>/<model>#<id>`). `activate` (`tiergate models activate ID`) is the switch: an active
model joins its tier's serving deployments on every gateway at their next refresh (sharing the tier's load
with the configured deployments); `deactivate` takes it back to candidate, `remove` forgets it.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from tiergate.admin.store import UnknownId, iso
from tiergate.gateway.accounting.keys import now_ms
from tiergate.gateway.db.learning import RegisteredModel
from tiergate.gateway.errors import BadRequest
from tiergate.gateway.learning.registry import deployment_id
from tiergate.policies.tiers import TIERS, is_tier

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def model_out(row: RegisteredModel) -> dict[str, object]:
    return {
        "id": row.id,
        "deployment_id": deployment_id(row),
        "tier": row.tier,
        "model": row.model,
        "api_base": row.api_base,
        "api_key_env": row.api_key_env,
        "input_cost_per_mtok": row.input_cost_per_mtok,
        "output_cost_per_mtok": row.output_cost_per_mtok,
        "status": row.status,
        "created_at": iso(row.created_ms),
        "updated_at": iso(row.updated_ms),
    }


def _checked(
    tier: str, model: str, api_base: str, api_key_env: str | None, input_cost: float, output_cost: float
) -> None:
    if not is_tier(tier):
        raise BadRequest(f"tier must be one of {', '.join(TIERS)}", param="tier")
    if not model.strip() or len(model) > 200:
        raise BadRequest("model must be a name of 1 to 200 characters", param="model")
    parts = urlsplit(api_base)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(api_base) > 500:
        raise BadRequest("api_base must be an http(s) URL, e.g. http://vllm:8000/v1", param="api_base")
    if api_key_env is not None and not _ENV_NAME.fullmatch(api_key_env):
        raise BadRequest("api_key_env must be an environment variable name", param="api_key_env")
    for name, value in (("input_cost_per_mtok", input_cost), ("output_cost_per_mtok", output_cost)):
        if not 0 <= value < 1e6:
            raise BadRequest(f"{name} must be a price in USD per million tokens (>= 0)", param=name)


async def register(
    engine: AsyncEngine,
    *,
    tier: str,
    model: str,
    api_base: str,
    api_key_env: str | None = None,
    input_cost_per_mtok: float = 0.0,
    output_cost_per_mtok: float = 0.0,
) -> RegisteredModel:
    """Add a candidate model of `tier`; BadRequest names the field that is wrong."""
    _checked(tier, model, api_base, api_key_env, input_cost_per_mtok, output_cost_per_mtok)
    stamp = now_ms()
    row = RegisteredModel(
        id="mdl_" + secrets.token_hex(8), tier=tier, model=model.strip(), api_base=api_base.rstrip("/"),
        api_key_env=api_key_env, input_cost_per_mtok=input_cost_per_mtok,
        output_cost_per_mtok=output_cost_per_mtok, status="candidate", created_ms=stamp, updated_ms=stamp,
    )  # fmt: skip
    async with AsyncSession(engine, expire_on_commit=False) as session:
        session.add(row)
        await session.commit()
    return row


async def list_models(engine: AsyncEngine) -> list[RegisteredModel]:
    async with AsyncSession(engine) as session:
        result = await session.execute(select(RegisteredModel).order_by(col(RegisteredModel.created_ms)))
        return list(result.scalars())


async def _set_status(engine: AsyncEngine, model_id: str, status: str) -> RegisteredModel:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        row = await session.get(RegisteredModel, model_id)
        if row is None:
            raise UnknownId(f"no registered model with id '{model_id}'", param="id")
        row.status, row.updated_ms = status, now_ms()
        await session.commit()
    return row


async def activate(engine: AsyncEngine, model_id: str) -> RegisteredModel:
    """Candidate -> active: the model serves its tier's traffic on every gateway from its next refresh."""
    return await _set_status(engine, model_id, "active")


async def deactivate(engine: AsyncEngine, model_id: str) -> RegisteredModel:
    """Active -> candidate: it stops serving and is shadowed again (a demotion)."""
    return await _set_status(engine, model_id, "candidate")


async def remove(engine: AsyncEngine, model_id: str) -> RegisteredModel:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        row = await session.get(RegisteredModel, model_id)
        if row is None:
            raise UnknownId(f"no registered model with id '{model_id}'", param="id")
        await session.delete(row)
        await session.commit()
    return row
