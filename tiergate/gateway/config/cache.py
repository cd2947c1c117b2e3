"""The `cache:` section of the config.

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

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tiergate.gateway.config.fields import SectionError, boolean, integer, mapping, number, only
from tiergate.policies.cache import CachePolicy


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


_SEMANTIC_KEYS = {"enabled", "threshold", "align_threshold", "ttl_s", "domains"}
_SEMANTIC_GLOBAL = {"prune_s", "lookup_timeout_s"}  # not per tenant


def _cache_policy(raw: Mapping[str, Any], where: str, base: CachePolicy) -> CachePolicy:
    exact = mapping(raw.get("exact"), f"{where}.exact")
    semantic = mapping(raw.get("semantic"), f"{where}.semantic")
    only(semantic, _SEMANTIC_KEYS, f"{where}.semantic")
    changes: dict[str, Any] = {}
    if "enabled" in exact:
        changes["exact"] = boolean(exact["enabled"], f"{where}.exact.enabled")
    if "ttl_s" in exact:
        changes["exact_ttl_s"] = number(exact["ttl_s"], f"{where}.exact.ttl_s", 1)
    if "enabled" in semantic:
        changes["semantic"] = boolean(semantic["enabled"], f"{where}.semantic.enabled")
    if "threshold" in semantic:
        changes["semantic_threshold"] = number(semantic["threshold"], f"{where}.semantic.threshold", 0.0, 1.0)
    if "align_threshold" in semantic:
        changes["semantic_align_threshold"] = number(
            semantic["align_threshold"], f"{where}.semantic.align_threshold", -1.0, 1.0
        )
    if "ttl_s" in semantic:
        changes["semantic_ttl_s"] = number(semantic["ttl_s"], f"{where}.semantic.ttl_s", 1)
    if "domains" in semantic:
        domains = {}
        for name, value in mapping(semantic["domains"], f"{where}.semantic.domains").items():
            spot = f"{where}.semantic.domains.{name}"
            value = mapping(value, spot)
            only(value, {"threshold"}, spot)
            domains[str(name)] = number(value.get("threshold"), f"{spot}.threshold", 0.0, 1.0)
        changes["semantic_domains"] = domains
    if "nondeterministic" in raw:
        changes["nondeterministic"] = boolean(raw["nondeterministic"], f"{where}.nondeterministic")
    return replace(base, **changes)


def tenant_cache_policy(raw: Any, where: str, base: CachePolicy) -> CachePolicy:
    """One tenant's override (`cache.tenants.<id>` in the config, or `cache` in the admin API) over `base`.

    The single check of both, so the config and the API accept the same fields within the same bounds.
    """
    override = mapping(raw, where)
    only(override, {"exact", "semantic", "nondeterministic"}, where)
    only(mapping(override.get("exact"), f"{where}.exact"), {"enabled", "ttl_s"}, f"{where}.exact")
    return _cache_policy(override, where, base)


def parse_cache(doc: Any) -> CacheSettings:
    raw = mapping(doc, "cache")
    only(raw, {"exact", "semantic", "nondeterministic", "write_queue", "tenants"}, "cache")
    exact = mapping(raw.get("exact"), "cache.exact")
    only(exact, {"enabled", "ttl_s", "max_bytes"}, "cache.exact")
    semantic = mapping(raw.get("semantic"), "cache.semantic")
    only(semantic, _SEMANTIC_KEYS | _SEMANTIC_GLOBAL, "cache.semantic")
    policy = _cache_policy(
        {**raw, "semantic": {k: v for k, v in semantic.items() if k not in _SEMANTIC_GLOBAL}},
        "cache",
        CachePolicy(),
    )
    tenants = {
        str(tenant): tenant_cache_policy(override, f"cache.tenants.{tenant}", policy)
        for tenant, override in mapping(raw.get("tenants"), "cache.tenants").items()
    }
    return CacheSettings(
        policy=policy,
        tenants=tenants,
        max_bytes=integer(exact.get("max_bytes", 64 * 1024 * 1024), "cache.exact.max_bytes", 1024),
        write_queue=integer(raw.get("write_queue", 10_000), "cache.write_queue", 1),
        prune_s=number(semantic.get("prune_s", 60.0), "cache.semantic.prune_s", 0.05),
        lookup_timeout_s=number(
            semantic.get("lookup_timeout_s", 1.0), "cache.semantic.lookup_timeout_s", 0.001
        ),
    )
