"""Models registered at run time (`tiergate models register`), loaded by every gateway from the database.

A registered model is a deployment of its tier with `candidate=True`: it serves no traffic, and shadow
evaluation compares it with its tier's traffic. Once made active (`tiergate.admin.models.activate`, the
promote job's decision) it joins its tier's serving deployments. Every replica re-reads the table every
`learning.models.refresh_s` and, when something changed, replaces the registered part of the fleet (the one
owner of the deployments that exist); a removed model stops being used at the next refresh (calls in flight
finish).

API keys are never stored: a model names the environment variable (`api_key_env`) that holds its key in
each gateway's environment. A model whose variable is missing is left out, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.db.learning import RegisteredModel
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.policies.pricing import Price

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
    """Reads the registered models and installs them in the fleet when they change."""

    def __init__(self, engine: AsyncEngine, fleet: Fleet, env: Mapping[str, str] | None = None) -> None:
        self._engine = engine
        self._fleet = fleet
        self._env = os.environ if env is None else env
        self._known: tuple[Deployment, ...] = ()
        self._warned: set[str] = set()

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

    async def refresh(self) -> bool:
        """Re-read the table; True when the set of registered deployments changed (and was installed)."""
        deployments = self._deployments(await load_rows(self._engine))
        if deployments == self._known:
            return False
        self._known = deployments
        self.install(deployments)
        return True

    def install(self, deployments: tuple[Deployment, ...]) -> None:
        candidates = len(self._fleet.register(deployments).candidates)
        log.info("registered models: %d candidate(s), %d active", candidates, len(deployments) - candidates)

    async def refresh_or_keep(self) -> None:
        """`refresh`, but the database being away only logs: the models in force keep working (at startup:
        the configured ones), the next poll tries again."""
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("refreshing registered models failed: %s", exc.__class__.__name__)

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh_or_keep()
