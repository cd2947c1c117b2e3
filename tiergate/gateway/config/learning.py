"""The `learning:` section: traces, shadow evaluation, registered candidate models and the promote job.

Every field is listed in docs/configuration.md. A tenant's shadow override (`learning.shadow.tenants.<id>`)
writes any of the policy fields (`ShadowPolicyFields`); the fields it leaves out keep the global value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, replace
from typing import Annotated, Any

from pydantic import Field

from tiergate.gateway.config.fieldtypes import (
    FileModel,
    OneOf,
    Positive,
    PositiveSeconds,
    Share,
    Tier,
    settings_dataclass,
)
from tiergate.policies.exploration import EVALUATION_SHARE, ExplorationConfig
from tiergate.policies.pricing import nano
from tiergate.policies.promotion import PromotionConfig
from tiergate.policies.shadow import CANDIDATE_MODES
from tiergate.policies.tiers import TIERS

CONTENT_POLICIES = ("full", "redacted", "none")
Seed = Annotated[int, Field(ge=0)]
_PROMOTION = PromotionConfig()
_EXPLORATION = ExplorationConfig()

# Which share of a domain's requests is shadowed at a candidate tier (`ShadowPolicy.fraction_for`), first
# that applies:
#   1. `domains.<domain>.<tier>` of the tenant's policy: the config overrides the learning loop;
#   2. the route table's `sampling.<domain>.explore` (when `route_table` is on): the share `tiergate promote`
#      computed from the domain's evidence;
#   3. `fraction`.
# A promoted domain's `sampling.<domain>.monitor` share is not a shadow fraction: routing serves that share
# by the incumbent, and each such request is shadowed at the promoted tier (`ShadowEvaluator.sink`).


@settings_dataclass
class TraceSettings:
    enabled: bool = Field(default=True, description="write a trace of every request")
    content: Annotated[str, OneOf(CONTENT_POLICIES)] = Field(
        default="redacted", description="default content policy (a tenant's own setting wins)"
    )
    retention_days: Positive = Field(
        default=30, description="default retention (a tenant's own setting wins); `tiergate traces purge`"
    )
    batch_size: Positive = Field(default=500, description="rows per insert")
    flush_s: PositiveSeconds = Field(default=0.2, description="a partial batch waits at most this long")
    queue_size: Positive = Field(
        default=2_000,
        description="traces waiting to be written (~4 KB each in memory); more are dropped (and counted)",
    )


@settings_dataclass
class ShadowPolicy:
    """How one tenant's (or every tenant's) traffic is shadowed."""

    fraction: float = 0.0
    domains: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    candidate: str = "next_cheaper"  # next_cheaper | none | a tier
    registered: bool = True
    judge_tier: str = "supervisor"
    daily_budget_nano: int = nano(1.0)
    evaluation_share: float = EVALUATION_SHARE  # cap as a share of the day's serving spend
    route_table: bool = False  # opt-in: once on, every `tiergate promote` run can start spending

    def fraction_for(self, domain: str | None, tier: str, explore: float | None = None) -> float:
        """The share shadowed at `tier` on `domain`; `explore` is the route table's share for the domain
        (see the precedence above)."""
        per_domain = self.domains.get(domain) if domain is not None else None
        if per_domain is not None and tier in per_domain:
            return per_domain[tier]
        if explore is not None and self.route_table:
            return explore
        return self.fraction

    @property
    def follows_table(self) -> bool:
        """Whether the route table's shares (exploring and monitoring) apply to this tenant's traffic."""
        return (
            self.route_table
            and self.candidate != "none"
            and self.daily_budget_nano > 0
            and self.evaluation_share > 0
        )

    @property
    def active(self) -> bool:
        return (
            self.follows_table
            or self.fraction > 0
            or any(f > 0 for d in self.domains.values() for f in d.values())
        )


_SHADOW = ShadowPolicy()


@settings_dataclass
class ShadowSettings:
    policy: ShadowPolicy
    tenants: Mapping[str, ShadowPolicy]
    seed: int
    queue_size: int
    concurrency: int

    def policy_for(self, tenant_id: str | None) -> ShadowPolicy:
        if tenant_id is not None:
            return self.tenants.get(tenant_id, self.policy)
        return self.policy

    @property
    def any_active(self) -> bool:
        return self.policy.active or any(p.active for p in self.tenants.values())


@settings_dataclass
class PromoteSettings:
    """The promote job: how often, over what evidence, and the decision's parameters (`promotion`)."""

    enabled: bool = Field(
        default=False, description="every gateway runs the job every interval_s (one write lands per version)"
    )
    interval_s: Annotated[float, Field(ge=0.01)] = Field(
        default=3600.0,
        description="seconds between runs; exploration plans the verdicts due by the next run over this long "
        "(set it to a CronJob's schedule too)",
    )
    window_days: PositiveSeconds = Field(
        default=30.0, description="evidence (verdicts, feedback, traces) of this many days back"
    )
    quality_budget: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        default=_PROMOTION.quality_budget,
        description="allowed loss versus the most capable routed tier, over all traffic",
    )
    alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        default=_PROMOTION.alpha, description="one-sided error of the bounds (confidence 1 - alpha)"
    )
    min_samples: Positive = Field(
        default=_PROMOTION.min_samples,
        description="verdicts a domain needs at a step before it can be promoted",
    )
    quality: Share | None = Field(
        default=None, description="the incumbent's quality when known (none: from its feedback)"
    )
    clusters: Positive | None = Field(
        default=None, description="domains to discover (none: grows with the traces)"
    )
    max_traces: Positive = Field(
        default=50_000, description="newest traces with embeddings clustered per run"
    )
    explore: Share | None = Field(
        default=None,
        description="a fixed shadow share of unpromoted traffic instead of value of information "
        "(none: `tiergate replay`'s policy)",
    )
    monitor: Share = Field(default=_EXPLORATION.monitor, description="shadow share of promoted traffic")
    horizon: Annotated[float, Field(gt=0.0)] = Field(
        default=_EXPLORATION.horizon,
        description="requests expected to follow, as a multiple of a domain's requests in the window",
    )
    max_share: Share = Field(
        default=_EXPLORATION.max_share, description="the largest share of a domain's traffic explored"
    )
    revisit: Share = Field(
        default=_EXPLORATION.revisit, description="share at which a domain that cannot fit is revisited"
    )
    enough: Positive | None = Field(
        default=None,
        description="ignored: exploration stops by value of information (accepted so older files load)",
    )
    seed: Seed = Field(default=0, description="seed of the clustering")

    @property
    def promotion(self) -> PromotionConfig:
        return PromotionConfig(
            quality_budget=self.quality_budget, alpha=self.alpha, min_samples=self.min_samples
        )

    @property
    def exploration(self) -> ExplorationConfig:
        return ExplorationConfig(
            horizon=self.horizon, max_share=self.max_share, revisit=self.revisit, monitor=self.monitor
        )


@settings_dataclass
class LearningSettings:
    traces: TraceSettings
    shadow: ShadowSettings
    models_refresh_s: float
    promote: PromoteSettings


class ShadowPolicyFields(FileModel):
    """The fields a tenant's override may write (`learning.shadow.tenants.<id>`)."""

    fraction: Share = Field(
        default=_SHADOW.fraction,
        description="share of answered requests shadowed per (domain, candidate tier) where neither `domains` "
        "nor the route table sets one",
    )
    domains: Mapping[str, Mapping[Tier, Share]] = Field(
        default_factory=dict, description="shares per domain and candidate tier"
    )
    candidate: Annotated[str, OneOf(CANDIDATE_MODES + TIERS)] = Field(
        default=_SHADOW.candidate,
        description="next_cheaper, none, or a tier (always that tier, when cheaper)",
    )
    registered: bool = Field(
        default=_SHADOW.registered,
        description="also shadow registered candidate models (`tiergate models register`)",
    )
    judge_tier: Tier = Field(default=_SHADOW.judge_tier, description="asked on a disagreement")
    daily_budget_usd: Annotated[float, Field(ge=0.0, le=1e9)] = Field(
        default=_SHADOW.daily_budget_nano / 1e9,
        description="per tenant per UTC day, shadow and judge calls together",
    )
    evaluation_share: Annotated[float, Field(ge=0.0, le=1e6)] = Field(
        default=_SHADOW.evaluation_share,
        description="hard cap beside `daily_budget_usd`: the tenant's shadow and judge calls of a UTC day cost "
        "at most this share of its serving spend that day (above 1: more than the serving spend)",
    )
    route_table: bool = Field(
        default=_SHADOW.route_table,
        description="follow the route table's `sampling` shares (`tiergate promote` writes them)",
    )

    def over(self, base: ShadowPolicy) -> ShadowPolicy:
        """`base` with the fields this override writes."""
        policy_fields = self.model_fields_set & ShadowPolicyFields.model_fields.keys()
        written: dict[str, Any] = {name: getattr(self, name) for name in policy_fields}
        if "daily_budget_usd" in written:
            written["daily_budget_nano"] = nano(written.pop("daily_budget_usd"))
        return replace(base, **written)


class ShadowSection(ShadowPolicyFields):
    seed: Seed = Field(default=0, description="sampling is a seeded draw per request id: reproducible")
    queue_size: Positive = Field(
        default=1000, description="sampled requests waiting; more are dropped (and counted)"
    )
    concurrency: Positive = Field(default=2, description="evaluations running at once")
    tenants: Mapping[str, ShadowPolicyFields] = Field(
        default_factory=dict, description="per-tenant overrides of the policy fields above"
    )

    def settings(self) -> ShadowSettings:
        policy = self.over(_SHADOW)
        return ShadowSettings(
            policy=policy,
            tenants={tenant: override.over(policy) for tenant, override in self.tenants.items()},
            seed=self.seed,
            queue_size=self.queue_size,
            concurrency=self.concurrency,
        )


class ModelsSection(FileModel):
    refresh_s: Annotated[float, Field(ge=0.05)] = Field(
        default=10.0, description="how often registered models are re-read from the database"
    )


class LearningSection(FileModel):
    traces: TraceSettings = TraceSettings()
    shadow: ShadowSection = ShadowSection()
    models: ModelsSection = ModelsSection()
    promote: PromoteSettings = PromoteSettings()

    def settings(self) -> LearningSettings:
        return LearningSettings(
            traces=self.traces,
            shadow=self.shadow.settings(),
            models_refresh_s=self.models.refresh_s,
            promote=self.promote,
        )
