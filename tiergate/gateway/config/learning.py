"""The `learning:` section of the config: traces, shadow evaluation and registered candidate models.

learning:
  traces:
    enabled: true
    content: redacted           # default content policy: full | redacted | none (a tenant's own setting wins)
    retention_days: 30          # default retention (a tenant's own setting wins); `tiergate traces purge`
    batch_size: 500             # rows per insert
    flush_s: 0.2                # a partial batch waits at most this long
    queue_size: 10000           # traces waiting to be written; more are dropped (and counted)
  shadow:
    fraction: 0.0               # share of answered requests shadowed per (domain, candidate tier), where
                                # neither `domains` nor the route table sets one: off by default
    domains: {billing: {student: 0.2}}   # per domain and candidate tier
    candidate: next_cheaper     # next_cheaper | none | a tier name (always that tier, when cheaper)
    registered: true            # also shadow registered candidate models (`tiergate models register`)
    judge_tier: supervisor      # asked on a disagreement (the most capable configured tier when absent)
    daily_budget_usd: 1.0       # per tenant per UTC day, shadow and judge calls together
    route_table: false          # true: follow the route table's `sampling` shares (`tiergate promote` writes them)
    seed: 0                     # sampling is a seeded draw per request id: reproducible
    queue_size: 1000            # sampled requests waiting; more are dropped (and counted)
    concurrency: 2              # evaluations running at once
    tenants:                    # per-tenant overrides of fraction, domains, candidate, registered,
      ten_abc: {fraction: 0.1, daily_budget_usd: 5}    # judge_tier, daily_budget_usd and route_table
  models:
    refresh_s: 10               # how often registered models are re-read from the database
  promote:                      # `tiergate promote`, and the same job run by the gateway itself
    enabled: false              # true: every gateway runs it every interval_s (one write lands per version)
    interval_s: 3600
    window_days: 30             # evidence (verdicts, feedback, traces) of this many days back
    quality_budget: 0.05        # allowed loss versus the most capable routed tier, over all traffic
    alpha: 0.05                 # one-sided error of the bounds (confidence 1 - alpha)
    min_samples: 30             # verdicts a domain needs at a step before it can be promoted
    quality: null               # the incumbent's quality when known (0..1); null: from its feedback
    clusters: null              # domains to discover (null: grows with the traces)
    max_traces: 50000           # newest traces with embeddings clustered per run
    explore: 0.3                # shadow share an unpromoted domain needs while its verdicts are short
    monitor: 0.03               # ... once it has `enough`, and of promoted traffic
    enough: 200
    seed: 0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tiergate.gateway.config.fields import SectionError, integer, mapping, number, only, tier
from tiergate.policies.pricing import nano
from tiergate.policies.promotion import ENOUGH, EXPLORE, MONITOR, PromotionConfig
from tiergate.policies.shadow import CANDIDATE_MODES
from tiergate.policies.tiers import TIERS, is_tier

CONTENT_POLICIES = ("full", "redacted", "none")

# Which share of a domain's requests is shadowed at a candidate tier (`ShadowPolicy.fraction_for`), first
# that applies:
#   1. `domains.<domain>.<tier>` of the tenant's policy: the config overrides the learning loop;
#   2. the route table's `sampling.<domain>.explore` (when `route_table` is on): the share `tiergate promote`
#      computed from the domain's evidence;
#   3. `fraction`.
# A promoted domain's `sampling.<domain>.monitor` share is not a shadow fraction: routing serves that share
# by the incumbent, and each such request is shadowed at the promoted tier (`ShadowEvaluator.sink`).


@dataclass(frozen=True, slots=True)
class TraceSettings:
    enabled: bool = True
    content: str = "redacted"
    retention_days: int = 30
    batch_size: int = 500
    flush_s: float = 0.2
    queue_size: int = 10_000


@dataclass(frozen=True, slots=True)
class ShadowPolicy:
    """How one tenant's (or every tenant's) traffic is shadowed."""

    fraction: float = 0.0
    domains: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    candidate: str = "next_cheaper"  # next_cheaper | none | a tier
    registered: bool = True
    judge_tier: str = "supervisor"
    daily_budget_nano: int = nano(1.0)
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
        return self.route_table and self.candidate != "none" and self.daily_budget_nano > 0

    @property
    def active(self) -> bool:
        return (
            self.follows_table
            or self.fraction > 0
            or any(f > 0 for d in self.domains.values() for f in d.values())
        )


@dataclass(frozen=True, slots=True)
class ShadowSettings:
    policy: ShadowPolicy = field(default_factory=ShadowPolicy)
    tenants: Mapping[str, ShadowPolicy] = field(default_factory=dict)
    seed: int = 0
    queue_size: int = 1000
    concurrency: int = 2

    def policy_for(self, tenant_id: str | None) -> ShadowPolicy:
        if tenant_id is not None:
            return self.tenants.get(tenant_id, self.policy)
        return self.policy

    @property
    def any_active(self) -> bool:
        return self.policy.active or any(p.active for p in self.tenants.values())


@dataclass(frozen=True, slots=True)
class PromoteSettings:
    """The promote job: how often, over what evidence, and the decision's parameters (`PromotionConfig`)."""

    enabled: bool = False
    interval_s: float = 3600.0
    window_days: float = 30.0
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    quality: float | None = None
    clusters: int | None = None
    max_traces: int = 50_000
    explore: float = EXPLORE
    monitor: float = MONITOR
    enough: int = ENOUGH
    seed: int = 0


@dataclass(frozen=True, slots=True)
class LearningSettings:
    traces: TraceSettings = field(default_factory=TraceSettings)
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    models_refresh_s: float = 10.0
    promote: PromoteSettings = field(default_factory=PromoteSettings)


def _traces(raw: dict[str, Any]) -> TraceSettings:
    where = "learning.traces"
    only(raw, set(TraceSettings.__dataclass_fields__), where)
    d = TraceSettings()
    enabled = raw.get("enabled", d.enabled)
    if not isinstance(enabled, bool):
        raise SectionError(f"{where}.enabled must be true or false")
    content = raw.get("content", d.content)
    if content not in CONTENT_POLICIES:
        raise SectionError(f"{where}.content must be one of {', '.join(CONTENT_POLICIES)}")
    return TraceSettings(
        enabled=enabled,
        content=content,
        retention_days=integer(raw.get("retention_days", d.retention_days), f"{where}.retention_days", 1),
        batch_size=integer(raw.get("batch_size", d.batch_size), f"{where}.batch_size", 1),
        flush_s=number(raw.get("flush_s", d.flush_s), f"{where}.flush_s", 0.001),
        queue_size=integer(raw.get("queue_size", d.queue_size), f"{where}.queue_size", 1),
    )


_POLICY_KEYS = {
    "fraction", "domains", "candidate", "registered", "judge_tier", "daily_budget_usd", "route_table"
}  # fmt: skip


def _shadow_policy(raw: Mapping[str, Any], where: str, base: ShadowPolicy) -> ShadowPolicy:
    changes: dict[str, Any] = {}
    if "fraction" in raw:
        changes["fraction"] = number(raw["fraction"], f"{where}.fraction", 0.0, 1.0)
    if "domains" in raw:
        domains: dict[str, dict[str, float]] = {}
        for domain, tiers in mapping(raw["domains"], f"{where}.domains").items():
            at = f"{where}.domains.{domain}"
            domains[str(domain)] = {
                tier(name, f"{at}.{name}"): number(value, f"{at}.{name}", 0.0, 1.0)
                for name, value in mapping(tiers, at).items()
            }
        changes["domains"] = domains
    if "candidate" in raw:
        candidate = raw["candidate"]
        if not isinstance(candidate, str) or (candidate not in CANDIDATE_MODES and not is_tier(candidate)):
            raise SectionError(
                f"{where}.candidate must be one of {', '.join(CANDIDATE_MODES)} or a tier ({', '.join(TIERS)})"
            )
        changes["candidate"] = candidate
    for flag in ("registered", "route_table"):
        if flag in raw:
            if not isinstance(raw[flag], bool):
                raise SectionError(f"{where}.{flag} must be true or false")
            changes[flag] = raw[flag]
    if "judge_tier" in raw:
        changes["judge_tier"] = tier(raw["judge_tier"], f"{where}.judge_tier")
    if "daily_budget_usd" in raw:
        changes["daily_budget_nano"] = nano(
            number(raw["daily_budget_usd"], f"{where}.daily_budget_usd", 0.0, 1e9)
        )
    return replace(base, **changes)


def _shadow(raw: dict[str, Any]) -> ShadowSettings:
    where = "learning.shadow"
    only(raw, _POLICY_KEYS | {"seed", "queue_size", "concurrency", "tenants"}, where)
    policy = _shadow_policy(raw, where, ShadowPolicy())
    tenants = {}
    for tenant, override in mapping(raw.get("tenants"), f"{where}.tenants").items():
        at = f"{where}.tenants.{tenant}"
        override = mapping(override, at)
        only(override, _POLICY_KEYS, at)
        tenants[str(tenant)] = _shadow_policy(override, at, policy)
    d = ShadowSettings()
    return ShadowSettings(
        policy=policy,
        tenants=tenants,
        seed=integer(raw.get("seed", d.seed), f"{where}.seed", 0),
        queue_size=integer(raw.get("queue_size", d.queue_size), f"{where}.queue_size", 1),
        concurrency=integer(raw.get("concurrency", d.concurrency), f"{where}.concurrency", 1),
    )


_PROMOTE_KEYS = {
    "enabled", "interval_s", "window_days", "quality_budget", "alpha", "min_samples", "quality", "clusters",
    "max_traces", "explore", "monitor", "enough", "seed",
}  # fmt: skip


def _optional(raw: Mapping[str, Any], name: str, parse: Any) -> Any:
    return None if raw.get(name) is None else parse(raw[name])


def _promote(raw: dict[str, Any]) -> PromoteSettings:
    where = "learning.promote"
    only(raw, _PROMOTE_KEYS, where)
    d, p = PromoteSettings(), PromotionConfig()
    enabled = raw.get("enabled", d.enabled)
    if not isinstance(enabled, bool):
        raise SectionError(f"{where}.enabled must be true or false")
    alpha = number(raw.get("alpha", p.alpha), f"{where}.alpha", 0.0, 0.5)
    budget = number(raw.get("quality_budget", p.quality_budget), f"{where}.quality_budget", 0.0, 1.0)
    if not 0 < alpha < 0.5 or not 0 < budget < 1:
        raise SectionError(f"{where}.alpha must be in (0, 0.5) and {where}.quality_budget in (0, 1)")
    promotion = PromotionConfig(
        quality_budget=budget,
        alpha=alpha,
        min_samples=integer(raw.get("min_samples", p.min_samples), f"{where}.min_samples", 1),
    )
    return PromoteSettings(
        enabled=enabled,
        interval_s=number(raw.get("interval_s", d.interval_s), f"{where}.interval_s", 0.01),
        window_days=number(raw.get("window_days", d.window_days), f"{where}.window_days", 0.001),
        promotion=promotion,
        quality=_optional(raw, "quality", lambda v: number(v, f"{where}.quality", 0.0, 1.0)),
        clusters=_optional(raw, "clusters", lambda v: integer(v, f"{where}.clusters", 1)),
        max_traces=integer(raw.get("max_traces", d.max_traces), f"{where}.max_traces", 1),
        explore=number(raw.get("explore", d.explore), f"{where}.explore", 0.0, 1.0),
        monitor=number(raw.get("monitor", d.monitor), f"{where}.monitor", 0.0, 1.0),
        enough=integer(raw.get("enough", d.enough), f"{where}.enough", 1),
        seed=integer(raw.get("seed", d.seed), f"{where}.seed", 0),
    )


def parse_learning(doc: Any) -> LearningSettings:
    raw = mapping(doc, "learning")
    only(raw, {"traces", "shadow", "models", "promote"}, "learning")
    models = mapping(raw.get("models"), "learning.models")
    only(models, {"refresh_s"}, "learning.models")
    return LearningSettings(
        traces=_traces(mapping(raw.get("traces"), "learning.traces")),
        shadow=_shadow(mapping(raw.get("shadow"), "learning.shadow")),
        models_refresh_s=number(models.get("refresh_s", 10.0), "learning.models.refresh_s", 0.05),
        promote=_promote(mapping(raw.get("promote"), "learning.promote")),
    )
