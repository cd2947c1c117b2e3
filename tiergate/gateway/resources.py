"""Everything the request path uses, opened in the app's lifespan and closed on shutdown."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tiergate.gateway.accounting.auth import Principal, VirtualKeyAuth
from tiergate.gateway.accounting.books import Accounting, open_accounting
from tiergate.gateway.accounting.limits import Limiter
from tiergate.gateway.accounting.records import Refusal, Sink
from tiergate.gateway.cache.exact import CacheBackend, MemoryBackend, RedisBackend, ResponseCache
from tiergate.gateway.cache.semantic import SemanticCache, open_client
from tiergate.gateway.config.settings import Deployment, Settings
from tiergate.gateway.learning.loop import Learning, open_learning
from tiergate.gateway.routing.domain_embeddings import EmbeddingUnavailable, UpstreamEmbedder
from tiergate.gateway.routing.local_embeddings import Embedder
from tiergate.gateway.routing.router import Router
from tiergate.gateway.routing.table_store import (
    RouteTableStore,
    SqlRouteTableStore,
    keep_fresh,
    refresh_or_keep,
)
from tiergate.gateway.telemetry.hooks import Telemetry, open_telemetry
from tiergate.gateway.telemetry.metrics import QueueStats
from tiergate.gateway.upstream.client import UpstreamClient
from tiergate.gateway.upstream.providers import Provider
from tiergate.gateway.upstream.providers.openai_compat import OpenAICompatible
from tiergate.gateway.upstream.providers.via_litellm import LiteLLMProvider
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.gateway.upstream.transport import AiohttpTransport, Transport
from tiergate.policies.domain_match import centroid
from tiergate.policies.routing import Catalog

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tiergate.resources")
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
    telemetry: Telemetry
    accounting: Accounting
    router: Router
    # The versions of the route table, in the accounting database: shared by replicas, kept across restarts.
    route_tables: RouteTableStore
    cache: ResponseCache | None = None  # None: no tenant has the exact cache on
    semantic: SemanticCache | None = None  # None: no tenant has the semantic cache on
    embedder: Embedder | None = None  # loaded only when a configured feature needs embeddings
    # Domain inference by an embeddings deployment (routing.domains.embeddings); None: by `embedder`.
    domain_embedder: UpstreamEmbedder | None = None
    sinks: list[Sink] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    # Every bounded background queue registers here, so its depth and drops are exported as metrics.
    queues: list[QueueStats] = field(default_factory=list)
    readiness: list[ReadinessCheck] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    learning: Learning | None = None  # traces, shadow evaluation, registered models

    def provider(self, deployment: Deployment) -> Provider:
        return self.fast_path if deployment.fast_path else self.translated

    @property
    def limiter(self) -> Limiter:
        return self.accounting.limiter

    async def aclose(self) -> None:
        if self.learning is not None:  # first: evaluations still call upstreams and book spend
            await self.learning.aclose(self.settings.drain_timeout_s)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.cache is not None:
            await self.cache.aclose()
        if self.semantic is not None:  # before the embedder: queued writes still embed their query
            await self.semantic.aclose()
        if self.embedder is not None:
            self.embedder.close()
        await self.accounting.aclose()
        await self.fast_path.aclose()
        await self.translated.aclose()
        await self.telemetry.aclose()


async def open_resources(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> Resources:
    # First: it is what most often fails (database, migrations), and nothing else is open yet to be closed.
    accounting = await open_accounting(settings)
    transport: Transport
    if upstream_transport is not None:
        from tiergate.gateway.upstream.transport_httpx import HttpxTransport

        transport = HttpxTransport(upstream_transport)
    else:
        transport = AiohttpTransport()
    translated = LiteLLMProvider()
    if any(not d.fast_path for d in settings.deployments):
        translated.preload()
    tokens = TokenCounter()
    upstream = UpstreamClient(settings, rng=rng)
    queues: list[QueueStats] = []
    telemetry = open_telemetry(settings, upstream=upstream, queues=queues)
    catalog = build_catalog(settings)
    router = Router(settings.routing, catalog, settings.escalation, seed=settings.learning.shadow.seed)
    remote = settings.routing.domains.embeddings
    embedder = None
    if (settings.routing.any_needs_domain and remote is None) or settings.cache.any_semantic:
        embedder = await asyncio.to_thread(Embedder)
    if remote is None and embedder is not None:
        router.seed(await _seed_centroids(router, embedder.aembed))
    res = Resources(
        settings=settings,
        catalog=catalog,
        auth=VirtualKeyAuth(settings.master_key, accounting.keys),
        accounting=accounting,
        upstream=upstream,
        tokens=tokens,
        fast_path=OpenAICompatible(transport, settings.upstream.connect_timeout_s),
        translated=translated,
        telemetry=telemetry,
        sinks=list(telemetry.sinks),
        refusals=list(telemetry.refusals),
        queues=queues,
        router=router,
        route_tables=SqlRouteTableStore(accounting.engine),
        cache=_open_cache(settings),
        embedder=embedder,
    )
    if res.cache is not None:
        queues.append(res.cache)
    if remote is not None and settings.routing.any_needs_domain:
        res.domain_embedder = UpstreamEmbedder(
            remote, upstream, catalog, res.provider, accounting.ledger.sink, tokens
        )
        if router.settings.domains.seeds and not await _try_seeding(router, res.domain_embedder):
            res.background.append(asyncio.ensure_future(_keep_seeding(router, res.domain_embedder)))
    if settings.cache.any_semantic and embedder is not None:
        client = await asyncio.to_thread(open_client, settings.chroma_url, settings.chroma_path)
        res.semantic = SemanticCache(
            client,
            embedder,
            queue_size=settings.cache.write_queue,
            prune_s=settings.cache.prune_s,
            lookup_timeout_s=settings.cache.lookup_timeout_s,
        )
        queues.append(res.semantic)
    if telemetry.metrics.multiproc_dir is not None:
        res.background.append(asyncio.ensure_future(telemetry.refresh_periodically()))
    # The newest version before the first request; then every refresh_s in the background.
    await refresh_or_keep(res.route_tables, router)
    res.background.append(
        asyncio.ensure_future(keep_fresh(res.route_tables, router, settings.routing.refresh_s))
    )
    res.sinks.append(accounting.ledger.sink)
    queues.append(accounting.ledger)
    res.readiness.append(accounting.ready)
    res.learning = await open_learning(res)
    return res


def _open_cache(settings: Settings) -> ResponseCache | None:
    config = settings.cache
    if not config.any_exact:
        return None
    backend: CacheBackend = (
        RedisBackend(settings.redis_url, settings.redis_prefix)
        if settings.redis_url
        else MemoryBackend(config.max_bytes)
    )
    return ResponseCache(backend, queue_size=config.write_queue)


async def _seed_centroids(router: Router, embed: Callable[[list[str]], Awaitable[Any]]) -> dict[str, Any]:
    """Centroids of the domains the config names by example prompts."""
    return {
        name: centroid(await embed(list(examples)))
        for name, examples in router.settings.domains.seeds.items()
    }


async def _try_seeding(router: Router, embedder: UpstreamEmbedder) -> bool:
    """The seeds embedded by the domain deployment; False (logged) when it failed."""
    try:
        router.seed(await _seed_centroids(router, embedder.aembed))
    except EmbeddingUnavailable as exc:
        log.warning("domain seeds not embedded (%s); retrying every %g s", exc, router.settings.refresh_s)
        return False
    return True


async def _keep_seeding(router: Router, embedder: UpstreamEmbedder) -> None:
    """Retry the seeds until they are embedded: the gateway serves meanwhile, with the route table's own
    centroids only (a start does not wait for, nor fail on, an embeddings deployment that is down)."""
    while True:
        await asyncio.sleep(router.settings.refresh_s)
        if await _try_seeding(router, embedder):
            return
