"""The learning loop's tables: traces, feedback, shadow evaluations and registered candidate models.

Every read path filters by tenant (`tenant_id` is NULL only for calls made with the master key). Content
columns (messages, params, answer, candidate_answer, rationale, comment) hold what the tenant's content
policy allows, recorded per row in `content`: the policy in force when the row was written.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, LargeBinary, Text
from sqlmodel import Field, SQLModel

# None is SQL NULL (not the JSON value null), so that `IS NULL` finds rows without content.
_JSON = JSON(none_as_null=True)


class Trace(SQLModel, table=True):
    """One call as the gateway handled it: routing, cost, timing and (per content policy) its content."""

    __tablename__ = "traces"
    __table_args__ = (
        Index("ix_traces_tenant_ts", "tenant_id", "ts_ms"),
        Index("ix_traces_tenant_request", "tenant_id", "request_id"),
    )

    trace_id: str = Field(primary_key=True, max_length=32)
    request_id: str = Field(max_length=128)
    ts_ms: int = Field(sa_type=BigInteger, index=True)  # when the call arrived
    tenant_id: str | None = Field(default=None, max_length=40)
    key_id: str | None = Field(default=None, max_length=40)
    endpoint: str = Field(max_length=16)
    requested_model: str = Field(max_length=200)
    domain: str | None = Field(default=None, max_length=200)  # inferred when routing needed it
    tier: str | None = Field(default=None, max_length=16)
    deployment_id: str | None = Field(default=None, max_length=300)
    model: str | None = Field(default=None, max_length=200)
    attempts: int = 0
    escalations: list[str] | None = Field(default=None, sa_type=_JSON)  # "from->to: reason"
    cache: str = Field(default="miss", max_length=16)
    route_reason: str = Field(default="", max_length=1000)
    status: str = Field(max_length=32)  # ok | error | refused | client_disconnected | upstream_broken
    status_code: int = 200
    error: str | None = Field(default=None, max_length=1000)
    stream: bool = False
    prompt_tokens: int = Field(default=0, sa_type=BigInteger)
    completion_tokens: int = Field(default=0, sa_type=BigInteger)
    cost_nano: int = Field(default=0, sa_type=BigInteger)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_ms: float = 0.0
    content: str = Field(max_length=10)  # full | redacted | none
    messages: list[Any] | None = Field(default=None, sa_type=_JSON)
    params: dict[str, Any] | None = Field(
        default=None, sa_type=_JSON
    )  # the request's other fields (tools...)
    answer: dict[str, Any] | None = Field(default=None, sa_type=_JSON)  # the first choice's message
    finish_reason: str | None = Field(default=None, max_length=32)
    # The query's MiniLM vector (384 float32) when routing computed it and the content policy is `full`.
    embedding: bytes | None = Field(default=None, sa_type=LargeBinary)


class Feedback(SQLModel, table=True):
    """A user's verdict on one answer; the newest per request counts as promotion evidence."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_tenant_request", "tenant_id", "request_id"),)

    id: str = Field(primary_key=True, max_length=32)
    request_id: str = Field(max_length=128)
    tenant_id: str | None = Field(default=None, max_length=40)
    key_id: str | None = Field(default=None, max_length=40)  # the key that gave the feedback
    ts_ms: int = Field(sa_type=BigInteger, index=True)
    score: float  # 0..1; label good = 1, bad = 0
    label: str | None = Field(default=None, max_length=8)
    comment: str | None = Field(default=None, sa_type=Text)


class Evaluation(SQLModel, table=True):
    """One shadow comparison: a candidate's answer to a served request, checked and maybe judged."""

    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_tenant_ts", "tenant_id", "ts_ms"),
        Index("ix_evaluations_tenant_request", "tenant_id", "request_id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    request_id: str = Field(max_length=128)
    tenant_id: str | None = Field(default=None, max_length=40)
    key_id: str | None = Field(default=None, max_length=40)
    ts_ms: int = Field(sa_type=BigInteger, index=True)
    domain: str | None = Field(default=None, max_length=200)
    served_tier: str = Field(max_length=16)
    served_deployment_id: str | None = Field(default=None, max_length=300)
    served_model: str | None = Field(default=None, max_length=200)
    candidate_tier: str = Field(max_length=16)
    candidate_deployment_id: str | None = Field(default=None, max_length=300)
    candidate_model: str | None = Field(default=None, max_length=200)
    registered: bool = False  # the candidate is a registered model, not a serving tier
    status: str = Field(max_length=24)  # ok | candidate_failed | judge_failed
    agreement: str | None = Field(
        default=None, max_length=16
    )  # identical | json | choice | number | embedding | none
    agreed: bool | None = None
    verdict: str | None = Field(default=None, max_length=16)  # better | as_good | worse (the candidate's)
    score: float | None = None
    rationale: str | None = Field(default=None, sa_type=Text)
    judge_version: str | None = Field(default=None, max_length=40)
    judge_model: str | None = Field(default=None, max_length=200)
    content: str = Field(max_length=10)
    candidate_answer: dict[str, Any] | None = Field(default=None, sa_type=_JSON)
    candidate_cost_nano: int = Field(default=0, sa_type=BigInteger)
    judge_cost_nano: int = Field(default=0, sa_type=BigInteger)


class RegisteredModel(SQLModel, table=True):
    """A model added with `tiergate models register`: a candidate (shadowed only) until made active."""

    __tablename__ = "registered_models"

    id: str = Field(primary_key=True, max_length=40)
    tier: str = Field(max_length=16)
    model: str = Field(max_length=200)
    api_base: str = Field(max_length=500)
    # The name of the environment variable holding its key in every gateway: secrets never go in the database.
    api_key_env: str | None = Field(default=None, max_length=200)
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0
    status: str = Field(default="candidate", max_length=16)  # candidate | active
    created_ms: int = Field(sa_type=BigInteger)
    updated_ms: int = Field(sa_type=BigInteger, index=True)


class JobRun(SQLModel, table=True):
    """The last claimed run of a periodic job that every replica schedules (`tiergate/admin/jobs/lease.py`).

    One row per job; a replica runs the job only if it moves `started_ms` forward past the gap, in one
    conditional statement, so one replica per interval does the work.
    """

    __tablename__ = "job_runs"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=200)  # host, pid and a random suffix of the claiming process
    started_ms: int = Field(sa_type=BigInteger)
