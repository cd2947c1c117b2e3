"""Which deployments answer a request, in which order.

A decision is a pure function of the request's `model`, the catalog of configured deployments and their
health; it returns the ordered targets (the first answers, the rest are the escalation path) and a reason
that reaches the logs and the trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tiergate.policies.retry import Health
from tiergate.policies.tiers import TIERS, above, is_tier, ordered

AUTO = "auto"


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
        return RoutePlan((first, *(t for t in rest if t.tier in allowed)), plan.reason)
    if requested != AUTO and requested not in allowed:
        return None
    targets = tuple(t for t in plan.targets if t.tier in allowed)
    if not targets:
        return None
    return RoutePlan(targets, plan.reason)
