"""Reading, exporting and purging traces: what `GET /admin/traces` and `tiergate traces` do.

Every read filters by the tenant it is given (the admin API and the CLI pass the one asked for; None means
every tenant, for the master key only). Exports page through the table by (ts_ms, trace_id), so a large
export never holds more than one page in memory.

Retention (`tiergate traces purge`): a tenant's traces older than its `trace_retention_days` (else the
config's `learning.traces.retention_days`) are deleted; master-key traces and those of tenants that no
longer exist use the default. Evaluations and feedback outlive them as promotion evidence, but lose their
content at the same age: the candidate's answer and the judge's rationale, the feedback comment.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, delete, func, null, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.admin.store import iso
from tiergate.gateway.db.learning import Evaluation, Feedback, Trace
from tiergate.gateway.db.models import Tenant
from tiergate.policies.pricing import usd

DAY_MS = 86_400_000
MAX_LIMIT = 1000
_T = Trace.__table__.c  # type: ignore[attr-defined]
_TENANTS = Tenant.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TraceQuery:
    tenant_id: str | None = None  # None: every tenant (the master key's view)
    domain: str | None = None
    tier: str | None = None
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.tenant_id is not None:
            out.append(_T.tenant_id == self.tenant_id)
        if self.domain is not None:
            out.append(_T.domain == self.domain)
        if self.tier is not None:
            out.append(_T.tier == self.tier)
        if self.since_ms is not None:
            out.append(_T.ts_ms >= self.since_ms)
        if self.until_ms is not None:
            out.append(_T.ts_ms < self.until_ms)
        return out


def trace_out(row: Any, *, embedding: bool = False) -> dict[str, Any]:
    """A trace as the API and the exports show it (money in USD, times as ISO 8601 and epoch ms)."""
    out = {
        "id": row.trace_id,
        "request_id": row.request_id,
        "created_at": iso(row.ts_ms),
        "ts_ms": row.ts_ms,
        "tenant_id": row.tenant_id,
        "key_id": row.key_id,
        "endpoint": row.endpoint,
        "requested_model": row.requested_model,
        "domain": row.domain,
        "tier": row.tier,
        "deployment_id": row.deployment_id,
        "model": row.model,
        "attempts": row.attempts,
        "escalations": row.escalations or [],
        "cache": row.cache,
        "route_reason": row.route_reason,
        "status": row.status,
        "status_code": row.status_code,
        "error": row.error,
        "stream": row.stream,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_usd": usd(row.cost_nano),
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "upstream_ms": row.upstream_ms,
        "content": row.content,
        "messages": row.messages,
        "params": row.params,
        "answer": row.answer,
        "finish_reason": row.finish_reason,
    }
    if embedding:
        out["embedding"] = np.frombuffer(row.embedding, dtype=np.float32).tolist() if row.embedding else None
    return out


async def list_traces(
    engine: AsyncEngine, query: TraceQuery, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The newest `limit` traces matching `query`, and whether there are more."""
    statement = (
        select(Trace.__table__)  # type: ignore[attr-defined]
        .where(*query.conditions())
        .order_by(_T.ts_ms.desc(), _T.trace_id.desc())
        .limit(limit + 1)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return [trace_out(r) for r in rows[:limit]], len(rows) > limit


async def iter_traces(
    engine: AsyncEngine, query: TraceQuery, page: int = 1000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching trace, oldest first, a page at a time, with its embedding."""
    after: tuple[int, str] | None = None
    while True:
        conditions = query.conditions()
        if after is not None:
            conditions.append(tuple_(_T.ts_ms, _T.trace_id) > tuple_(*after))
        statement = (
            select(Trace.__table__)  # type: ignore[attr-defined]
            .where(*conditions)
            .order_by(_T.ts_ms, _T.trace_id)
            .limit(page)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        if not rows:
            return
        yield [trace_out(r, embedding=True) for r in rows]
        after = (rows[-1].ts_ms, rows[-1].trace_id)


# --- export ----------------------------------------------------------------------------------------------

_JSON_COLUMNS = ("messages", "params", "answer")


def _parquet_schema() -> Any:
    import pyarrow as pa

    text, number, integer = pa.string(), pa.float64(), pa.int64()
    columns = [
        ("id", text), ("request_id", text), ("created_at", text), ("ts_ms", integer), ("tenant_id", text),
        ("key_id", text), ("endpoint", text), ("requested_model", text), ("domain", text), ("tier", text),
        ("deployment_id", text), ("model", text), ("attempts", integer), ("escalations", pa.list_(text)),
        ("cache", text), ("route_reason", text), ("status", text), ("status_code", integer), ("error", text),
        ("stream", pa.bool_()), ("prompt_tokens", integer), ("completion_tokens", integer), ("cost_usd", number),
        ("latency_ms", number), ("ttft_ms", number), ("upstream_ms", number), ("content", text),
        ("messages", text), ("params", text), ("answer", text), ("finish_reason", text),
        ("embedding", pa.list_(pa.float32())),
    ]  # fmt: skip
    return pa.schema(columns)


def _flat(trace: dict[str, Any]) -> dict[str, Any]:
    """Parquet has one schema for every row: the free-form JSON columns go in as JSON text."""
    return {k: (json.dumps(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in trace.items()}


async def export(engine: AsyncEngine, query: TraceQuery, fmt: str, out: Path) -> int:
    """Write every matching trace to `out` as JSON lines or Parquet; returns the number written."""
    count = 0
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as f:
            async for page in iter_traces(engine, query):
                f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in page)
                count += len(page)
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    with pq.ParquetWriter(out, schema) as writer:
        async for page in iter_traces(engine, query):
            writer.write_table(pa.Table.from_pylist([_flat(t) for t in page], schema=schema))
            count += len(page)
    return count


# --- retention -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Purged:
    traces: int  # deleted
    evaluations: int  # content removed
    feedback: int  # comment removed


# (table, content columns): None deletes the rows, a tuple empties those columns.
_PURGED: tuple[tuple[Any, tuple[str, ...] | None], ...] = (
    (Trace.__table__, None),  # type: ignore[attr-defined]
    (Evaluation.__table__, ("candidate_answer", "rationale")),  # type: ignore[attr-defined]
    (Feedback.__table__, ("comment",)),  # type: ignore[attr-defined]
)


def _tenant(c: Any, ids: list[str] | None, overridden: list[str]) -> list[ColumnElement[bool]]:
    """Rows of the tenants `ids`; None: everyone whose retention is the default (not in `overridden`)."""
    if ids is not None:
        return [c.tenant_id.in_(ids)]
    return [or_(c.tenant_id.is_(None), c.tenant_id.not_in(overridden))] if overridden else []


async def purge(engine: AsyncEngine, default_days: int, now_ms: int, *, dry_run: bool = False) -> Purged:
    """Apply every tenant's retention at `now_ms`; `dry_run` counts without changing anything."""
    async with engine.connect() as conn:
        tenants = (await conn.execute(select(_TENANTS.id, _TENANTS.trace_retention_days))).all()
    groups: dict[int, list[str]] = {}
    for tenant_id, days in tenants:
        if days is not None and days != default_days:
            groups.setdefault(days, []).append(tenant_id)
    overridden = [t for ids in groups.values() for t in ids]
    scopes: list[tuple[list[str] | None, int]] = [(ids, days) for days, ids in sorted(groups.items())]
    scopes.append((None, default_days))
    totals = []
    async with engine.begin() as conn:
        for table, content in _PURGED:
            total = 0
            for ids, days in scopes:
                where = [*_tenant(table.c, ids, overridden), table.c.ts_ms < now_ms - days * DAY_MS]
                if content is not None:
                    where.append(or_(*(table.c[name].is_not(None) for name in content)))
                if dry_run:
                    total += int(
                        (
                            await conn.execute(select(func.count()).select_from(table).where(*where))
                        ).scalar_one()
                    )
                elif content is None:
                    total += (await conn.execute(delete(table).where(*where))).rowcount or 0
                else:
                    values = dict.fromkeys(content, null())
                    total += (await conn.execute(update(table).where(*where).values(values))).rowcount or 0
            totals.append(total)
    return Purged(*totals)
