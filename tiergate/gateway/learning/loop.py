"""The learning loop's parts of the data plane, opened and closed as one unit of the lifespan.

    registered models (read before the first request, then every `learning.models.refresh_s`)
    -> trace writer (a sink and a refusal hook; its queue is exported as `traces`)
    -> shadow evaluator (a sink, only when some tenant is shadowed: a fraction above zero, or following the
       route table's shares; queue `shadow`); it tells the router which tenants take monitoring samples

Closing drains in dependency order: queued evaluations first (they still call upstreams and book spend
in the ledger), then the traces, all before the accounting closes the database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.records import Refusal, Sink
from tiergate.gateway.config.learning import LearningSettings
from tiergate.gateway.learning.evaluation_budget import EvaluationBudget
from tiergate.gateway.learning.evaluation_calls import EvaluationCalls
from tiergate.gateway.learning.registry import ModelRegistry
from tiergate.gateway.learning.shadow import OUTCOMES, ShadowEvaluator
from tiergate.gateway.learning.trace_writer import TraceWriter
from tiergate.gateway.routing.local_embeddings import Embedder
from tiergate.gateway.routing.router import Router
from tiergate.gateway.upstream.client import UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.tokens import TokenCounter

log = logging.getLogger("tiergate.learning")


@dataclass
class Learning:
    registry: ModelRegistry
    traces: TraceWriter | None = None
    shadow: ShadowEvaluator | None = None
    trace_task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """What the request path hands each settled call's record to (after the ledger's)."""
        return tuple(part.sink for part in (self.traces, self.shadow) if part is not None)

    @property
    def refusals(self) -> tuple[Refusal, ...]:
        return (self.traces.refusal,) if self.traces is not None else ()

    @property
    def queues(self) -> tuple[TraceWriter | ShadowEvaluator, ...]:
        """The bounded background queues, for the metrics."""
        return tuple(part for part in (self.traces, self.shadow) if part is not None)

    async def aclose(self, drain_timeout_s: float) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.shadow is not None:
            await self.shadow.aclose(drain_timeout_s)
        if self.traces is not None and self.trace_task is not None:
            self.traces.stop()
            done, _ = await asyncio.wait({self.trace_task}, timeout=drain_timeout_s)
            if not done:
                log.error("traces were not written within %.0fs of shutdown: dropping them", drain_timeout_s)
                self.trace_task.cancel()
                await asyncio.gather(self.trace_task, return_exceptions=True)


async def open_learning(
    settings: LearningSettings,
    engine: AsyncEngine,
    *,
    fleet: Fleet,
    router: Router,
    upstream: UpstreamClient,
    tokens: TokenCounter,
    ledger: Sink,
    embedder: Embedder | None,
    metrics: CollectorRegistry,
) -> Learning:
    """The learning parts `settings` turn on; the shadow evaluator (if any) tells `router` which tenants take
    monitoring samples. `ledger` books evaluation spend; `metrics` gets the evaluations counter."""
    learning = Learning(ModelRegistry(engine, fleet))
    await learning.registry.refresh_or_keep()
    learning.tasks.append(asyncio.ensure_future(learning.registry.run(settings.models_refresh_s)))
    if settings.traces.enabled:
        traces = learning.traces = TraceWriter(engine, settings.traces)
        learning.trace_task = asyncio.ensure_future(traces.run())
    if settings.shadow.any_active:
        counter = Counter(
            "tiergate_shadow_evaluations",
            "Shadow evaluations by outcome (over_budget: skipped, the tenant's daily evaluation budget is spent).",
            ("outcome",),
            registry=metrics,
        )
        for outcome in OUTCOMES:
            counter.labels(outcome)
        calls = EvaluationCalls(upstream, fleet, tokens, ledger, EvaluationBudget(engine))
        shadow = learning.shadow = ShadowEvaluator(
            settings.shadow,
            engine,
            calls,
            fleet=fleet,
            router=router,
            embedder=embedder,
            default_content=settings.traces.content,
            count=lambda outcome: counter.labels(outcome).inc(),
        )
        router.monitors = shadow.monitors
        shadow.start()
    return learning
