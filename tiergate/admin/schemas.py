"""What the admin API accepts and returns (also the shapes of its OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema

from tiergate.policies.budget import MAX_BUDGET_NANO
from tiergate.policies.pricing import usd

Period = Literal["daily", "weekly", "monthly", "total"]
TraceContent = Literal["full", "redacted", "none"]
_MAX_USD = usd(MAX_BUDGET_NANO)  # anything above is a typo; the budget counters rely on this bound
_MAX_RATE = 10**12
_CACHE_DOC = (
    "this tenant's response-cache policy, over the config's (`cache.tenants.<id>`, else global), field by"
    " field: {exact: {enabled, ttl_s}, semantic: {enabled, threshold, align_threshold, ttl_s, domains},"
    " nondeterministic}; the same fields and bounds as `cache.tenants` in the config"
)
_CACHE_EXAMPLE = {"exact": {"enabled": False}, "semantic": {"threshold": 0.95, "ttl_s": 600}}


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 2180.0, so the API takes it; 2180.5 stays a float and is refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds come before the validator so that the JSON schema shows them as minimum/maximum.
Rate = Annotated[int, Field(ge=1, le=_MAX_RATE), BeforeValidator(_integral)]
RetentionDays = Annotated[int, Field(ge=1, le=36_500), BeforeValidator(_integral)]
Version = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
BaseVersion = Annotated[int, Field(ge=0), BeforeValidator(_integral)]
ModelName = Annotated[str, StringConstraints(pattern=r"\S")]  # not empty, not only spaces
DateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class _Strict(BaseModel):
    # Strict: "10" is not a number and true is not 1; unknown fields are mistakes, not extensions.
    model_config = ConfigDict(extra="forbid", strict=True)


class TenantCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    budget_usd: float | None = Field(default=None, ge=0, le=_MAX_USD)
    budget_period: Period | None = None
    rpm: Rate | None = None
    tpm: Rate | None = None
    allowed_models: list[ModelName] | None = Field(default=None, max_length=1000)
    metadata: dict[str, Any] | None = None
    trace_content: TraceContent | None = Field(
        default=None, description="what traces keep: full, redacted or none (null: the config's default)"
    )
    trace_retention_days: RetentionDays | None = Field(
        default=None, description="days traces are kept (null: the config's default)"
    )
    # Its fields are checked by the config's own parser (`CacheSettings.check_override`), not here.
    cache: dict[str, Any] | None = Field(default=None, description=_CACHE_DOC, examples=[_CACHE_EXAMPLE])


class TenantUpdate(_Strict):
    """Only the fields present change; null removes a limit (a tenant always has a name)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    budget_usd: float | None = Field(default=None, ge=0, le=_MAX_USD)
    budget_period: Period | None = None
    rpm: Rate | None = None
    tpm: Rate | None = None
    allowed_models: list[ModelName] | None = Field(default=None, max_length=1000)
    metadata: dict[str, Any] | None = None
    trace_content: TraceContent | None = Field(
        default=None, description="what traces keep: full, redacted or none (null: the config's default)"
    )
    trace_retention_days: RetentionDays | None = Field(
        default=None, description="days traces are kept (null: the config's default)"
    )
    cache: dict[str, Any] | None = Field(
        default=None,
        description=_CACHE_DOC + "; replaces the previous override, null removes it",
        examples=[_CACHE_EXAMPLE],
    )


def _timestamp(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2025-01-31T00:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


class KeyCreate(_Strict):
    tenant_id: str = Field(min_length=1, max_length=40)
    name: str | None = Field(default=None, max_length=200)
    budget_usd: float | None = Field(default=None, ge=0, le=_MAX_USD)
    budget_period: Period | None = None
    rpm: Rate | None = None
    tpm: Rate | None = None
    allowed_models: list[ModelName] | None = Field(default=None, max_length=1000)
    expires_at: DateTime | None = Field(default=None, description="ISO 8601 date-time; naive times are UTC")

    _check_expiry = field_validator("expires_at")(_timestamp)


class KeyUpdate(_Strict):
    """Only the fields present change; null removes a limit."""

    name: str | None = Field(default=None, max_length=200)
    budget_usd: float | None = Field(default=None, ge=0, le=_MAX_USD)
    budget_period: Period | None = None
    rpm: Rate | None = None
    tpm: Rate | None = None
    allowed_models: list[ModelName] | None = Field(default=None, max_length=1000)
    expires_at: DateTime | None = Field(default=None, description="ISO 8601 date-time; null: never expires")

    _check_expiry = field_validator("expires_at")(_timestamp)


class KeyRotate(_Strict):
    grace_period_s: float | None = Field(
        default=None,
        ge=0,
        le=365 * 86_400,
        description="how long the old key keeps working (default: config)",
    )


class TenantOut(BaseModel):
    id: str
    name: str
    budget_usd: float | None
    budget_period: Period | None
    rpm: int | None
    tpm: int | None
    allowed_models: list[str] | None
    metadata: dict[str, Any] | None
    trace_content: TraceContent | None
    trace_retention_days: int | None
    cache: dict[str, Any] | None = Field(description="the override of the config's cache policy, as set")
    cache_epoch: int = Field(description="how many times the tenant's cached answers were purged")
    created_at: str
    updated_at: str


class KeyOut(BaseModel):
    id: str
    tenant_id: str
    name: str | None
    prefix: str = Field(description="the first characters of the key, to recognise it")
    budget_usd: float | None
    budget_period: Period | None
    rpm: int | None
    tpm: int | None
    allowed_models: list[str] | None
    expires_at: str | None
    revoked_at: str | None
    rotated_from: str | None
    created_at: str
    status: Literal["active", "expired", "revoked"]


class KeyCreated(KeyOut):
    key: str = Field(description="the secret key: shown in this response only, store it now")


class Deleted(BaseModel):
    id: str
    deleted: bool = True


class CachePurged(BaseModel):
    tenant_id: str
    cache_epoch: int = Field(
        description="the tenant's new cache generation; earlier entries are never served"
    )


# The route-table endpoints are plain Starlette routes (tiergate.admin.route_tables, validated by
# tiergate.policies.route_table); these models only describe them in the admin API's OpenAPI document.
Tier = Literal["student", "ta", "teacher", "supervisor"]


DomainName = Annotated[str, StringConstraints(min_length=1)]


class RouteSampling(_Strict):
    monitor: float = Field(ge=0, le=1, description="share of the domain's traffic shadowed by the incumbent")
    incumbent: Tier = Field(description="a tier above the domain's route, which the route replaced")


class RouteTablePut(_Strict):
    routes: dict[DomainName, Tier] = Field(
        description="domain -> the cheapest tier proven good enough for it", max_length=10_000
    )
    centroids: dict[str, list[float]] | None = Field(
        default=None, description="domain -> unit vector (384 finite numbers, not all zero) naming it"
    )
    names: dict[str, Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        default=None, description="readable names of domain ids", max_length=10_000
    )
    sampling: dict[str, RouteSampling] | None = Field(
        default=None, description="domain (of `routes`) -> how its promotion keeps being monitored"
    )
    note: str | None = Field(default=None, max_length=20_000)
    base_version: BaseVersion | None = Field(
        default=None, description="write only if this is still the newest version (else 409)"
    )


class RouteTableRollback(_Strict):
    to_version: Version | None = Field(
        default=None, description="the version whose content to restore (default: the one before)"
    )


class RouteTableVersionOut(BaseModel):
    version: int
    created_ms: int
    author: str
    routes: dict[str, Tier]
    centroids: dict[str, list[float]]
    note: str
    names: dict[str, str]


class RouteTableCurrent(BaseModel):
    """The newest version (version 0 and the configured routes while none is stored)."""

    version: int
    created_ms: int | None = None
    author: str | None = None
    routes: dict[str, Tier]
    centroids: dict[str, list[float]]
    note: str | None = None
    names: dict[str, str] | None = None
    serving_version: int = Field(description="the version this replica routes by")


class RouteTableHistory(BaseModel):
    data: list[RouteTableVersionOut] = Field(description="the newest versions first")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error of the gateway, in OpenAI's shape."""

    error: ErrorDetail
