"""Everything the request path uses, opened in the app's lifespan and closed on shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from tiergate.gateway.accounting import Accounting, open_accounting
from tiergate.gateway.auth import Principal, VirtualKeyAuth
from tiergate.gateway.limits import Limiter
from tiergate.gateway.providers import Provider
from tiergate.gateway.providers.openai_compat import OpenAICompatible
from tiergate.gateway.providers.via_litellm import LiteLLMProvider
from tiergate.gateway.records import Sink, access_log_sink
from tiergate.gateway.settings import Deployment, Settings
from tiergate.gateway.tokens import TokenCounter
from tiergate.gateway.transport import AiohttpTransport, HttpxTransport, Transport
from tiergate.gateway.upstream import UpstreamClient
from tiergate.policies.routing import Catalog

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when the dependency is reachable, else what is wrong."""


class Authenticator(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> Principal: ...


def build_catalog(settings: Settings) -> Catalog:
    tiers: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    deployment_tier: dict[str, str | None] = {}
    for d in settings.deployments:
        if d.candidate:  # registered for evaluation only: serves no traffic until promoted
            continue
        if d.tier is not None:
            tiers.setdefault(d.tier, []).append(d.id)
        names.setdefault(d.name, []).append(d.id)
        deployment_tier[d.id] = d.tier
    return Catalog(
        tiers={t: tuple(ids) for t, ids in tiers.items()},
        names={n: tuple(ids) for n, ids in names.items()},
        deployment_tier=deployment_tier,
    )


@dataclass
class Resources:
    settings: Settings
    catalog: Catalog
    auth: Authenticator
    upstream: UpstreamClient
    tokens: TokenCounter
    fast_path: OpenAICompatible
    translated: LiteLLMProvider
    accounting: Accounting
    sinks: list[Sink] = field(default_factory=list)
    readiness: list[ReadinessCheck] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def provider(self, deployment: Deployment) -> Provider:
        return self.fast_path if deployment.fast_path else self.translated

    @property
    def limiter(self) -> Limiter:
        return self.accounting.limiter

    async def aclose(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.accounting.aclose()
        await self.fast_path.aclose()
        await self.translated.aclose()


async def open_resources(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> Resources:
    transport: Transport = (
        HttpxTransport(upstream_transport) if upstream_transport is not None else AiohttpTransport()
    )
    translated = LiteLLMProvider()
    if any(not d.fast_path for d in settings.deployments):
        translated.preload()
    tokens = TokenCounter()
    accounting = await open_accounting(settings)
    res = Resources(
        settings=settings,
        catalog=build_catalog(settings),
        auth=VirtualKeyAuth(settings.master_key, accounting.keys),
        accounting=accounting,
        upstream=UpstreamClient(settings, rng=rng),
        tokens=tokens,
        fast_path=OpenAICompatible(transport, settings.upstream.connect_timeout_s),
        translated=translated,
    )
    res.sinks.append(accounting.ledger.sink)
    res.readiness.append(accounting.ready)
    if settings.access_log:
        res.sinks.append(access_log_sink)
    # Loading an encoding takes ~0.3 s: do it off the loop now rather than in the first request that needs it.
    res.background.append(
        asyncio.ensure_future(asyncio.to_thread(tokens.warm, {d.model for d in settings.deployments}))
    )
    return res
