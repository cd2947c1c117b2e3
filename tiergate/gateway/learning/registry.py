"""Models registered at run time (`tiergate models register`), loaded by every gateway from the database.

A registered model is a deployment of its tier with `candidate=True`: it serves no traffic, and shadow
evaluation compares it with its tier's traffic. Once made active (`tiergate.admin.models.activate`, the
promote job's decision) it joins its tier's serving deployments. Every replica re-reads the table every
`learning.models.refresh_s` and swaps its catalog when something changed; a removed model stops being used
at the next refresh (calls in flight finish).

API keys are never stored: a model names the environment variable (`api_key_env`) that holds its key in
each gateway's environment. A model whose variable is missing is left out, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from tiergate.gateway.config.settings import Deployment, Settings
from tiergate.gateway.db.learning import RegisteredModel
from tiergate.policies.pricing import Price

if TYPE_CHECKING:
    from tiergate.gateway.resources import Resources

log = logging.getLogger("tiergate.registered")


def deployment_id(row: RegisteredModel) -> str:
    return f"registered/{row.tier}/{row.model}#{row.id}"


def deployment_of(row: RegisteredModel, env: Mapping[str, str]) -> Deployment | None:
    """The row as a deployment; None when its key variable is not set in this gateway's environment."""
    key = None
    if row.api_key_env:
        key = env.get(row.api_key_env) or None
        if key is None:
            return None
    return Deployment(
        id=deployment_id(row),
        name=row.model,
        model=row.model,
        tier=row.tier,
        api_base=row.api_base.rstrip("/"),
        api_key=key,
        price=Price(row.input_cost_per_mtok, row.output_cost_per_mtok),
        price_source="registered",
        candidate=row.status != "active",
    )


async def load_rows(engine: AsyncEngine) -> list[RegisteredModel]:
    async with AsyncSession(engine) as session:
        result = await session.execute(select(RegisteredModel).order_by(col(RegisteredModel.created_ms)))
        return list(result.scalars())


class ModelRegistry:
    """The registered models this gateway knows, and the catalog swap when they change."""

    def __init__(self, engine: AsyncEngine, base: Settings, env: Mapping[str, str] | None = None) -> None:
        self._engine = engine
        self._base = base  # the configured settings, without registered models
        self._env = os.environ if env is None else env
        self._known: tuple[Deployment, ...] = ()
        self._warned: set[str] = set()
        self.candidates: dict[str, Deployment] = {}
        # Registered candidate id -> its tier: what shadow evaluation chooses candidates from.
        self.candidate_tiers: dict[str, str] = {}

    def _deployments(self, rows: list[RegisteredModel]) -> tuple[Deployment, ...]:
        out = []
        for row in rows:
            deployment = deployment_of(row, self._env)
            if deployment is None:
                if row.id not in self._warned:
                    self._warned.add(row.id)
                    log.warning(
                        "registered model %s (%s) is left out: $%s is not set in this gateway's environment",
                        row.id, row.model, row.api_key_env,
                    )  # fmt: skip
                continue
            out.append(deployment)
        return tuple(out)

    async def refresh(self, res: Resources) -> bool:
        """Re-read the table; True when the set of registered deployments changed (and was installed)."""
        deployments = self._deployments(await load_rows(self._engine))
        if deployments == self._known:
            return False
        self._known = deployments
        self.install(res, deployments)
        return True

    def install(self, res: Resources, deployments: tuple[Deployment, ...]) -> None:
        from tiergate.gateway.resources import build_catalog  # resources opens this module: import late

        settings = replace(self._base, deployments=(*self._base.deployments, *deployments))
        res.upstream.add_deployments(deployments)
        catalog = build_catalog(settings)
        res.settings, res.catalog = settings, catalog
        res.router.use_catalog(catalog)
        self.candidates = {d.id: d for d in deployments if d.candidate}
        self.candidate_tiers = {d.id: d.tier for d in deployments if d.candidate and d.tier is not None}
        log.info(
            "registered models: %d candidate(s), %d active",
            len(self.candidates), len(deployments) - len(self.candidates),
        )  # fmt: skip

    async def run(self, res: Resources, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh(res)
            except Exception as exc:  # the models in force keep working; the next poll tries again
                log.warning("refreshing registered models failed: %s", exc.__class__.__name__)
