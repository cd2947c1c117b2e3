"""The record of one finished call: what accounting, traces, metrics and the access log consume."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from tiergate.gateway.auth import Principal

if TYPE_CHECKING:
    from tiergate.gateway.limits import Ticket


@dataclass
class CallRecord:
    request_id: str
    endpoint: str  # "chat" | "embeddings"
    principal: Principal
    requested_model: str
    started_at: float  # wall-clock epoch seconds
    started_perf: float = field(default=0.0, repr=False)  # perf_counter() at arrival, for durations
    stream: bool = False
    tier: str | None = None
    deployment_id: str | None = None
    model: str | None = None  # the upstream model that answered
    status_code: int = 200
    outcome: str = "ok"  # ok | error | client_disconnected | upstream_broken
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: str = "upstream"  # upstream | counted
    cost_nano: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    upstream_s: float = 0.0
    attempts: int = 0
    escalations: tuple[str, ...] = ()
    route_reason: str = ""
    cache: str = "miss"
    kind: str = "request"  # request | evaluation (the learning loop's shadow and judge calls)
    # What admission counted and reserved (None: no limits apply); settlement releases exactly that.
    ticket: Ticket | None = field(default=None, repr=False)
    # The request and answer, for consumers that keep content (traces, cache); never logged.
    request_body: dict[str, Any] | None = field(default=None, repr=False)
    answer: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.latency_s - self.upstream_s)


Sink = Callable[[CallRecord], None]
"""Receives every finished call. Must not block: anything slow goes on a bounded queue."""

_log = logging.getLogger("tiergate.access")
_NOT_LOGGED = frozenset({"principal", "request_body", "answer", "started_perf", "ticket"})


def access_log_sink(record: CallRecord) -> None:
    """One JSON line per request: identifiers, routing and timings; never a key or prompt text."""
    line = {
        f.name: value
        for f in fields(record)
        if f.name not in _NOT_LOGGED and (value := getattr(record, f.name)) not in (None, (), "")
    }
    line["tenant_id"] = record.principal.tenant_id
    line["key_id"] = record.principal.key_id
    line["overhead_ms"] = round(record.overhead_s * 1000, 3)
    _log.info(json.dumps(line, separators=(",", ":")))
