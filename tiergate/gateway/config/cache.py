"""The `cache:` section: the exact cache, the semantic cache, and their per-tenant overrides.

Every field is listed in docs/configuration.md. A tenant's override (`cache.tenants.<id>` in the config, or
the tenant's `cache` in the admin API) is one `CacheOverride`, checked by the same model in both places; the
fields it leaves out keep the global value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field

from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.fieldtypes import (
    FileModel,
    Positive,
    PositiveSeconds,
    Share,
    Similarity,
    settings_dataclass,
    validate,
)
from tiergate.policies.cache import CachePolicy

_POLICY = CachePolicy()
TimeToLive = Annotated[float, Field(ge=1)]


@settings_dataclass
class CacheSettings:
    policy: CachePolicy
    tenants: Mapping[str, CachePolicy]
    max_bytes: int
    write_queue: int
    prune_s: float  # how often expired semantic entries are deleted
    lookup_timeout_s: float  # a semantic lookup that takes longer is a miss

    def policy_for(self, tenant_id: str | None) -> CachePolicy:
        """The config's policy for the tenant: `cache.tenants.<id>` over the global one."""
        if tenant_id is not None:
            return self.tenants.get(tenant_id, self.policy)
        return self.policy

    def with_override(self, tenant_id: str, override: Any) -> CachePolicy:
        """The admin API's override of a tenant, field by field over `policy_for`; raises ConfigError."""
        return validate(CacheOverride, override, where="cache").over(self.policy_for(tenant_id))

    def check_override(self, tenant_id: str | None, override: Any) -> None:
        """Raises ConfigError if the admin API may not store `override` for the tenant.

        Beyond its fields, an override cannot turn on a cache this gateway did not open at startup: which
        caches exist (the semantic one loads an embedder and opens Chroma) is decided by the config alone.
        """
        policy = validate(CacheOverride, override, where="cache").over(self.policy_for(tenant_id))
        if policy.exact and not self.any_exact:
            raise UnopenedCache(_UNOPENED.format(kind="exact"), "cache.exact.enabled")
        if policy.semantic and not self.any_semantic:
            raise UnopenedCache(_UNOPENED.format(kind="semantic"), "cache.semantic.enabled")

    @property
    def any_exact(self) -> bool:
        return self.policy.exact or any(p.exact for p in self.tenants.values())

    @property
    def any_semantic(self) -> bool:
        return self.policy.semantic or any(p.semantic for p in self.tenants.values())


class UnopenedCache(ConfigError):
    """A valid override that asks for a cache the config did not open: the gateway's state, not the input."""


_UNOPENED = (
    "cache.{kind}.enabled: the {kind} cache is off everywhere in this gateway's config, so it was not opened;"
    " enable cache.{kind} in the config (globally or for one tenant under cache.tenants) and restart first"
)


class ExactFields(FileModel):
    enabled: bool = Field(default=_POLICY.exact, description="answer repeated requests from the cache")
    ttl_s: TimeToLive = Field(default=_POLICY.exact_ttl_s, description="seconds an answer is kept")


class SemanticDomain(FileModel):
    threshold: Share = Field(description="the domain's minimum cosine between the two queries")


class SemanticFields(FileModel):
    enabled: bool = Field(
        default=_POLICY.semantic,
        description="on an exact miss, answer with the nearest earlier query's, if verified",
    )
    threshold: Share = Field(
        default=_POLICY.semantic_threshold,
        description="minimum cosine between the two queries' sentence vectors",
    )
    align_threshold: Similarity = Field(
        default=_POLICY.semantic_align_threshold,
        description="the verifier's minimum cosine between a leftover word and its partner",
    )
    ttl_s: TimeToLive = Field(default=_POLICY.semantic_ttl_s, description="seconds an answer is kept")
    domains: Mapping[str, SemanticDomain] = Field(
        default_factory=dict, description="thresholds per inferred domain (when routing infers one)"
    )


class CacheOverride(FileModel):
    """What a tenant's override may write."""

    exact: ExactFields = ExactFields()
    semantic: SemanticFields = SemanticFields()
    nondeterministic: bool = Field(
        default=_POLICY.nondeterministic, description="also cache requests with temperature > 0 and no seed"
    )

    def over(self, base: CachePolicy) -> CachePolicy:
        """`base` with the fields this override writes."""
        exact, semantic = self.exact, self.semantic
        changes: dict[str, Any] = {}
        for field, name, part, value in (
            ("exact", "enabled", exact, exact.enabled),
            ("exact_ttl_s", "ttl_s", exact, exact.ttl_s),
            ("semantic", "enabled", semantic, semantic.enabled),
            ("semantic_threshold", "threshold", semantic, semantic.threshold),
            ("semantic_align_threshold", "align_threshold", semantic, semantic.align_threshold),
            ("semantic_ttl_s", "ttl_s", semantic, semantic.ttl_s),
            ("semantic_domains", "domains", semantic, {d: s.threshold for d, s in semantic.domains.items()}),
            ("nondeterministic", "nondeterministic", self, self.nondeterministic),
        ):
            if name in part.model_fields_set:
                changes[field] = value
        return replace(base, **changes)


class ExactSection(ExactFields):
    max_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=64 * 1024 * 1024,
        description="memory the in-process store may hold: answers, keys and its table (Redis: unused)",
    )


class SemanticSection(SemanticFields):
    prune_s: Annotated[float, Field(ge=0.05)] = Field(
        default=60.0, description="how often expired entries are deleted"
    )
    lookup_timeout_s: PositiveSeconds = Field(
        default=1.0, description="a slower lookup (a stuck Chroma server) is a miss"
    )


class CacheSection(CacheOverride):
    exact: ExactSection = ExactSection()
    semantic: SemanticSection = SemanticSection()
    write_queue: Positive = Field(
        default=10_000, description="pending cache writes; more are dropped (and counted)"
    )
    tenants: Mapping[str, CacheOverride] = Field(
        default_factory=dict,
        description="per-tenant overrides (the admin API's tenant `cache` goes over them)",
    )

    def settings(self) -> CacheSettings:
        policy = self.over(_POLICY)
        return CacheSettings(
            policy=policy,
            tenants={tenant: override.over(policy) for tenant, override in self.tenants.items()},
            max_bytes=self.exact.max_bytes,
            write_queue=self.write_queue,
            prune_s=self.semantic.prune_s,
            lookup_timeout_s=self.semantic.lookup_timeout_s,
        )
