"""Tenants, virtual keys, budget counters, the cost ledger, the route table's versions and stored responses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index
from sqlmodel import Field, SQLModel


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    budget_nano: int | None = Field(default=None, sa_type=BigInteger)
    budget_period: str | None = Field(default=None, max_length=10)
    rpm: int | None = Field(default=None, sa_type=BigInteger)
    tpm: int | None = Field(default=None, sa_type=BigInteger)
    # None: every configured model; otherwise tier names and deployment names.
    allowed_models: list[str] | None = Field(default=None, sa_type=JSON)
    meta: dict[str, Any] | None = Field(default=None, sa_column=Column("metadata", JSON))
    # What traces keep of this tenant's requests (full | redacted | none) and for how many days; None: the
    # config's `learning.traces` defaults.
    trace_content: str | None = Field(default=None, max_length=10)
    trace_retention_days: int | None = Field(default=None)
    # The admin API's override of the config's cache policy, as sent: {exact, semantic, nondeterministic}
    # (checked by `CacheSettings.check_override`); None: the config's policy for this tenant.
    cache: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    # Raised by a cache purge: every cache key and semantic scope of the tenant includes it, so what was
    # stored before a purge is never found again (TTL and LRU reclaim the space).
    cache_epoch: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_ms: int = Field(sa_type=BigInteger)
    updated_ms: int = Field(sa_type=BigInteger, index=True)
    # Deleted tenants stay, so that their ledger entries keep a name in reports; their keys stop working.
    deleted_ms: int | None = Field(default=None, sa_type=BigInteger)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    name: str | None = Field(default=None, max_length=200)
    # SHA-256 of the key: the plaintext is shown once, at creation, and never stored.
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=20)
    budget_nano: int | None = Field(default=None, sa_type=BigInteger)
    budget_period: str | None = Field(default=None, max_length=10)
    rpm: int | None = Field(default=None, sa_type=BigInteger)
    tpm: int | None = Field(default=None, sa_type=BigInteger)
    allowed_models: list[str] | None = Field(default=None, sa_type=JSON)
    expires_ms: int | None = Field(default=None, sa_type=BigInteger)
    revoked_ms: int | None = Field(default=None, sa_type=BigInteger)
    rotated_from: str | None = Field(default=None, max_length=40)
    created_ms: int = Field(sa_type=BigInteger)
    updated_ms: int = Field(sa_type=BigInteger, index=True)


class BudgetCounter(SQLModel, table=True):
    """Spend and open reservations of one scope ("k:<key id>" or "t:<tenant id>") in one budget period.

    Used when no Redis is configured (a single process); with Redis the counters live there.
    """

    __tablename__ = "budget_counters"

    scope: str = Field(primary_key=True, max_length=48)
    period_start: int = Field(primary_key=True, sa_type=BigInteger)
    spent_nano: int = Field(default=0, sa_type=BigInteger)
    reserved_nano: int = Field(default=0, sa_type=BigInteger)


class LedgerEntry(SQLModel, table=True):
    """One settled request. Reports read these rows and nothing else."""

    __tablename__ = "ledger"
    __table_args__ = (
        Index("ix_ledger_tenant_ts", "tenant_id", "ts_ms"),
        Index("ix_ledger_key_ts", "key_id", "ts_ms"),
    )

    # Made by the gateway per settled request; makes writing a batch twice (retry, spill replay) harmless.
    entry_id: str = Field(primary_key=True, max_length=32)
    request_id: str = Field(index=True, max_length=128)
    ts_ms: int = Field(sa_type=BigInteger, index=True)  # when the request settled
    day: str = Field(max_length=10)  # UTC date of ts_ms, for grouping by day on any database
    tenant_id: str | None = Field(default=None, max_length=40)
    key_id: str | None = Field(default=None, max_length=40)
    kind: str = Field(
        default="request", max_length=16
    )  # request | evaluation (shadow, judge) | routing (domain embeddings)
    endpoint: str = Field(max_length=16)
    requested_model: str = Field(max_length=200)
    tier: str | None = Field(default=None, max_length=16)
    deployment_id: str | None = Field(default=None, max_length=300)
    model: str | None = Field(default=None, max_length=200)
    prompt_tokens: int = Field(default=0, sa_type=BigInteger)
    completion_tokens: int = Field(default=0, sa_type=BigInteger)
    cost_nano: int = Field(default=0, sa_type=BigInteger)
    reserved_nano: int = Field(default=0, sa_type=BigInteger)
    cache: str = Field(default="miss", max_length=16)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: str = Field(max_length=32)  # ok | error | client_disconnected | upstream_broken
    status_code: int = 200
    usage_source: str = Field(default="upstream", max_length=16)


class RouteTableVersion(SQLModel, table=True):
    """One version of the global route table; rows are only ever added (a rollback adds an old content).

    The writer numbers the row (newest + 1): the primary key is what makes two replicas writing at once
    end with one version and one conflict, instead of two tables claiming the same number.
    """

    __tablename__ = "route_tables"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    doc: dict[str, Any] = Field(sa_type=JSON)  # {"routes", "centroids", "note"}
    created_ms: int = Field(sa_type=BigInteger)
    author: str = Field(max_length=200)


class StoredResponse(SQLModel, table=True):
    """A response the Responses door stored (`store`, OpenAI's default): what `previous_response_id`
    continues and `GET /v1/responses/{id}` returns. Every read filters by tenant (NULL: the master key's)."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_tenant_created", "tenant_id", "created_ms"),)

    id: str = Field(primary_key=True, max_length=64)  # resp_...
    tenant_id: str | None = Field(default=None, max_length=40)
    key_id: str | None = Field(default=None, max_length=40)
    previous_id: str | None = Field(default=None, max_length=64)  # the response this one continues
    created_ms: int = Field(sa_type=BigInteger, index=True)  # when it was stored; retention counts from it
    model: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=16)  # completed | incomplete
    input_items: list[Any] = Field(sa_type=JSON)  # the request's own `input`, as items with ids
    response: dict[str, Any] = Field(sa_type=JSON)  # the `response` object as the door returned it
