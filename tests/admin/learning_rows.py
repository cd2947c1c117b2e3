"""Rows of the learning loop's tables, written directly: traces of any age, evaluations, feedback."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.learning import Evaluation, Feedback, Trace

DAY_MS = 86_400_000


def trace(tenant_id: str | None, ts_ms: int, **fields: Any) -> dict[str, Any]:
    row = {
        "trace_id": uuid.uuid4().hex, "request_id": "req_" + uuid.uuid4().hex[:12], "ts_ms": ts_ms,
        "tenant_id": tenant_id, "key_id": None, "endpoint": "chat", "requested_model": "auto", "domain": None,
        "tier": "teacher", "deployment_id": "teacher/big#1", "model": "big", "attempts": 1, "escalations": None,
        "cache": "miss", "route_reason": "fixed: teacher", "status": "ok", "status_code": 200, "error": None,
        "stream": False, "prompt_tokens": 10, "completion_tokens": 5, "cost_nano": 1000, "latency_ms": 12.5,
        "ttft_ms": None, "upstream_ms": 10.0, "content": "full",
        "messages": [{"role": "user", "content": "What is 2+2?"}], "params": None,
        "answer": {"role": "assistant", "content": "4"}, "finish_reason": "stop", "embedding": None,
    }  # fmt: skip
    return row | fields


def evaluation(tenant_id: str | None, request_id: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4().hex, "request_id": request_id, "tenant_id": tenant_id, "key_id": None, "ts_ms": ts_ms,
        "domain": None, "served_tier": "teacher", "served_deployment_id": "teacher/big#1", "served_model": "big",
        "candidate_tier": "student", "candidate_deployment_id": "student/small#0", "candidate_model": "small",
        "registered": False, "status": "ok", "agreement": "none", "agreed": False, "verdict": "worse",
        "score": 0.0, "rationale": "the candidate is wrong", "judge_version": "tiergate-judge-v1",
        "judge_model": "judge", "content": "full", "candidate_answer": {"role": "assistant", "content": "5"},
        "candidate_cost_nano": 10, "judge_cost_nano": 20,
    }  # fmt: skip
    return row | fields


def feedback(
    tenant_id: str | None, request_id: str, ts_ms: int, score: float, **fields: Any
) -> dict[str, Any]:
    row = {"id": uuid.uuid4().hex, "request_id": request_id, "tenant_id": tenant_id, "key_id": None,
           "ts_ms": ts_ms, "score": score, "label": None, "comment": "a comment"}  # fmt: skip
    return row | fields


async def write(engine: AsyncEngine, table: str, rows: list[dict[str, Any]]) -> None:
    model = {"traces": Trace, "evaluations": Evaluation, "feedback": Feedback}[table]
    async with engine.begin() as conn:
        await conn.execute(insert(model.__table__), rows)  # type: ignore[attr-defined]
