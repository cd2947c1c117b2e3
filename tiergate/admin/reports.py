"""Cost reports, read from the ledger only.

`cost_if_teacher_usd` prices each group's real prompt and completion tokens at the teacher tier's first
deployment (the one that would answer it): sum(prompt) x input price + sum(completion) x output price,
which is exactly the sum of that formula over the group's requests. The difference to `cost_usd` is what
routing and caching saved. Evaluation spend (shadow and judge calls of the learning loop, ledger rows of
kind `evaluation`) is reported in its own columns - `evaluation_calls` and `evaluation_cost_usd` - and
counted neither in `requests` nor in `cost_usd`: it is the learning loop's spend, capped per tenant per day
by `learning.shadow.daily_budget_usd`, not the clients' (whose budgets it never touches). Likewise the
calls that embed queries for domain inference when `routing.domains.embeddings` names a deployment (kind
`routing`): `routing_calls` and `routing_cost_usd`, the gateway's own spend, under the tenant it served.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.config.settings import Settings
from tiergate.gateway.db.models import LedgerEntry
from tiergate.policies.pricing import Price, cost_nano, usd

GROUPS = {"key": "key_id", "tenant": "tenant_id", "model": "model", "tier": "tier", "day": "day",
          "endpoint": "endpoint"}  # fmt: skip
COLUMNS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cache_hits",
    "cost_if_teacher_usd",
    "routing_calls",
    "routing_cost_usd",
    "evaluation_calls",
    "evaluation_cost_usd",
)


def teacher_price(settings: Settings) -> Price | None:
    for d in settings.deployments:
        if d.tier == "teacher" and not d.candidate:
            return d.price
    return None


def parse_time(value: str, name: str) -> int:
    """An ISO date or date-time (UTC when naive) as epoch ms; ValueError names the parameter."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"'{name}' must be an ISO 8601 date or date-time, e.g. 2025-01-31 or 2025-01-31T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ReportQuery:
    group_by: str | None = None  # None: one row of totals
    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # exclusive
    tenant_id: str | None = None
    key_id: str | None = None


async def cost_report(engine: AsyncEngine, settings: Settings, query: ReportQuery) -> dict[str, Any]:
    t = LedgerEntry.__table__.c  # type: ignore[attr-defined]
    is_request, is_evaluation, is_routing = t.kind == "request", t.kind == "evaluation", t.kind == "routing"
    group = t[GROUPS[query.group_by]] if query.group_by else None

    def total(column: Any) -> Any:
        return func.coalesce(func.sum(case((is_request, column), else_=0)), 0)

    figures = [
        func.coalesce(func.sum(case((is_request, 1), else_=0)), 0),
        total(t.prompt_tokens),
        total(t.completion_tokens),
        total(t.cost_nano),
        func.coalesce(func.sum(case(((is_request & (t.cache != "miss")), 1), else_=0)), 0),
        func.coalesce(func.sum(case((is_evaluation, t.cost_nano), else_=0)), 0),
        func.coalesce(func.sum(case((is_evaluation, 1), else_=0)), 0),
        func.coalesce(func.sum(case((is_routing, t.cost_nano), else_=0)), 0),
        func.coalesce(func.sum(case((is_routing, 1), else_=0)), 0),
    ]
    statement = select(*([group] if group is not None else []), *figures)
    if query.start_ms is not None:
        statement = statement.where(t.ts_ms >= query.start_ms)
    if query.end_ms is not None:
        statement = statement.where(t.ts_ms < query.end_ms)
    if query.tenant_id is not None:
        statement = statement.where(t.tenant_id == query.tenant_id)
    if query.key_id is not None:
        statement = statement.where(t.key_id == query.key_id)
    if group is not None:
        statement = statement.group_by(group).order_by(group)
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    teacher = teacher_price(settings)
    out = []
    for row in rows:
        values = tuple(row[1:]) if group is not None else tuple(row)
        if group is None and values[0] == 0 and values[6] == 0 and values[8] == 0:
            continue
        entry = _row(*(int(v) for v in values), teacher=teacher)
        if group is not None:
            entry = {query.group_by or "": row[0], **entry}
        out.append(entry)
    totals = (
        _row(*(sum(int(r[c]) for r in _raw(out)) for c in range(9)), teacher=teacher)
        if out
        else _row(0, 0, 0, 0, 0, 0, 0, 0, 0, teacher=teacher)
    )
    return {
        "object": "cost_report",
        "group_by": query.group_by,
        "start": _iso(query.start_ms),
        "end": _iso(query.end_ms),
        "tenant_id": query.tenant_id,
        "teacher_price": {
            "input_per_mtok": teacher.input_per_mtok,
            "output_per_mtok": teacher.output_per_mtok,
        }
        if teacher
        else None,
        "rows": out,
        "total": totals,
    }


def _raw(rows: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    return [r["_raw"] for r in rows]


def _row(
    requests: int,
    prompt: int,
    completion: int,
    cost: int,
    hits: int,
    evaluation: int,
    evaluation_calls: int,
    routing: int,
    routing_calls: int,
    *,
    teacher: Price | None,
) -> dict[str, Any]:
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": usd(cost),
        "cache_hits": hits,
        "cost_if_teacher_usd": usd(cost_nano(teacher, prompt, completion)) if teacher is not None else None,
        "routing_calls": routing_calls,
        "routing_cost_usd": usd(routing),
        "evaluation_calls": evaluation_calls,
        "evaluation_cost_usd": usd(evaluation),
        "_raw": (
            requests,
            prompt,
            completion,
            cost,
            hits,
            evaluation,
            evaluation_calls,
            routing,
            routing_calls,
        ),
    }


def _iso(ms: int | None) -> str | None:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
        if ms is not None
        else None
    )


def public(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the exact integers kept for summing."""

    def strip(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "_raw"}

    return {**report, "rows": [strip(r) for r in report["rows"]], "total": strip(report["total"])}


def to_csv(report: dict[str, Any]) -> str:
    """Rows then a TOTAL line; plain numbers (no currency signs) so spreadsheets read them as numbers."""
    key = report["group_by"] or "group"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([key, *COLUMNS])
    for row in report["rows"]:
        writer.writerow([row.get(key) if row.get(key) is not None else "", *(_cell(row[c]) for c in COLUMNS)])
    writer.writerow(["TOTAL", *(_cell(report["total"][c]) for c in COLUMNS)])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.9f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)
