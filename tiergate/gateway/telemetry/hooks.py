"""Wiring of metrics, the access log and tracing into the request path's hooks, for the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tiergate.gateway.accounting.records import Refusal, Sink
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.telemetry.logs import AccessLog
from tiergate.gateway.telemetry.metrics import (
    REFRESH_INTERVAL_S,
    Metrics,
    MetricsServer,
    QueueStats,
    multiprocess_dir,
)
from tiergate.gateway.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from tiergate.gateway.telemetry.otel import Tracing

log = logging.getLogger("tiergate")


def tracing_wanted(env: Mapping[str, str]) -> bool:
    """OTLP export is configured the standard way and not switched off."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


@dataclass
class Telemetry:
    metrics: Metrics
    sinks: list[Sink] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    tracing: Tracing | None = None
    metrics_server: MetricsServer | None = None

    async def refresh_periodically(self) -> None:
        """Multiprocess mode: a scrape reads every worker's files, so each worker keeps its gauges fresh."""
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            self.metrics.refresh()

    async def aclose(self) -> None:
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        self.metrics.close()


def open_telemetry(
    settings: Settings,
    *,
    upstream: UpstreamClient,
    queues: Sequence[QueueStats],
    env: Mapping[str, str] | None = None,
) -> Telemetry:
    env = os.environ if env is None else env
    multiproc = multiprocess_dir(env)
    metrics = Metrics(
        tenant_label=settings.metrics_tenant_label,
        deployments=[d.id for d in settings.deployments if not d.candidate],
        health=lambda: upstream.health,
        queues=queues,
        multiproc_dir=multiproc,
    )
    upstream.on_error = metrics.upstream_error
    telemetry = Telemetry(metrics, sinks=[metrics.sink], refusals=[metrics.refusal])
    if settings.access_log:
        access = AccessLog(log_prompts=settings.log_prompts)
        telemetry.sinks.append(access.sink)
        telemetry.refusals.append(access.refusal)
    if tracing_wanted(env):
        telemetry.tracing = _open_tracing(settings, env)
        if telemetry.tracing is not None:
            telemetry.sinks.append(telemetry.tracing.sink)
            telemetry.refusals.append(telemetry.tracing.refusal)
    # With several workers the metrics port belongs to the supervisor (`tiergate serve`), which adds up the
    # workers' files; a worker binding it would race its siblings for the port.
    if settings.metrics_port is not None and multiproc is None:
        telemetry.metrics_server = MetricsServer(
            metrics.registry, settings.metrics_host, settings.metrics_port
        )
    return telemetry


def _open_tracing(settings: Settings, env: Mapping[str, str]) -> Tracing | None:
    try:
        from tiergate.gateway.telemetry.otel import Tracing, provider_from_environment
    except ImportError as exc:
        log.warning("an OTLP endpoint is set but OpenTelemetry is missing (%s): install tiergate[otel]", exc)
        return None
    return Tracing(provider_from_environment(env), settings)
