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
from typing import TYPE_CHECKING

from prometheus_client import Counter

from tiergate.gateway.learning.registry import ModelRegistry
from tiergate.gateway.learning.shadow import OUTCOMES, ShadowEvaluator
from tiergate.gateway.learning.trace_writer import TraceWriter

if TYPE_CHECKING:
    from tiergate.gateway.resources import Resources

log = logging.getLogger("tiergate.learning")


@dataclass
class Learning:
    registry: ModelRegistry
    traces: TraceWriter | None = None
    shadow: ShadowEvaluator | None = None
    trace_task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

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


async def open_learning(res: Resources) -> Learning:
    settings = res.settings.learning
    engine = res.accounting.engine
    learning = Learning(ModelRegistry(engine, res.settings))
    await learning.registry.refresh(res)
    learning.tasks.append(asyncio.ensure_future(learning.registry.run(res, settings.models_refresh_s)))
    if settings.traces.enabled:
        traces = learning.traces = TraceWriter(engine, settings.traces)
        res.sinks.append(traces.sink)
        res.refusals.append(traces.refusal)
        res.queues.append(traces)
        learning.trace_task = asyncio.ensure_future(traces.run())
    if settings.shadow.any_active:
        counter = Counter(
            "tiergate_shadow_evaluations",
            "Shadow evaluations by outcome (over_budget: skipped, the tenant's daily evaluation budget is spent).",
            ("outcome",),
            registry=res.telemetry.metrics.registry,
        )
        for outcome in OUTCOMES:
            counter.labels(outcome)
        shadow = learning.shadow = ShadowEvaluator(
            res,
            settings.shadow,
            learning.registry,
            engine,
            default_content=settings.traces.content,
            count=lambda outcome: counter.labels(outcome).inc(),
        )
        res.sinks.append(shadow.sink)
        res.router.monitors = shadow.monitors
        res.queues.append(shadow)
        shadow.start()
    return learning
