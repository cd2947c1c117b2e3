"""Prometheus metrics: what every call and refusal adds, and the state sampled when scraped.

    tiergate_requests_total{endpoint,tenant,tier,model,status,outcome}   every call, answered or refused
    tiergate_request_duration_seconds{endpoint,tier,model}              answered calls, arrival to last byte
    tiergate_gateway_overhead_seconds{endpoint}                         the same minus the upstream wait
    tiergate_time_to_first_token_seconds{tier,model}                    streams
    tiergate_tokens_total{tenant,tier,model,type}                       type: input | output
    tiergate_cost_usd_total{tenant,tier,model}
    tiergate_cache_lookups_total{endpoint,result}                       result: CallRecord.cache (miss, exact...)
    tiergate_escalations_total{from_tier,to_tier}
    tiergate_refusals_total{tenant,reason}                              refused before any upstream call
    tiergate_upstream_errors_total{deployment,kind}                     every failed attempt, background calls too
    tiergate_upstream_circuit_open{deployment}                          1 while the deployment rests
    tiergate_queue_depth{queue}, tiergate_queue_dropped_total{queue}    every registered background queue
    tiergate_queue_rejected_total{queue}                                records a store refused on their own

Cardinality stays bounded by the configuration: `tier`, `model` and `deployment` come from the config (the
model a client *asks* for is caller-controlled text and never a label), `reason` and `kind` from the code.
`tenant` grows with the number of tenants (each adds a few dozen series); `metrics_tenant_label: false`
drops that label where a deployment has many tenants.

Several worker processes (`tiergate serve --workers N`) share one view through prometheus_client's
multiprocess mode: `PROMETHEUS_MULTIPROC_DIR` must be set before prometheus_client is imported (the serve
command does it), each worker writes its values to files there, and a scrape of any worker (or of the
supervisor's metrics port) adds them up. Sampled gauges are then refreshed by each worker every second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.errors import GatewayError
from tiergate.policies.retry import Health

__all__ = [
    "MULTIPROC_ENV",
    "REFRESH_INTERVAL_S",
    "Metrics",
    "MetricsServer",
    "QueueStats",
    "RefusingQueue",
    "clear_multiprocess_dir",
    "multiprocess_dir",
    "multiprocess_registry",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_INTERVAL_S = 1.0

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
# The gateway's own time is sub-millisecond to a few milliseconds; the buckets resolve that range.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.1, 1)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)


class QueueStats(Protocol):
    """What a bounded background queue shows to the metrics; the lifespan registers each one
    (`components.open_gateway`).

    `depth` is the number of items waiting now, `dropped` the number refused since start (monotonic).
    Both are read on the event loop and, with `metrics_port` in a single process, from the scrape thread:
    they must only read counters (e.g. `asyncio.Queue.qsize()`), never wait.
    """

    @property
    def name(self) -> str: ...

    def depth(self) -> int: ...

    def dropped(self) -> int: ...


@runtime_checkable
class RefusingQueue(QueueStats, Protocol):
    """A queue written in batches to a store that may refuse one record of a batch (`db.batches`): `rejected`
    is the number of records refused on their own since start (each logged by its ids)."""

    def rejected(self) -> int: ...


def _advance(counter: Counter, seen: dict[str, int], queue: str, total: int) -> None:
    """Bring `counter` up to a queue's monotonic `total`; the series exists (at 0) before the first count."""
    before = seen.get(queue, 0)
    if total > before:
        counter.labels(queue).inc(total - before)
        seen[queue] = total
    else:
        counter.labels(queue)


def multiprocess_dir(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get(MULTIPROC_ENV) or None


class _Series:
    """The children of one label combination, resolved once: `.labels()` costs more than the update."""

    __slots__ = ("cache", "cost", "duration", "input", "output", "requests", "ttft")

    def __init__(self, m: Metrics, key: tuple[str, ...]) -> None:
        endpoint, tenant, tier, model, status, outcome, cache, stream = key
        by_tenant = (tenant,) if m.tenant_label else ()
        self.requests = m.requests.labels(endpoint, *by_tenant, tier, model, status, outcome)
        self.duration = m.duration.labels(endpoint, tier, model)
        self.ttft = m.ttft.labels(tier, model) if stream == "stream" else None
        self.input = m.tokens.labels(*by_tenant, tier, model, "input")
        self.output = m.tokens.labels(*by_tenant, tier, model, "output")
        self.cost = m.cost.labels(*by_tenant, tier, model)
        self.cache = m.cache.labels(endpoint, cache)


class _Refresher(Collector):
    """Registered first in the registry so that every collection samples the gauges it then reports."""

    def __init__(self, refresh: Callable[[], None]) -> None:
        self._refresh = refresh

    def collect(self) -> Iterable[Metric]:
        self._refresh()
        return ()


class Metrics:
    """The gateway's metrics; `sink` and `refusal` are the hooks the request path calls."""

    def __init__(
        self,
        *,
        tenant_label: bool = True,
        deployments: Sequence[str] = (),
        health: Callable[[], Mapping[str, Health]] = dict,
        queues: Sequence[QueueStats] = (),
        multiproc_dir: str | None = None,
    ) -> None:
        self.tenant_label = tenant_label
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=False)
        self._deployments = tuple(deployments)
        self._health = health
        self._queues = queues  # the live list: queues registered later are seen at the next refresh
        self._dropped_seen: dict[str, int] = {}
        self._rejected_seen: dict[str, int] = {}
        self._refresh_lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        self._refused: dict[tuple[str, ...], tuple[Counter, ...]] = {}
        self._overhead: dict[str, Histogram] = {}
        if multiproc_dir is None:
            self.registry.register(_Refresher(self.refresh))
        tenant = ("tenant",) if tenant_label else ()
        r = self.registry
        self.requests = Counter(
            "tiergate_requests", "Calls by outcome, answered or refused.",
            ("endpoint", *tenant, "tier", "model", "status", "outcome"), registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "tiergate_request_duration_seconds", "Answered calls: arrival to the last byte sent.",
            ("endpoint", "tier", "model"), buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "tiergate_gateway_overhead_seconds",
            "Answered calls: from the request's arrival in the app to the last byte of its response handed to the "
            "server, minus the time spent waiting on upstreams.",
            ("endpoint",), buckets=_OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds", "Streams: arrival to the first content sent to the client.",
            ("tier", "model"), buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "tiergate_tokens", "Tokens billed.", (*tenant, "tier", "model", "type"), registry=r
        )
        self.cost = Counter(
            "tiergate_cost_usd", "Cost of answered calls in USD.", (*tenant, "tier", "model"), registry=r
        )
        self.cache = Counter(
            "tiergate_cache_lookups", "Answered calls by cache result.", ("endpoint", "result"), registry=r
        )
        self.escalations = Counter(
            "tiergate_escalations",
            "Escalations to a more capable tier.",
            ("from_tier", "to_tier"),
            registry=r,
        )
        self.refusals = Counter(
            "tiergate_refusals", "Calls refused before any upstream call, by error code.", (*tenant, "reason"), registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "tiergate_upstream_errors", "Failed upstream attempts.", ("deployment", "kind"), registry=r
        )  # kind: HTTP status, timeout, connection (counted by upstream_error) or stream_broken
        self.circuit_open = Gauge(
            "tiergate_upstream_circuit_open", "1 while a deployment rests after repeated failures (summed over workers).",
            ("deployment",), registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_depth = Gauge(
            "tiergate_queue_depth", "Items waiting in a background queue (summed over workers).", ("queue",),
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_dropped = Counter(
            "tiergate_queue_dropped", "Items a full background queue refused.", ("queue",), registry=r
        )
        self.queue_rejected = Counter(
            "tiergate_queue_rejected", "Items their store refused on their own (the rest of the batch written).",
            ("queue",), registry=r,
        )  # fmt: skip
        self.refresh()

    def sink(self, record: CallRecord) -> None:
        tenant = (record.principal.tenant_id or "") if self.tenant_label else ""
        key = (
            record.endpoint, tenant, record.tier or "", record.model or "", str(record.status_code),
            record.outcome, record.cache, "stream" if record.stream else "",
        )  # fmt: skip
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, key)
        series.requests.inc()
        series.duration.observe(record.latency_s)
        series.cache.inc()
        if record.ttft_s is not None and series.ttft is not None:
            series.ttft.observe(record.ttft_s)
        if record.prompt_tokens:
            series.input.inc(record.prompt_tokens)
        if record.completion_tokens:
            series.output.inc(record.completion_tokens)
        if record.cost_nano:
            series.cost.inc(record.cost_nano / 1e9)
        if record.escalations:
            self._escalated(record)
        if record.outcome == "upstream_broken" and record.deployment_id:
            self.upstream_errors.labels(record.deployment_id, "stream_broken").inc()

    def observe_overhead(self, endpoint: str, seconds: float) -> None:
        """An answered call's overhead, once its response has been sent (the app measures it, see app.py)."""
        child = self._overhead.get(endpoint)
        if child is None:
            child = self._overhead[endpoint] = self.overhead.labels(endpoint)
        child.observe(max(0.0, seconds))

    def refusal(self, record: CallRecord, error: GatewayError) -> None:
        tenant = (record.principal.tenant_id or "") if self.tenant_label else ""
        reason = (error.code or error.type) if record.attempts == 0 else ""
        key = (
            record.endpoint, tenant, record.tier or "", record.model or "", str(record.status_code),
            record.outcome, reason,
        )  # fmt: skip
        children = self._refused.get(key)
        if children is None:
            children = self._refused[key] = self._refusal_children(key)
        for child in children:
            child.inc()
        if record.escalations:
            self._escalated(record)

    def _refusal_children(self, key: tuple[str, ...]) -> tuple[Counter, ...]:
        endpoint, tenant, tier, model, status, outcome, reason = key
        by_tenant = (tenant,) if self.tenant_label else ()
        requests = self.requests.labels(endpoint, *by_tenant, tier, model, status, outcome)
        # Refused means the gateway said no before trying any upstream (a 502 after retries is not one).
        return (requests, self.refusals.labels(*by_tenant, reason)) if reason else (requests,)

    def _escalated(self, record: CallRecord) -> None:
        for escalation in record.escalations:
            # "student->teacher: why": the tiers are config names, the reason is free text and stays out.
            source, _, target = escalation.partition(":")[0].partition("->")
            self.escalations.labels(source, target).inc()

    def upstream_error(self, deployment: str, kind: str) -> None:
        """One failed upstream attempt (UpstreamClient.on_error), of a client's request or a background call."""
        self.upstream_errors.labels(deployment, kind).inc()

    def refresh(self) -> None:
        """Sample circuit breakers and queues into their gauges (on scrape, and periodically per worker)."""
        with self._refresh_lock:
            now = time.monotonic()
            health = self._health()
            for deployment in self._deployments:
                state = health.get(deployment)
                self.circuit_open.labels(deployment).set(0 if state is None or state.available(now) else 1)
            for queue in list(self._queues):
                self.queue_depth.labels(queue.name).set(queue.depth())
                _advance(self.queue_dropped, self._dropped_seen, queue.name, queue.dropped())
                if isinstance(queue, RefusingQueue):
                    _advance(self.queue_rejected, self._rejected_seen, queue.name, queue.rejected())

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type: this process's registry, or all workers' files."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.refresh()
        return generate_latest(multiprocess_registry(self.multiproc_dir)), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges so they stop counting in the sums."""
        if self.multiproc_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)  # type: ignore[no-untyped-call]


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry that adds up the values every worker wrote under `path`."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def clear_multiprocess_dir(path: str) -> None:
    """Remove the value files of a previous run (prometheus_client requires a clean directory at start)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


class MetricsServer:
    """The exposition on its own port, without a key (for scrapers inside the cluster network)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
