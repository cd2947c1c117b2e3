"""The `routing:` section: which tier `auto` means (a strategy, per tenant), domain inference, the cascade.

Every field is listed in docs/configuration.md. A tenant's override (`routing.tenants.<id>`) writes any of
the policy fields (`RoutingPolicyFields`); the fields it leaves out keep the global value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from tiergate.gateway.config.errors import OWN
from tiergate.gateway.config.fieldtypes import (
    FileModel,
    NonEmpty,
    OneOf,
    Positive,
    PositiveSeconds,
    Regex,
    Share,
    Similarity,
    Tier,
    settings_dataclass,
)
from tiergate.policies.embeddings import LOCAL_DIMENSIONS
from tiergate.policies.routing import STRATEGIES, RoutingPolicy, Rule
from tiergate.policies.verifiers import DEFAULT_REFUSALS, VERIFIERS, VerifierConfig

_POLICY = RoutingPolicy()
_VERIFIERS = VerifierConfig()
Count = Annotated[int, Field(ge=0)]


@settings_dataclass
class JudgeSettings:
    """A more capable tier that checks a sample of the cascade's accepted answers."""

    tier: Tier | None = Field(default=None, description="the judging tier (none: no judge)")
    fraction: Share = Field(default=0.0, description="share of accepted answers judged")
    seed: Count = Field(default=0, description="seed of the sampling draw (reproducible)")

    @model_validator(mode="after")
    def _tier_when_judging(self) -> Self:
        if self.fraction > 0 and self.tier is None:
            raise PydanticCustomError(OWN + "judge", "required when fraction > 0", {"field": "tier"})
        return self


@settings_dataclass
class CascadeSettings:
    verifiers: VerifierConfig
    judge: JudgeSettings
    streams: bool


@settings_dataclass
class DomainEmbeddings:
    """Domain inference by an upstream embeddings deployment instead of the local model."""

    deployment: NonEmpty = Field(description="an embeddings deployment: a configured model name or tier")
    dimensions: Positive = Field(description="the length of the vectors it returns")
    cache_size: Positive = Field(default=4096, description="embeddings of identical texts kept (LRU)")
    timeout_s: PositiveSeconds = Field(
        default=2.0, description="a slower embedding (retries included) makes the query `general`"
    )


@settings_dataclass
class DomainSettings:
    floor: float
    seeds: Mapping[str, tuple[str, ...]]
    embeddings: DomainEmbeddings | None  # None: the local MiniLM

    @property
    def dimensions(self) -> int:
        """The length of query vectors and route-table centroids."""
        return self.embeddings.dimensions if self.embeddings is not None else LOCAL_DIMENSIONS


@settings_dataclass
class RoutingSettings:
    policy: RoutingPolicy
    tenants: Mapping[str, RoutingPolicy]
    cascade: CascadeSettings
    domains: DomainSettings
    route_table: Mapping[str, str]
    refresh_s: float

    def policy_for(self, tenant_id: str | None) -> RoutingPolicy:
        if tenant_id is not None:
            return self.tenants.get(tenant_id, self.policy)
        return self.policy

    @property
    def any_needs_domain(self) -> bool:
        return self.policy.needs_domain or any(p.needs_domain for p in self.tenants.values())


class HeaderMatch(FileModel):
    name: NonEmpty = Field(description="a request header that must be present (any case)")
    value: str | None = Field(default=None, description="... with this value (none: any value)")


def _header_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class When(FileModel):
    """A rule's conditions: all that are given must hold."""

    min_prompt_tokens: Count | None = Field(
        default=None, description="the prompt has at least this many tokens"
    )
    max_prompt_tokens: Count | None = Field(
        default=None, description="the prompt has at most this many tokens"
    )
    min_turns: Count | None = Field(
        default=None, description="the conversation has at least this many user messages"
    )
    tools: bool | None = Field(default=None, description="the request offers tools (true) or not (false)")
    json_schema: bool | None = Field(
        default=None, description="the request asks for JSON (true) or not (false)"
    )
    regex: Regex | None = Field(default=None, description="searched in the last user message")
    keywords: tuple[NonEmpty, ...] = Field(
        default=(), description="any of them, as whole words, case-insensitive"
    )
    tenants: tuple[NonEmpty, ...] | None = Field(
        default=None, description="the request's tenant is one of them"
    )
    header: (
        Annotated[HeaderMatch, BeforeValidator(_header_name, json_schema_input_type=str | HeaderMatch)] | None
    ) = Field(default=None, description="a header name, or {name, value}")


class RuleEntry(FileModel):
    """A rule of the `rules` strategy: the first that matches gives the minimum tier."""

    name: str = Field(default="", description="shown in the route's reason")
    tier: Tier = Field(description="the minimum tier of a matching request")
    when: When = When()

    def rule(self) -> Rule:
        when, header = self.when, self.when.header
        return Rule(
            tier=self.tier,
            name=self.name,
            min_prompt_tokens=when.min_prompt_tokens,
            max_prompt_tokens=when.max_prompt_tokens,
            min_turns=when.min_turns,
            tools=when.tools,
            json_schema=when.json_schema,
            pattern=re.compile(when.regex) if when.regex is not None else None,
            keywords=when.keywords,
            tenants=frozenset(when.tenants) if when.tenants is not None else None,
            header=header.name.lower() if header is not None else None,
            header_value=header.value if header is not None else None,
        )


class CascadeTiers(FileModel):
    tiers: tuple[Tier, ...] = Field(
        default=_POLICY.cascade_tiers,
        description="cascade: the candidates, cheapest first (empty: every configured tier)",
    )


class RoutingPolicyFields(FileModel):
    """The fields a tenant's override may write (`routing.tenants.<id>`)."""

    strategy: Annotated[str, OneOf(tuple(STRATEGIES))] = Field(
        default=_POLICY.strategy, description="what `auto` means"
    )
    tier: Tier | None = Field(
        default=_POLICY.tier, description="fixed: the tier `auto` goes to (none: the cheapest configured)"
    )
    rules: tuple[RuleEntry, ...] = Field(default=(), description="rules: first match wins")
    default_tier: Tier | None = Field(
        default=_POLICY.default_tier,
        description="rules: the tier when no rule matches (none: the cheapest configured)",
    )
    unknown_tier: Tier = Field(
        default=_POLICY.unknown_tier, description="promotion: domains the route table does not know"
    )
    cascade: CascadeTiers = CascadeTiers()

    def over(self, base: RoutingPolicy) -> RoutingPolicy:
        """`base` with the fields this override writes."""
        written: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.model_fields_set & {"strategy", "tier", "default_tier", "unknown_tier"}
        }
        if "rules" in self.model_fields_set:
            written["rules"] = tuple(rule.rule() for rule in self.rules)
        if "tiers" in self.cascade.model_fields_set:
            written["cascade_tiers"] = self.cascade.tiers
        return replace(base, **written)


class CascadeSection(CascadeTiers):
    verifiers: tuple[Annotated[str, OneOf(tuple(VERIFIERS))], ...] = Field(
        default=_VERIFIERS.enabled, description="checks of an answer; a failed one escalates to the next tier"
    )
    min_mean_logprob: float = Field(
        default=_VERIFIERS.min_mean_logprob,
        description="logprob verifier: the least mean log-probability per token",
    )
    refusal_patterns: tuple[Regex, ...] = Field(
        default=(), description="refusal verifier: added to the built-in ones"
    )
    judge: JudgeSettings = JudgeSettings()
    streams: bool = Field(
        default=True, description="false: streamed requests skip the cascade (no buffering)"
    )

    def settings(self) -> CascadeSettings:
        verifiers = VerifierConfig(
            enabled=self.verifiers,
            refusals=DEFAULT_REFUSALS + self.refusal_patterns,
            min_mean_logprob=self.min_mean_logprob,
        )
        return CascadeSettings(verifiers=verifiers, judge=self.judge, streams=self.streams)


class DomainsSection(FileModel):
    """Domain inference (promotion routing, the semantic cache's per-domain thresholds)."""

    floor: Similarity = Field(
        default=0.5, description="below this similarity to every centroid a query is `general`"
    )
    seed: Mapping[str, tuple[NonEmpty, ...]] = Field(
        default_factory=dict, description="example queries of each domain, until the learning loop finds them"
    )
    embeddings: DomainEmbeddings | None = Field(default=None, description="none: the local MiniLM")

    def settings(self) -> DomainSettings:
        return DomainSettings(floor=self.floor, seeds=self.seed, embeddings=self.embeddings)


class RoutingSection(RoutingPolicyFields):
    cascade: CascadeSection = CascadeSection()
    tenants: Mapping[str, RoutingPolicyFields] = Field(
        default_factory=dict, description="per-tenant overrides of the policy fields above"
    )
    route_table: Mapping[str, Tier] = Field(
        default_factory=dict, description="promotion: domain -> tier, until the database holds a version"
    )
    refresh_s: Annotated[float, Field(ge=0.05)] = Field(
        default=2.0, description="how often the route table is re-read"
    )
    domains: DomainsSection = DomainsSection()

    def settings(self) -> RoutingSettings:
        policy = self.over(_POLICY)
        return RoutingSettings(
            policy=policy,
            tenants={tenant: override.over(policy) for tenant, override in self.tenants.items()},
            cascade=self.cascade.settings(),
            domains=self.domains.settings(),
            route_table=self.route_table,
            refresh_s=self.refresh_s,
        )
