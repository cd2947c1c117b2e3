"""The composition root: every part of the data plane, opened once by the app's lifespan and wired together.

`open_gateway` builds each part with the parts it uses (nothing receives this whole object) and returns
the frozen `Gateway` the handlers fetch their part from; `Gateway.aclose` closes them in dependency order.
The control plane (`tiergate.admin`) gets the narrower `ControlPlane`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiergate.gateway.accounting.auth import Authenticator, VirtualKeyAuth
from tiergate.gateway.accounting.books import Accounting, open_accounting
from tiergate.gateway.accounting.records import Refusal, Sink
from tiergate.gateway.admission import Admission
from tiergate.gateway.cache.exact import CacheBackend, MemoryBackend, RedisBackend, ResponseCache
from tiergate.gateway.cache.semantic import SemanticCache, open_client
from tiergate.gateway.cache.use import ResponseCaches
from tiergate.gateway.cascade import Cascade
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.doors.responses_store import ResponseStore
from tiergate.gateway.endpoints import Embeddings
from tiergate.gateway.feedback import FeedbackIntake
from tiergate.gateway.learning.loop import Learning, open_learning
from tiergate.gateway.pipeline import ChatPipeline, ModelAccess
from tiergate.gateway.routing.domain_embeddings import EmbeddingUnavailable, UpstreamEmbedder
from tiergate.gateway.routing.local_embeddings import Embedder
from tiergate.gateway.routing.router import Router
from tiergate.gateway.routing.table_store import (
    RouteTableStore,
    SqlRouteTableStore,
    keep_fresh,
    refresh_or_keep,
)
from tiergate.gateway.settlement import Settlement
from tiergate.gateway.telemetry.hooks import Telemetry, open_telemetry
from tiergate.gateway.telemetry.metrics import QueueStats
from tiergate.gateway.upstream.client import UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.providers.openai_compat import OpenAICompatible
from tiergate.gateway.upstream.providers.via_litellm import LiteLLMProvider
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.gateway.upstream.transport import AiohttpTransport, Transport
from tiergate.policies.domain_match import centroid

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tiergate.components")
ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when the dependency is reachable, else what is wrong."""


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """What the control plane (admin API, route-table endpoints, `/v1/usage`, the promote job) may use."""

    settings: Settings
    auth: Authenticator
    accounting: Accounting
    router: Router
    # The versions of the route table, in the accounting database: shared by replicas, kept across restarts.
    route_tables: RouteTableStore


@dataclass(frozen=True, slots=True)
class Gateway:
    """The parts of a running gateway. Handlers fetch the part they serve with; built once, never changed.

    `sinks`, `refusals` and `queues` are the hook lists filled while the parts open (the request path hands
    every record to them; the metrics sample every queue at each scrape).
    """

    settings: Settings
    fleet: Fleet
    auth: Authenticator
    access: ModelAccess
    chat: ChatPipeline
    embeddings: Embeddings
    feedback: FeedbackIntake
    responses: ResponseStore  # what the Responses door stores
    settlement: Settlement
    accounting: Accounting
    router: Router
    upstream: UpstreamClient
    telemetry: Telemetry
    caches: ResponseCaches
    embedder: Embedder | None  # loaded only when a configured feature needs embeddings
    # Domain inference by an embeddings deployment (routing.domains.embeddings); None: by `embedder`.
    domain_embedder: UpstreamEmbedder | None
    learning: Learning  # traces, shadow evaluation, registered models
    control: ControlPlane
    sinks: list[Sink]
    refusals: list[Refusal]
    queues: list[QueueStats]
    readiness: tuple[ReadinessCheck, ...]
    background: tuple[asyncio.Task[None], ...]

    async def aclose(self) -> None:
        # First: evaluations still call upstreams and book spend.
        await self.learning.aclose(self.settings.drain_timeout_s)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.caches.exact is not None:
            await self.caches.exact.aclose()
        if self.caches.semantic is not None:  # before the embedder: queued writes still embed their query
            await self.caches.semantic.aclose()
        if self.embedder is not None:
            self.embedder.close()
        self.responses.close()
        await self.accounting.aclose()
        await self.upstream.aclose()
        await self.telemetry.aclose()


async def open_gateway(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> Gateway:
    # First: it is what most often fails (database, migrations), and nothing else is open yet to be closed.
    accounting = await open_accounting(settings)
    transport: Transport
    if upstream_transport is not None:
        from tiergate.gateway.upstream.transport_httpx import HttpxTransport  # tests only: httpx loads late

        transport = HttpxTransport(upstream_transport)
    else:
        transport = AiohttpTransport()
    translated = LiteLLMProvider()
    if any(not d.fast_path for d in settings.deployments):
        translated.preload()
    fleet = Fleet(settings.deployments)
    tokens = TokenCounter()
    upstream = UpstreamClient(
        settings.upstream,
        fleet,
        fast_path=OpenAICompatible(transport, settings.upstream.connect_timeout_s),
        translated=translated,
        rng=rng,
    )
    queues: list[QueueStats] = []
    telemetry = open_telemetry(settings, upstream=upstream, queues=queues)
    router = Router(settings.routing, fleet, settings.escalation, seed=settings.learning.shadow.seed)
    background: list[asyncio.Task[None]] = []
    remote = settings.routing.domains.embeddings
    embedder = None
    if (settings.routing.any_needs_domain and remote is None) or settings.cache.any_semantic:
        embedder = await asyncio.to_thread(Embedder)
    if remote is None and embedder is not None:
        router.seed(await _seed_centroids(router, embedder.aembed))
    exact = _open_cache(settings)
    if exact is not None:
        queues.append(exact)
    domain_embedder = None
    if remote is not None and settings.routing.any_needs_domain:
        domain_embedder = UpstreamEmbedder(remote, upstream, fleet, accounting.ledger.sink, tokens)
        if router.settings.domains.seeds and not await _try_seeding(router, domain_embedder):
            background.append(asyncio.ensure_future(_keep_seeding(router, domain_embedder)))
    semantic = None
    if settings.cache.any_semantic and embedder is not None:
        client = await asyncio.to_thread(open_client, settings.chroma_url, settings.chroma_path)
        semantic = SemanticCache(
            client,
            embedder,
            queue_size=settings.cache.write_queue,
            prune_s=settings.cache.prune_s,
            lookup_timeout_s=settings.cache.lookup_timeout_s,
        )
        queues.append(semantic)
    if telemetry.metrics.multiproc_dir is not None:
        background.append(asyncio.ensure_future(telemetry.refresh_periodically()))
    route_tables = SqlRouteTableStore(accounting.engine)
    # The newest version before the first request; then every refresh_s in the background.
    await refresh_or_keep(route_tables, router)
    background.append(asyncio.ensure_future(keep_fresh(route_tables, router, settings.routing.refresh_s)))
    queues.append(accounting.ledger)
    responses = ResponseStore(accounting.engine, settings.responses)
    background.append(asyncio.ensure_future(responses.keep_pruned()))
    learning = await open_learning(
        settings.learning,
        accounting.engine,
        fleet=fleet,
        router=router,
        upstream=upstream,
        tokens=tokens,
        ledger=accounting.ledger.sink,
        embedder=embedder,
        metrics=telemetry.metrics.registry,
    )
    queues.extend(learning.queues)
    sinks = [*telemetry.sinks, accounting.ledger.sink, *learning.sinks]
    refusals = [*telemetry.refusals, *learning.refusals]
    auth = VirtualKeyAuth(settings.master_key, accounting.keys)
    access = ModelAccess(fleet, settings.escalation)
    settlement = Settlement(accounting, tokens, sinks)
    admission = Admission(
        accounting.limiter,
        tokens,
        fleet,
        default_max_output_tokens=settings.accounting.default_max_output_tokens,
        prompt_token_margin=settings.accounting.prompt_token_margin,
    )
    caches = ResponseCaches(settings.cache, exact, semantic)
    return Gateway(
        settings=settings,
        fleet=fleet,
        auth=auth,
        access=access,
        chat=ChatPipeline(
            auth=auth,
            access=access,
            router=router,
            upstream=upstream,
            accounting=accounting,
            admission=admission,
            caches=caches,
            cascade=Cascade(settings.routing.cascade, fleet, upstream, tokens),
            settlement=settlement,
            tokens=tokens,
            embedder=embedder,
            domain_embedder=domain_embedder,
            cascade_streams=settings.routing.cascade.streams,
        ),
        embeddings=Embeddings(
            auth=auth,
            access=access,
            fleet=fleet,
            upstream=upstream,
            accounting=accounting,
            admission=admission,
            settlement=settlement,
            tokens=tokens,
        ),
        feedback=FeedbackIntake(
            auth,
            accounting.engine,
            learning.traces,
            other_replica_wait_s=settings.learning.traces.flush_s + settings.accounting.ledger_flush_s,
            default_content=settings.learning.traces.content,
        ),
        responses=responses,
        settlement=settlement,
        accounting=accounting,
        router=router,
        upstream=upstream,
        telemetry=telemetry,
        caches=caches,
        embedder=embedder,
        domain_embedder=domain_embedder,
        learning=learning,
        control=ControlPlane(settings, auth, accounting, router, route_tables),
        sinks=sinks,
        refusals=refusals,
        queues=queues,
        readiness=(accounting.ready,),
        background=tuple(background),
    )


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
