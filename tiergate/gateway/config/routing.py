"""The `routing:` section of the config (`cache:` is in cache_settings.py).

routing:
  strategy: cascade             # fixed | rules | promotion | cascade (what `auto` means)
  tier: student                 # fixed: the tier `auto` goes to (default: the cheapest configured)
  rules:                        # rules: first match wins; its tier is the minimum tier
    - {name: long, tier: teacher, when: {min_prompt_tokens: 2000}}
    - {tier: ta, when: {tools: true}}
    - {tier: ta, when: {regex: "(?i)\\bproof\\b", keywords: [theorem, lemma]}}
    - {tier: supervisor, when: {header: {name: x-priority, value: high}}}
  default_tier: student         # rules: when no rule matches
  unknown_tier: teacher         # promotion: domains the route table does not know
  route_table: {billing: student, code: ta}   # promotion: used until the database holds a version
  refresh_s: 2                  # how often the route table is re-read
  domains:                      # domain inference (promotion, semantic cache)
    floor: 0.5                  # below this similarity to every centroid: `general`
    seed: {billing: ["How do I update my card?", ...]}
    embeddings:                 # default: the local MiniLM; else an embeddings deployment (by name or tier)
      deployment: embed-small
      dimensions: 1536          # what it returns; route-table centroids must have as many
      cache_size: 4096          # embeddings of identical texts kept (LRU)
      timeout_s: 2.0            # a slower embedding (retries included): the query is `general`
  cascade:
    tiers: [student, teacher]   # candidates (default: every configured tier)
    verifiers: [truncated, refusal, json, tool_args, logprob]
    min_mean_logprob: -1.0
    refusal_patterns: ["..."]   # added to the built-in ones
    judge: {tier: supervisor, fraction: 0.05, seed: 0}
    streams: true               # false: streamed requests skip the cascade (no buffering, no TTFT cost)
  tenants:                      # per-tenant overrides of any field above but tenants/route_table/domains
    acme: {strategy: rules, rules: [...]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tiergate.gateway.config.fields import (
    SectionError,
    boolean,
    integer,
    mapping,
    number,
    only,
    strings,
    tier,
)
from tiergate.gateway.routing.local_embeddings import DIMENSIONS as LOCAL_DIMENSIONS
from tiergate.policies.routing import STRATEGIES, RoutingPolicy, Rule
from tiergate.policies.verifiers import DEFAULT_REFUSALS, VERIFIERS, VerifierConfig


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    tier: str | None = None  # None: no judge
    fraction: float = 0.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    verifiers: VerifierConfig = field(default_factory=VerifierConfig)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    streams: bool = True


@dataclass(frozen=True, slots=True)
class DomainEmbeddings:
    """Domain inference by an upstream embeddings deployment instead of the local model."""

    deployment: str  # a deployment name or a tier
    dimensions: int
    cache_size: int = 4096
    timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class DomainSettings:
    floor: float = 0.5
    seeds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    embeddings: DomainEmbeddings | None = None  # None: the local MiniLM

    @property
    def dimensions(self) -> int:
        """The length of query vectors and route-table centroids."""
        return self.embeddings.dimensions if self.embeddings is not None else LOCAL_DIMENSIONS


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    policy: RoutingPolicy = field(default_factory=RoutingPolicy)
    tenants: Mapping[str, RoutingPolicy] = field(default_factory=dict)
    cascade: CascadeSettings = field(default_factory=CascadeSettings)
    domains: DomainSettings = field(default_factory=DomainSettings)
    route_table: Mapping[str, str] = field(default_factory=dict)
    refresh_s: float = 2.0

    def policy_for(self, tenant_id: str | None) -> RoutingPolicy:
        if tenant_id is not None:
            return self.tenants.get(tenant_id, self.policy)
        return self.policy

    @property
    def any_needs_domain(self) -> bool:
        return self.policy.needs_domain or any(p.needs_domain for p in self.tenants.values())


_WHEN = {"min_prompt_tokens", "max_prompt_tokens", "min_turns", "tools", "json_schema", "regex", "keywords",
         "tenants", "header"}  # fmt: skip


def _rule(raw: Any, where: str) -> Rule:
    raw = mapping(raw, where)
    only(raw, {"name", "tier", "when"}, where)
    when = mapping(raw.get("when"), f"{where}.when")
    only(when, _WHEN, f"{where}.when")
    args: dict[str, Any] = {
        "tier": tier(raw.get("tier"), f"{where}.tier"),
        "name": str(raw.get("name") or ""),
    }
    for key in ("min_prompt_tokens", "max_prompt_tokens", "min_turns"):
        if key in when:
            args[key] = integer(when[key], f"{where}.when.{key}")
    for key in ("tools", "json_schema"):
        if key in when:
            args[key] = boolean(when[key], f"{where}.when.{key}")
    if "regex" in when:
        if not isinstance(when["regex"], str):
            raise SectionError(f"{where}.when.regex must be a string")
        try:
            args["pattern"] = re.compile(when["regex"])
        except re.error as exc:
            raise SectionError(f"{where}.when.regex is not a valid regular expression: {exc}") from None
    if "keywords" in when:
        args["keywords"] = strings(when["keywords"], f"{where}.when.keywords")
    if "tenants" in when:
        args["tenants"] = frozenset(strings(when["tenants"], f"{where}.when.tenants"))
    if "header" in when:
        header = when["header"]
        if isinstance(header, str):
            header = {"name": header}
        header = mapping(header, f"{where}.when.header")
        only(header, {"name", "value"}, f"{where}.when.header")
        if not isinstance(header.get("name"), str) or not header["name"]:
            raise SectionError(f"{where}.when.header.name must be a header name")
        args["header"] = header["name"].lower()
        if header.get("value") is not None:
            args["header_value"] = str(header["value"])
    return Rule(**args)


_POLICY_KEYS = {"strategy", "tier", "rules", "default_tier", "unknown_tier", "cascade"}


def _policy(raw: Mapping[str, Any], where: str, base: RoutingPolicy) -> RoutingPolicy:
    changes: dict[str, Any] = {}
    if "strategy" in raw:
        if raw["strategy"] not in STRATEGIES:
            raise SectionError(f"{where}.strategy must be one of {', '.join(STRATEGIES)}")
        changes["strategy"] = raw["strategy"]
    for key in ("tier", "default_tier", "unknown_tier"):
        if raw.get(key) is not None:
            changes[key] = tier(raw[key], f"{where}.{key}")
    if "rules" in raw:
        rules = raw["rules"] or []
        if not isinstance(rules, list):
            raise SectionError(f"{where}.rules must be a list")
        changes["rules"] = tuple(_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(rules))
    cascade = mapping(raw.get("cascade"), f"{where}.cascade")
    if "tiers" in cascade:
        changes["cascade_tiers"] = tuple(
            tier(t, f"{where}.cascade.tiers[{i}]") for i, t in enumerate(cascade["tiers"] or [])
        )
    return replace(base, **changes)


def _cascade(raw: Mapping[str, Any], where: str) -> CascadeSettings:
    only(raw, {"tiers", "verifiers", "min_mean_logprob", "refusal_patterns", "judge", "streams"}, where)
    defaults = VerifierConfig()
    enabled = defaults.enabled
    if "verifiers" in raw:
        enabled = strings(raw["verifiers"], f"{where}.verifiers")
        unknown = [v for v in enabled if v not in VERIFIERS]
        if unknown:
            raise SectionError(
                f"{where}.verifiers: unknown {', '.join(unknown)} (use {', '.join(VERIFIERS)})"
            )
    refusals = DEFAULT_REFUSALS
    if "refusal_patterns" in raw:
        extra = strings(raw["refusal_patterns"], f"{where}.refusal_patterns")
        for pattern in extra:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SectionError(
                    f"{where}.refusal_patterns: {pattern!r} is not a regular expression: {exc}"
                ) from None
        refusals = refusals + extra
    verifiers = VerifierConfig(
        enabled=enabled,
        refusals=refusals,
        min_mean_logprob=number(
            raw.get("min_mean_logprob", defaults.min_mean_logprob), f"{where}.min_mean_logprob"
        ),
    )
    judge_raw = mapping(raw.get("judge"), f"{where}.judge")
    only(judge_raw, {"tier", "fraction", "seed"}, f"{where}.judge")
    judge = JudgeSettings(
        tier=tier(judge_raw["tier"], f"{where}.judge.tier") if judge_raw.get("tier") is not None else None,
        fraction=number(judge_raw.get("fraction", 0.0), f"{where}.judge.fraction", 0.0, 1.0),
        seed=integer(judge_raw.get("seed", 0), f"{where}.judge.seed"),
    )
    if judge.fraction > 0 and judge.tier is None:
        raise SectionError(f"{where}.judge.tier is required when judge.fraction > 0")
    return CascadeSettings(verifiers, judge, boolean(raw.get("streams", True), f"{where}.streams"))


def parse_routing(doc: Any) -> RoutingSettings:
    raw = mapping(doc, "routing")
    only(raw, _POLICY_KEYS | {"tenants", "route_table", "refresh_s", "domains"}, "routing")
    policy = _policy(raw, "routing", RoutingPolicy())
    tenants = {
        str(tenant): _policy(
            _checked_override(override, f"routing.tenants.{tenant}"), f"routing.tenants.{tenant}", policy
        )
        for tenant, override in mapping(raw.get("tenants"), "routing.tenants").items()
    }
    table = {
        str(domain): tier(name, f"routing.route_table.{domain}")
        for domain, name in mapping(raw.get("route_table"), "routing.route_table").items()
    }
    domains_raw = mapping(raw.get("domains"), "routing.domains")
    only(domains_raw, {"floor", "seed", "embeddings"}, "routing.domains")
    seeds = {
        str(name): strings(examples, f"routing.domains.seed.{name}")
        for name, examples in mapping(domains_raw.get("seed"), "routing.domains.seed").items()
    }
    embeddings = None
    if domains_raw.get("embeddings") is not None:
        embeddings = _embeddings(mapping(domains_raw["embeddings"], "routing.domains.embeddings"))
    return RoutingSettings(
        policy=policy,
        tenants=tenants,
        cascade=_cascade(mapping(raw.get("cascade"), "routing.cascade"), "routing.cascade"),
        domains=DomainSettings(
            number(domains_raw.get("floor", 0.5), "routing.domains.floor", -1.0, 1.0), seeds, embeddings
        ),
        route_table=table,
        refresh_s=number(raw.get("refresh_s", 2.0), "routing.refresh_s", 0.05),
    )


def _embeddings(raw: Mapping[str, Any]) -> DomainEmbeddings:
    where = "routing.domains.embeddings"
    only(raw, {"deployment", "dimensions", "cache_size", "timeout_s"}, where)
    if not isinstance(raw.get("deployment"), str) or not raw["deployment"]:
        raise SectionError(f"{where}.deployment must name an embeddings deployment (a model name or a tier)")
    if "dimensions" not in raw:
        raise SectionError(
            f"{where}.dimensions is required: the length of the vectors the deployment returns"
        )
    return DomainEmbeddings(
        raw["deployment"],
        integer(raw["dimensions"], f"{where}.dimensions", 1),
        integer(raw.get("cache_size", 4096), f"{where}.cache_size", 1),
        number(raw.get("timeout_s", 2.0), f"{where}.timeout_s", 0.001),
    )


def _checked_override(raw: Any, where: str) -> dict[str, Any]:
    override = mapping(raw, where)
    only(override, _POLICY_KEYS, where)
    cascade = mapping(override.get("cascade"), f"{where}.cascade")
    only(cascade, {"tiers"}, f"{where}.cascade")  # verifiers and the judge are global
    return override
