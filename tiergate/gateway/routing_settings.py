"""The `routing:` and `cache:` sections of the config.

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
cache:
  exact: {enabled: true, ttl_s: 3600, max_bytes: 67108864}
  semantic:                     # on an exact miss: the nearest earlier query, if verified (Chroma)
    enabled: false
    threshold: 0.91             # minimum cosine between the two queries' sentence vectors
    align_threshold: 0.20       # the verifier's minimum cosine between a leftover word and its partner
    ttl_s: 3600
    domains: {legal: {threshold: 0.96}}   # per inferred domain (when routing infers one)
    prune_s: 60                 # how often expired entries are deleted (global only)
    lookup_timeout_s: 1.0       # a slower lookup (a stuck Chroma server) is a miss (global only)
  nondeterministic: false       # also cache requests with temperature > 0 and no seed
  write_queue: 10000            # pending cache writes; more are dropped (and counted)
  tenants: {acme: {semantic: {enabled: true}}}   # the admin API's tenant `cache` overrides these
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tiergate.gateway.embeddings import DIMENSIONS as LOCAL_DIMENSIONS
from tiergate.policies.cache import CachePolicy
from tiergate.policies.routing import STRATEGIES, RoutingPolicy, Rule
from tiergate.policies.tiers import TIERS, is_tier
from tiergate.policies.verifiers import DEFAULT_REFUSALS, VERIFIERS, VerifierConfig


class SectionError(ValueError):
    """A field of the routing or cache section is wrong; settings.py turns it into a ConfigError.

    `where` names the field (`cache.semantic.threshold`) when known: the admin API answers with it as `param`.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


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


@dataclass(frozen=True, slots=True)
class CacheSettings:
    policy: CachePolicy = field(default_factory=CachePolicy)
    tenants: Mapping[str, CachePolicy] = field(default_factory=dict)
    max_bytes: int = 64 * 1024 * 1024
    write_queue: int = 10_000
    prune_s: float = 60.0  # how often expired semantic entries are deleted
    lookup_timeout_s: float = 1.0  # a semantic lookup that takes longer is a miss

    def policy_for(self, tenant_id: str | None) -> CachePolicy:
        """The config's policy for the tenant: `cache.tenants.<id>` over the global one."""
        if tenant_id is not None:
            return self.tenants.get(tenant_id, self.policy)
        return self.policy

    def with_override(self, tenant_id: str, override: Any) -> CachePolicy:
        """The admin API's override of a tenant, field by field over `policy_for`; raises SectionError."""
        return tenant_cache_policy(override, "cache", self.policy_for(tenant_id))

    def check_override(self, tenant_id: str | None, override: Any) -> None:
        """Raises SectionError if the admin API may not store `override` for the tenant.

        Beyond its fields, an override cannot turn on a cache this gateway did not open at startup: which
        caches exist (the semantic one loads an embedder and opens Chroma) is decided by the config alone.
        """
        policy = tenant_cache_policy(override, "cache", self.policy_for(tenant_id))
        if policy.exact and not self.any_exact:
            raise SectionError(_UNOPENED.format(kind="exact"), "cache.exact.enabled")
        if policy.semantic and not self.any_semantic:
            raise SectionError(_UNOPENED.format(kind="semantic"), "cache.semantic.enabled")

    @property
    def any_exact(self) -> bool:
        return self.policy.exact or any(p.exact for p in self.tenants.values())

    @property
    def any_semantic(self) -> bool:
        return self.policy.semantic or any(p.semantic for p in self.tenants.values())


_UNOPENED = (
    "cache.{kind}.enabled: the {kind} cache is off everywhere in this gateway's config, so it was not opened;"
    " enable cache.{kind} in the config (globally or for one tenant under cache.tenants) and restart first"
)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SectionError(f"{where} must be a mapping", where)
    return value


def _only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise SectionError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}", where)


def _tier(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_tier(value):
        raise SectionError(f"{where} must be one of {', '.join(TIERS)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SectionError(f"{where} must be true or false", where)
    return value


def _num(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SectionError(f"{where} must be a number", where)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise SectionError(f"{where} must be {bounds}", where)
    return float(value)


def _int(value: Any, where: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SectionError(f"{where} must be an integer >= {lo}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SectionError(f"{where} must be a list of non-empty strings")
    return tuple(value)


_WHEN = {"min_prompt_tokens", "max_prompt_tokens", "min_turns", "tools", "json_schema", "regex", "keywords",
         "tenants", "header"}  # fmt: skip


def _rule(raw: Any, where: str) -> Rule:
    raw = _mapping(raw, where)
    _only(raw, {"name", "tier", "when"}, where)
    when = _mapping(raw.get("when"), f"{where}.when")
    _only(when, _WHEN, f"{where}.when")
    args: dict[str, Any] = {
        "tier": _tier(raw.get("tier"), f"{where}.tier"),
        "name": str(raw.get("name") or ""),
    }
    for key in ("min_prompt_tokens", "max_prompt_tokens", "min_turns"):
        if key in when:
            args[key] = _int(when[key], f"{where}.when.{key}")
    for key in ("tools", "json_schema"):
        if key in when:
            args[key] = _bool(when[key], f"{where}.when.{key}")
    if "regex" in when:
        if not isinstance(when["regex"], str):
            raise SectionError(f"{where}.when.regex must be a string")
        try:
            args["pattern"] = re.compile(when["regex"])
        except re.error as exc:
            raise SectionError(f"{where}.when.regex is not a valid regular expression: {exc}") from None
    if "keywords" in when:
        args["keywords"] = _strings(when["keywords"], f"{where}.when.keywords")
    if "tenants" in when:
        args["tenants"] = frozenset(_strings(when["tenants"], f"{where}.when.tenants"))
    if "header" in when:
        header = when["header"]
        if isinstance(header, str):
            header = {"name": header}
        header = _mapping(header, f"{where}.when.header")
        _only(header, {"name", "value"}, f"{where}.when.header")
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
            changes[key] = _tier(raw[key], f"{where}.{key}")
    if "rules" in raw:
        rules = raw["rules"] or []
        if not isinstance(rules, list):
            raise SectionError(f"{where}.rules must be a list")
        changes["rules"] = tuple(_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(rules))
    cascade = _mapping(raw.get("cascade"), f"{where}.cascade")
    if "tiers" in cascade:
        changes["cascade_tiers"] = tuple(
            _tier(t, f"{where}.cascade.tiers[{i}]") for i, t in enumerate(cascade["tiers"] or [])
        )
    return replace(base, **changes)


def _cascade(raw: Mapping[str, Any], where: str) -> CascadeSettings:
    _only(raw, {"tiers", "verifiers", "min_mean_logprob", "refusal_patterns", "judge", "streams"}, where)
    defaults = VerifierConfig()
    enabled = defaults.enabled
    if "verifiers" in raw:
        enabled = _strings(raw["verifiers"], f"{where}.verifiers")
        unknown = [v for v in enabled if v not in VERIFIERS]
        if unknown:
            raise SectionError(
                f"{where}.verifiers: unknown {', '.join(unknown)} (use {', '.join(VERIFIERS)})"
            )
    refusals = DEFAULT_REFUSALS
    if "refusal_patterns" in raw:
        extra = _strings(raw["refusal_patterns"], f"{where}.refusal_patterns")
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
        min_mean_logprob=_num(
            raw.get("min_mean_logprob", defaults.min_mean_logprob), f"{where}.min_mean_logprob"
        ),
    )
    judge_raw = _mapping(raw.get("judge"), f"{where}.judge")
    _only(judge_raw, {"tier", "fraction", "seed"}, f"{where}.judge")
    judge = JudgeSettings(
        tier=_tier(judge_raw["tier"], f"{where}.judge.tier") if judge_raw.get("tier") is not None else None,
        fraction=_num(judge_raw.get("fraction", 0.0), f"{where}.judge.fraction", 0.0, 1.0),
        seed=_int(judge_raw.get("seed", 0), f"{where}.judge.seed"),
    )
    if judge.fraction > 0 and judge.tier is None:
        raise SectionError(f"{where}.judge.tier is required when judge.fraction > 0")
    return CascadeSettings(verifiers, judge, _bool(raw.get("streams", True), f"{where}.streams"))


def parse_routing(doc: Any) -> RoutingSettings:
    raw = _mapping(doc, "routing")
    _only(raw, _POLICY_KEYS | {"tenants", "route_table", "refresh_s", "domains"}, "routing")
    policy = _policy(raw, "routing", RoutingPolicy())
    tenants = {
        str(tenant): _policy(
            _checked_override(override, f"routing.tenants.{tenant}"), f"routing.tenants.{tenant}", policy
        )
        for tenant, override in _mapping(raw.get("tenants"), "routing.tenants").items()
    }
    table = {
        str(domain): _tier(tier, f"routing.route_table.{domain}")
        for domain, tier in _mapping(raw.get("route_table"), "routing.route_table").items()
    }
    domains_raw = _mapping(raw.get("domains"), "routing.domains")
    _only(domains_raw, {"floor", "seed", "embeddings"}, "routing.domains")
    seeds = {
        str(name): _strings(examples, f"routing.domains.seed.{name}")
        for name, examples in _mapping(domains_raw.get("seed"), "routing.domains.seed").items()
    }
    embeddings = None
    if domains_raw.get("embeddings") is not None:
        embeddings = _embeddings(_mapping(domains_raw["embeddings"], "routing.domains.embeddings"))
    return RoutingSettings(
        policy=policy,
        tenants=tenants,
        cascade=_cascade(_mapping(raw.get("cascade"), "routing.cascade"), "routing.cascade"),
        domains=DomainSettings(
            _num(domains_raw.get("floor", 0.5), "routing.domains.floor", -1.0, 1.0), seeds, embeddings
        ),
        route_table=table,
        refresh_s=_num(raw.get("refresh_s", 2.0), "routing.refresh_s", 0.05),
    )


def _embeddings(raw: Mapping[str, Any]) -> DomainEmbeddings:
    where = "routing.domains.embeddings"
    _only(raw, {"deployment", "dimensions", "cache_size", "timeout_s"}, where)
    if not isinstance(raw.get("deployment"), str) or not raw["deployment"]:
        raise SectionError(f"{where}.deployment must name an embeddings deployment (a model name or a tier)")
    if "dimensions" not in raw:
        raise SectionError(
            f"{where}.dimensions is required: the length of the vectors the deployment returns"
        )
    return DomainEmbeddings(
        raw["deployment"],
        _int(raw["dimensions"], f"{where}.dimensions", 1),
        _int(raw.get("cache_size", 4096), f"{where}.cache_size", 1),
        _num(raw.get("timeout_s", 2.0), f"{where}.timeout_s", 0.001),
    )


def _checked_override(raw: Any, where: str) -> dict[str, Any]:
    override = _mapping(raw, where)
    _only(override, _POLICY_KEYS, where)
    cascade = _mapping(override.get("cascade"), f"{where}.cascade")
    _only(cascade, {"tiers"}, f"{where}.cascade")  # verifiers and the judge are global
    return override


_SEMANTIC_KEYS = {"enabled", "threshold", "align_threshold", "ttl_s", "domains"}
_SEMANTIC_GLOBAL = {"prune_s", "lookup_timeout_s"}  # not per tenant


def _cache_policy(raw: Mapping[str, Any], where: str, base: CachePolicy) -> CachePolicy:
    exact = _mapping(raw.get("exact"), f"{where}.exact")
    semantic = _mapping(raw.get("semantic"), f"{where}.semantic")
    _only(semantic, _SEMANTIC_KEYS, f"{where}.semantic")
    changes: dict[str, Any] = {}
    if "enabled" in exact:
        changes["exact"] = _bool(exact["enabled"], f"{where}.exact.enabled")
    if "ttl_s" in exact:
        changes["exact_ttl_s"] = _num(exact["ttl_s"], f"{where}.exact.ttl_s", 1)
    if "enabled" in semantic:
        changes["semantic"] = _bool(semantic["enabled"], f"{where}.semantic.enabled")
    if "threshold" in semantic:
        changes["semantic_threshold"] = _num(semantic["threshold"], f"{where}.semantic.threshold", 0.0, 1.0)
    if "align_threshold" in semantic:
        changes["semantic_align_threshold"] = _num(
            semantic["align_threshold"], f"{where}.semantic.align_threshold", -1.0, 1.0
        )
    if "ttl_s" in semantic:
        changes["semantic_ttl_s"] = _num(semantic["ttl_s"], f"{where}.semantic.ttl_s", 1)
    if "domains" in semantic:
        domains = {}
        for name, value in _mapping(semantic["domains"], f"{where}.semantic.domains").items():
            spot = f"{where}.semantic.domains.{name}"
            value = _mapping(value, spot)
            _only(value, {"threshold"}, spot)
            domains[str(name)] = _num(value.get("threshold"), f"{spot}.threshold", 0.0, 1.0)
        changes["semantic_domains"] = domains
    if "nondeterministic" in raw:
        changes["nondeterministic"] = _bool(raw["nondeterministic"], f"{where}.nondeterministic")
    return replace(base, **changes)


def tenant_cache_policy(raw: Any, where: str, base: CachePolicy) -> CachePolicy:
    """One tenant's override (`cache.tenants.<id>` in the config, or `cache` in the admin API) over `base`.

    The single check of both, so the config and the API accept the same fields within the same bounds.
    """
    override = _mapping(raw, where)
    _only(override, {"exact", "semantic", "nondeterministic"}, where)
    _only(_mapping(override.get("exact"), f"{where}.exact"), {"enabled", "ttl_s"}, f"{where}.exact")
    return _cache_policy(override, where, base)


def parse_cache(doc: Any) -> CacheSettings:
    raw = _mapping(doc, "cache")
    _only(raw, {"exact", "semantic", "nondeterministic", "write_queue", "tenants"}, "cache")
    exact = _mapping(raw.get("exact"), "cache.exact")
    _only(exact, {"enabled", "ttl_s", "max_bytes"}, "cache.exact")
    semantic = _mapping(raw.get("semantic"), "cache.semantic")
    _only(semantic, _SEMANTIC_KEYS | _SEMANTIC_GLOBAL, "cache.semantic")
    policy = _cache_policy(
        {**raw, "semantic": {k: v for k, v in semantic.items() if k not in _SEMANTIC_GLOBAL}},
        "cache",
        CachePolicy(),
    )
    tenants = {
        str(tenant): tenant_cache_policy(override, f"cache.tenants.{tenant}", policy)
        for tenant, override in _mapping(raw.get("tenants"), "cache.tenants").items()
    }
    return CacheSettings(
        policy=policy,
        tenants=tenants,
        max_bytes=_int(exact.get("max_bytes", 64 * 1024 * 1024), "cache.exact.max_bytes", 1024),
        write_queue=_int(raw.get("write_queue", 10_000), "cache.write_queue", 1),
        prune_s=_num(semantic.get("prune_s", 60.0), "cache.semantic.prune_s", 0.05),
        lookup_timeout_s=_num(
            semantic.get("lookup_timeout_s", 1.0), "cache.semantic.lookup_timeout_s", 0.001
        ),
    )
