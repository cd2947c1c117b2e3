"""Traces: one row per call, written in batches off the response path.

The request path pays one list append (`sink`, `refusal`): the record is kept as it is and turned into a
row later, in a worker thread (content policy, redaction, serialisation), then inserted in batches of up to
`batch_size`, at least every `flush_s`. The queue is bounded by `queue_size` records; a record that finds
it full is dropped, and so is a batch the database refused three times while away - both counted in
`dropped`, exported as `tiergate_queue_dropped_total{queue="traces"}` and logged, never silent. One record
never costs another: a record whose row cannot be built, or whose row the database refuses for any reason
but being away (the batch is then written row by row, `db.batches`), is dropped alone, logged by its request
id and counted in `tiergate_queue_rejected_total{queue="traces"}`.

Content policy (per tenant, the config's `learning.traces.content` by default):
    full      messages, request parameters and answer as sent; the query embedding when routing made one
    redacted  the same with e-mail addresses, phone and card numbers and secrets masked; no embedding (the
              vector of the unredacted text would carry what was masked)
    none      no content at all, only routing, cost and timing
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.learning import TraceSettings
from tiergate.gateway.db.batches import log_refused, write_each
from tiergate.gateway.db.engine import database_unreachable
from tiergate.gateway.db.learning import Trace
from tiergate.gateway.errors import GatewayError
from tiergate.policies.redaction import redact

log = logging.getLogger("tiergate.traces")
_TABLE = Trace.__table__  # type: ignore[attr-defined]
_ATTEMPTS = 3


def content_policy(record: CallRecord, default: str) -> str:
    return record.principal.trace_content or default


def apply_policy(value: Any, policy: str) -> Any:
    """`value` as the content policy lets it be stored."""
    if value is None or policy == "none":
        return None
    return redact(value) if policy == "redacted" else value


def first_choice(doc: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(the first choice's message, its finish reason) of a chat completion."""
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None, None
    message, finish = choices[0].get("message"), choices[0].get("finish_reason")
    return (message if isinstance(message, dict) else None), (finish if isinstance(finish, str) else None)


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None


def trace_row(record: CallRecord, default_content: str) -> dict[str, Any]:
    policy = content_policy(record, default_content)
    body = record.request_body or {}
    messages = body.get("messages")  # every front door's call carries its chat-form request
    params = {k: v for k, v in body.items() if k not in ("messages", "model")} or None
    answer, finish = first_choice(record.answer)
    vector = record.query_vector if policy == "full" else None
    return {
        "trace_id": uuid.uuid4().hex,
        "request_id": record.request_id,
        "ts_ms": int(record.started_at * 1000),
        "tenant_id": record.principal.tenant_id,
        "key_id": record.principal.key_id,
        "endpoint": record.endpoint,
        "requested_model": record.requested_model[:200],
        "domain": record.domain[:200] if record.domain else None,
        "tier": record.tier,
        "deployment_id": record.deployment_id,
        "model": record.model,
        "attempts": record.attempts,
        "escalations": list(record.escalations) or None,
        "cache": record.cache,
        "route_reason": record.route_reason[:1000],
        "status": record.outcome,
        "status_code": record.status_code,
        "error": record.error[:1000] if record.error else None,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_nano": record.cost_nano,
        "latency_ms": _ms(record.latency_s) or 0.0,
        "ttft_ms": _ms(record.ttft_s),
        "upstream_ms": _ms(record.upstream_s) or 0.0,
        "content": policy,
        "messages": apply_policy(messages, policy),
        "params": apply_policy(params, policy),
        "answer": apply_policy(answer, policy),
        "finish_reason": finish,
        "embedding": np.asarray(vector, dtype=np.float32).tobytes() if vector is not None else None,
    }


def authenticated(record: CallRecord) -> bool:
    """Whether the call got past authentication: only then does it belong to someone worth a trace."""
    return any(p.name == "auth" and p.end and not p.failed for p in record.phases)


@dataclass
class TraceStats:
    written: int = 0
    overflowed: int = 0  # refused by a full queue
    failed: int = 0  # in batches the database refused `_ATTEMPTS` times (away)
    rejected: int = 0  # refused on their own: a row that could not be built, or that the database refused


class TraceWriter:
    """The trace sink and refusal hook, and the task that writes what they queue (`run`)."""

    name = "traces"  # as metrics.QueueStats

    def __init__(self, engine: AsyncEngine, settings: TraceSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._pending: list[CallRecord] = []
        self._writing: list[CallRecord] = []
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._stopping = False
        self.stats = TraceStats()

    def depth(self) -> int:
        return len(self._pending) + len(self._writing)

    def dropped(self) -> int:
        return self.stats.overflowed + self.stats.failed

    def rejected(self) -> int:
        return self.stats.rejected

    def sink(self, record: CallRecord) -> None:
        """Every answered call. One append: the row is built later, off the response path."""
        pending = self._pending
        if len(pending) >= self._settings.queue_size:
            self.stats.overflowed += 1
            return
        pending.append(record)
        if len(pending) == self._settings.batch_size:
            self._wake.set()

    def refusal(self, record: CallRecord, error: GatewayError) -> None:
        """Calls that ended in an error response, once their caller is known (a bad key traces nothing)."""
        if authenticated(record):
            self.sink(record)

    def pending_tenant(self, request_id: str) -> tuple[bool, str | None]:
        """(found, tenant id) of a call whose trace is queued here and not yet written."""
        for record in (*self._writing, *self._pending):
            if record.request_id == request_id:
                return True, record.principal.tenant_id
        return False, None

    def _rows(self, batch: list[CallRecord]) -> list[dict[str, Any]]:
        rows = []
        for record in batch:
            try:
                rows.append(trace_row(record, self._settings.content))
            except Exception as exc:  # one record's content must not cost the batch its other records
                self._reject(record.request_id, exc)
        return rows

    def _reject(self, request_id: str, exc: Exception) -> None:
        self.stats.rejected += 1
        log_refused(log, "trace of request", request_id, exc, "dropped")

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(_TABLE), rows)

    async def _write(self, batch: list[CallRecord]) -> None:
        rows = await asyncio.to_thread(self._rows, batch)
        if not rows:
            return
        for attempt in range(_ATTEMPTS):
            try:
                await self._insert(rows)
                self.stats.written += len(rows)
                return
            except Exception as exc:
                if not database_unreachable(exc):  # a row it cannot store: the others still go in
                    await self._write_each(rows)
                    return
                log.warning(
                    "trace batch of %d failed (attempt %d): %s",
                    len(rows),
                    attempt + 1,
                    exc.__class__.__name__,
                )
                if attempt + 1 < _ATTEMPTS:
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        self._fail(len(rows))

    async def _write_each(self, rows: list[dict[str, Any]]) -> None:
        done = await write_each(rows, self._insert, database_unreachable)
        self.stats.written += done.written
        for row, exc in done.refused:
            self._reject(row["request_id"], exc)
        if done.away:
            self._fail(len(done.away))

    def _fail(self, count: int) -> None:
        self.stats.failed += count
        log.error("%d traces dropped: the database is unreachable", count)

    async def run(self) -> None:
        """Write batches until `stop`, then what is still queued."""
        size = self._settings.batch_size
        while True:
            if len(self._pending) < size and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.flush_s)
            # Cleared once woken, not before waiting: a wake-up that came first (a flush) is not lost.
            self._wake.clear()
            self._writing, self._pending = self._pending[:size], self._pending[size:]
            if self._writing:
                try:
                    await self._write(self._writing)
                except (
                    Exception
                ):  # a fault of the writer itself (a record's own is handled alone) must not end it
                    self.stats.failed += len(self._writing)
                    log.exception("%d traces dropped", len(self._writing))
            self._writing = []
            self._written.set()
            if self._stopping and not self._pending:
                return

    async def flush(self) -> None:
        """Return once everything queued so far is written (or dropped)."""
        while self._pending or self._writing:
            self._written.clear()
            self._wake.set()
            await self._written.wait()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
