"""The record of one call: what accounting, traces, metrics and the access log consume."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tiergate.gateway.accounting.auth import Principal

if TYPE_CHECKING:
    from tiergate.gateway.accounting.limits import Ticket
    from tiergate.gateway.errors import GatewayError


@dataclass(slots=True)
class Phase:
    """A timed step of a call (auth, cache, route, upstream); `with record.phase("auth"): ...`.

    Tracing turns phases into spans after the call, so the request path pays two clock reads per step and
    nothing else, whether tracing is on or off.
    """

    name: str
    start: float = 0.0  # perf_counter()
    end: float = 0.0
    failed: bool = False

    def __enter__(self) -> Phase:
        self.start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end = time.perf_counter()
        self.failed = kind is not None


# Slots: a record waiting in the trace queue (up to `learning.traces.queue_size` of them while the database
# writer is behind) would otherwise carry a per-instance dict of its ~30 fields, ~1.2 KB of its ~4.5 KB.
@dataclass(slots=True)
class CallRecord:
    request_id: str
    endpoint: str  # "chat" | "completions" (and the other front doors) | "embeddings"
    principal: Principal
    requested_model: str
    started_at: float  # wall-clock epoch seconds
    started_perf: float = field(default=0.0, repr=False)  # perf_counter() at arrival, for durations
    stream: bool = False
    tier: str | None = None
    deployment_id: str | None = None
    model: str | None = None  # the upstream model that answered
    status_code: int = 200
    outcome: str = "ok"  # ok | error | refused | client_disconnected | upstream_broken
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
    domain: str | None = None  # the query's domain, when routing inferred one
    monitor: str | None = None  # a monitoring sample: the promoted tier the shadow evaluator compares
    cache: str = "miss"
    phases: list[Phase] = field(default_factory=list, repr=False)
    # request | evaluation (the learning loop's shadow and judge calls) | routing (domain embeddings)
    kind: str = "request"
    # What admission counted and reserved (None: no limits apply); settlement releases exactly that.
    ticket: Ticket | None = field(default=None, repr=False)
    settled: bool = field(default=False, repr=False)  # set once, by the settlement that writes the ledger row
    # The request and answer, for consumers that keep content (traces, cache); never logged by default.
    request_body: dict[str, Any] | None = field(default=None, repr=False)
    _answer: dict[str, Any] | None = field(default=None, repr=False)
    _assemble: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    # The query's embedding when routing computed one (a numpy vector), for traces; never computed for them.
    query_vector: Any = field(default=None, repr=False)

    @property
    def answer(self) -> dict[str, Any] | None:
        """The answer as a chat completion; a stream's is assembled on first access (most calls never ask)."""
        if self._answer is None and self._assemble is not None:
            self._answer, self._assemble = self._assemble(), None
        return self._answer

    @answer.setter
    def answer(self, value: dict[str, Any] | None) -> None:
        self._answer, self._assemble = value, None

    def defer_answer(self, assemble: Callable[[], dict[str, Any]]) -> None:
        self._answer, self._assemble = None, assemble

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.latency_s - self.upstream_s)

    def phase(self, name: str) -> Phase:
        """A context manager timing one step of the call; kept in `phases` in the order steps began."""
        step = Phase(name)
        self.phases.append(step)
        return step


Sink = Callable[[CallRecord], None]
"""Receives every answered call. Must not block: anything slow goes on a bounded queue."""

Refusal = Callable[[CallRecord, "GatewayError"], None]
"""Receives every call that ended in an error response (401, 403, 404, 429, 502...) instead of an answer.

The record holds what was known when the call stopped: `status_code`, `outcome` ("refused" when no upstream
was tried, else "error"), `error` (the error's code), `latency_s`, and the principal once authenticated.
"""
