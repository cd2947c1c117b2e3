"""Which deployments answer a request, in which order.

A decision is a pure function of the request (its `model` and its features), the query's domain, the route
table, the tenant's routing policy, the catalog of configured deployments and their health; it returns the
ordered targets (the first answers, the rest are the escalation path) and a reason that reaches the logs and
the trace. An explicit tier alias or deployment resolves as asked (`resolve`); `auto` goes through the
strategy the policy names (`decide`, strategies registered in `STRATEGIES`):

    fixed      the policy's tier (default: the cheapest configured), escalating on errors
    rules      the first matching rule's tier (ordered rules over request features), else `default_tier`
    promotion  the route table's tier for the query's domain; unknown domains go to `unknown_tier` (teacher).
               A promoted domain's monitoring share (the table's `sampling`) is served by its incumbent
               instead, a seeded draw per request id, and the plan names the routed tier to shadow
    cascade    the cheapest candidate tier first; each answer is verified and a weak one escalates
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from tiergate.policies.retry import Health
from tiergate.policies.route_table import Sampling
from tiergate.policies.shadow import drawn
from tiergate.policies.tiers import TIERS, above, is_tier, ordered, tier_rank

__all__ = [
    "AUTO",
    "MONITOR_KEY",
    "STRATEGIES",
    "Catalog",
    "EscalationPolicy",
    "Features",
    "RoutePlan",
    "RouteRequest",
    "RouteTable",
    "RoutingPolicy",
    "Rule",
    "Target",
    "decide",
    "prefer_healthy",
    "resolve",
    "restrict",
    "visible_models",
]

AUTO = "auto"
MONITOR_KEY = "monitor"  # the monitoring draw's key: independent of the shadow sampler's per-candidate draws


@dataclass(frozen=True, slots=True)
class Catalog:
    """What can be asked for: serving deployments by tier and by requestable name (ids, config order)."""

    tiers: Mapping[str, tuple[str, ...]]
    names: Mapping[str, tuple[str, ...]]
    deployment_tier: Mapping[str, str | None]

    @property
    def configured_tiers(self) -> tuple[str, ...]:
        return ordered(t for t, ids in self.tiers.items() if ids)


@dataclass(frozen=True, slots=True)
class Target:
    tier: str | None
    deployments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoutePlan:
    targets: tuple[Target, ...]
    reason: str
    verify: bool = False  # cascade: a weak answer of a target escalates to the next one, not only an error
    domain: str | None = None  # the query's domain, when the decision needed one
    monitor: str | None = None  # a monitoring sample: the promoted tier to shadow against the incumbent


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """Whether a failing tier hands over to the next more capable one."""

    tier_aliases: bool = True  # `auto` and tier names
    deployments: bool = False  # an explicitly named deployment


def _ladder(catalog: Catalog, first: str, escalate: bool) -> tuple[Target, ...]:
    tiers = (first, *above(catalog.configured_tiers, first)) if escalate else (first,)
    return tuple(Target(t, catalog.tiers[t]) for t in tiers)


def resolve(model: str, catalog: Catalog, escalation: EscalationPolicy) -> RoutePlan | None:
    """The plan for a requested model name, or None when nothing of that name is configured."""
    configured = catalog.configured_tiers
    if model == AUTO:
        if not configured:
            return None
        return RoutePlan(
            _ladder(catalog, configured[0], escalation.tier_aliases), f"auto: cheapest tier {configured[0]}"
        )
    if is_tier(model):
        if model not in configured:
            return None
        return RoutePlan(_ladder(catalog, model, escalation.tier_aliases), f"tier alias {model}")
    ids = catalog.names.get(model)
    if not ids:
        return None
    tier = catalog.deployment_tier.get(ids[0])
    targets = [Target(tier, ids)]
    if escalation.deployments and tier is not None:
        targets.extend(Target(t, catalog.tiers[t]) for t in above(configured, tier))
    return RoutePlan(tuple(targets), f"deployment {model}")


def prefer_healthy(
    ids: Sequence[str], health: Mapping[str, Health], now: float, rotation: int
) -> tuple[str, ...]:
    """Deployments of one target in the order to try them.

    Healthy ones first, rotated by `rotation` so that load is shared between equal deployments; cooled-down
    ones last rather than dropped, so a tier whose every deployment is resting still gets a chance.
    """
    if not ids:
        return ()
    start = rotation % len(ids)
    rotated = (*ids[start:], *ids[:start])
    healthy = tuple(i for i in rotated if i not in health or health[i].available(now))
    if len(healthy) == len(rotated):
        return healthy
    return healthy + tuple(i for i in rotated if i not in healthy)


def visible_models(catalog: Catalog) -> tuple[str, ...]:
    """Names a caller may put in `model`: `auto`, the configured tier aliases, then deployment names."""
    tiers = catalog.configured_tiers
    return ((AUTO,) if tiers else ()) + tuple(t for t in TIERS if t in tiers) + tuple(catalog.names)


def restrict(
    plan: RoutePlan, requested: str, catalog: Catalog, allowed: frozenset[str] | None
) -> RoutePlan | None:
    """The plan limited to what a caller may use, or None when the request itself is not allowed.

    `allowed` holds tier names and deployment names. A tier alias or `auto` is allowed when at least one of
    its tiers is; escalation never climbs into a tier the caller may not use. A deployment is allowed by its
    name or by its tier.
    """
    if allowed is None:
        return plan
    if requested != AUTO and not is_tier(requested):
        ids = catalog.names.get(requested, ())
        if requested not in allowed and not any(catalog.deployment_tier.get(i) in allowed for i in ids):
            return None
        first, rest = plan.targets[0], plan.targets[1:]
        return replace(plan, targets=(first, *(t for t in rest if t.tier in allowed)))
    if requested != AUTO and requested not in allowed:
        return None
    targets = tuple(t for t in plan.targets if t.tier in allowed)
    if not targets:
        return None
    return replace(plan, targets=targets)


# --- strategies for `auto` -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Features:
    """What rules look at, computed once per request by the gateway (only what the policy needs)."""

    prompt_tokens: int = 0
    turns: int = 1  # user messages in the conversation
    tools: bool = False
    json_schema: bool = False  # response_format asks for JSON (json_object or json_schema)
    last_user: str = ""
    tenant_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names


@dataclass(frozen=True, slots=True)
class Rule:
    """`tier` is the minimum tier for requests matching every condition that is set."""

    tier: str
    name: str = ""
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    min_turns: int | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    pattern: re.Pattern[str] | None = None  # searched in the last user message
    keywords: tuple[str, ...] = ()  # any of them, as whole words, case-insensitive
    tenants: frozenset[str] | None = None
    header: str | None = None  # lower-case name that must be present ...
    header_value: str | None = None  # ... with this value, when set

    def matches(self, f: Features) -> bool:
        checks = (
            self.min_prompt_tokens is None or f.prompt_tokens >= self.min_prompt_tokens,
            self.max_prompt_tokens is None or f.prompt_tokens <= self.max_prompt_tokens,
            self.min_turns is None or f.turns >= self.min_turns,
            self.tools is None or f.tools == self.tools,
            self.json_schema is None or f.json_schema == self.json_schema,
            self.pattern is None or self.pattern.search(f.last_user) is not None,
            not self.keywords or _has_keyword(f.last_user, self.keywords),
            self.tenants is None or f.tenant_id in self.tenants,
            self.header is None
            or (
                self.header in f.headers
                and (self.header_value is None or f.headers[self.header] == self.header_value)
            ),
        )
        return all(checks)


def _has_keyword(text: str, keywords: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(re.search(r"(?<!\w)" + re.escape(k.lower()) + r"(?!\w)", lowered) for k in keywords)


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """How `auto` is routed for one tenant (or globally)."""

    strategy: str = "fixed"
    tier: str | None = None  # fixed: the tier `auto` means (None: the cheapest configured)
    rules: tuple[Rule, ...] = ()
    default_tier: str | None = None  # rules: when no rule matches (None: the cheapest configured)
    unknown_tier: str = "teacher"  # promotion: domains the route table does not know
    cascade_tiers: tuple[str, ...] = ()  # cascade: the candidates, cheapest first (empty: every configured)

    @property
    def needs_domain(self) -> bool:
        return self.strategy == "promotion"

    @property
    def needs_prompt_tokens(self) -> bool:
        return self.strategy == "rules" and any(
            r.min_prompt_tokens is not None or r.max_prompt_tokens is not None for r in self.rules
        )


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Domain -> the cheapest tier proven good enough for it; written by the learning loop, versioned."""

    version: int = 0
    routes: Mapping[str, str] = field(default_factory=dict)
    sampling: Mapping[str, Sampling] = field(default_factory=dict)  # shadow shares per domain


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """Everything a routing decision may depend on."""

    catalog: Catalog
    policy: RoutingPolicy
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    features: Features = field(default_factory=Features)
    domain: str | None = None
    table: RouteTable = field(default_factory=RouteTable)
    health: Mapping[str, Health] = field(default_factory=dict)
    now: float = 0.0
    request_id: str = ""
    monitoring: bool = False  # whether this request may be a monitoring sample (its tenant is shadowed)
    seed: int = 0  # of the monitoring draw


def _configured_at_or_above(catalog: Catalog, tier: str) -> str | None:
    """`tier` when configured, else the nearest more capable configured tier, else the most capable one."""
    configured = catalog.configured_tiers
    if not configured:
        return None
    if tier in configured:
        return tier
    above_it = above(configured, tier)
    return above_it[0] if above_it else configured[-1]


def _plan_from(r: RouteRequest, tier: str, reason: str) -> RoutePlan | None:
    first = _configured_at_or_above(r.catalog, tier)
    if first is None:
        return None
    if first != tier:
        reason += f" ({tier} not configured: {first})"
    return _skip_resting(r, _ladder(r.catalog, first, r.escalation.tier_aliases), reason)


def _skip_resting(
    r: RouteRequest, targets: tuple[Target, ...], reason: str, verify: bool = False
) -> RoutePlan:
    # A tier whose every deployment is resting would only burn the first attempts: start above it.
    while len(targets) > 1 and not any(
        d not in r.health or r.health[d].available(r.now) for d in targets[0].deployments
    ):
        reason += f"; {targets[0].tier} resting"
        targets = targets[1:]
    return RoutePlan(targets, reason, verify and len(targets) > 1)


def _fixed(r: RouteRequest) -> RoutePlan | None:
    configured = r.catalog.configured_tiers
    tier = r.policy.tier or (configured[0] if configured else None)
    return None if tier is None else _plan_from(r, tier, f"fixed: {tier}")


def _rules(r: RouteRequest) -> RoutePlan | None:
    for i, rule in enumerate(r.policy.rules):
        if rule.matches(r.features):
            return _plan_from(r, rule.tier, f"rules: {rule.name or f'rule {i}'} -> {rule.tier}")
    configured = r.catalog.configured_tiers
    tier = r.policy.default_tier or (configured[0] if configured else None)
    return None if tier is None else _plan_from(r, tier, f"rules: no rule matched -> {tier}")


def _promotion(r: RouteRequest) -> RoutePlan | None:
    domain = r.domain or "general"
    tier = r.table.routes.get(domain)
    if tier is None:
        return _plan_from(
            r, r.policy.unknown_tier, f"promotion: domain {domain} not in route table v{r.table.version}"
        )
    reason = f"promotion: domain {domain} -> {tier} (route table v{r.table.version})"
    sampling = r.table.sampling.get(domain)
    if r.monitoring and sampling is not None and sampling.incumbent is not None:
        routed = _configured_at_or_above(r.catalog, tier)
        incumbent = _configured_at_or_above(r.catalog, sampling.incumbent)
        if (
            routed is not None
            and incumbent is not None
            and tier_rank(incumbent) > tier_rank(routed)
            and drawn(r.seed, r.request_id, MONITOR_KEY, sampling.share)
        ):
            plan = _plan_from(r, incumbent, f"{reason}; {incumbent} serves: monitoring sample")
            return None if plan is None else replace(plan, monitor=routed)
    return _plan_from(r, tier, reason)


def _cascade(r: RouteRequest) -> RoutePlan | None:
    configured = r.catalog.configured_tiers
    candidates = tuple(t for t in ordered(r.policy.cascade_tiers) if t in configured) or configured
    if not candidates:
        return None
    targets = tuple(Target(t, r.catalog.tiers[t]) for t in candidates)
    return _skip_resting(r, targets, f"cascade: {' -> '.join(candidates)}", verify=True)


Strategy = Callable[[RouteRequest], RoutePlan | None]
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {"fixed": _fixed, "rules": _rules, "promotion": _promotion, "cascade": _cascade}
)


def decide(r: RouteRequest) -> RoutePlan | None:
    """The plan for `auto` under the request's policy, or None when no tier is configured."""
    return STRATEGIES[r.policy.strategy](r)
