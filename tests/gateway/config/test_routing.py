"""The `routing:` and `cache:` config sections: defaults, overrides per tenant, and errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import parse_settings
from tiergate.policies.cache import CachePolicy
from tiergate.policies.routing import RoutingPolicy
from tiergate.policies.semantic import SemanticPolicy


def parse(**doc: Any) -> Any:
    return parse_settings(doc, env={})


def test_defaults_fixed_routing_exact_cache_on_semantic_off() -> None:
    s = parse()
    assert s.routing.policy == RoutingPolicy() and s.routing.cascade.streams
    assert s.cache.policy == CachePolicy() and s.cache.policy.exact and not s.cache.policy.semantic
    assert s.redis_prefix == "tiergate:"


def test_a_full_routing_section() -> None:
    s = parse(
        routing={
            "strategy": "rules",
            "rules": [
                {"name": "vip", "tier": "teacher", "when": {"header": "X-VIP", "keywords": ["urgent"], "regex": "(?i)now"}},
                {"tier": "ta", "when": {"tools": True, "min_turns": 3, "tenants": ["acme"]}},
            ],
            "default_tier": "ta",
            "route_table": {"billing": "student"},
            "domains": {"floor": 0.6, "seed": {"billing": ["refund please"]}},
            "cascade": {"tiers": ["student", "teacher"], "verifiers": ["truncated", "logprob"], "min_mean_logprob": -2,
                        "refusal_patterns": ["nope"], "judge": {"tier": "supervisor", "fraction": 0.1, "seed": 3}, "streams": False},
            "tenants": {"acme": {"strategy": "cascade", "cascade": {"tiers": ["ta", "teacher"]}}, "globex": {"tier": "teacher"}},
        }
    )  # fmt: skip
    r = s.routing
    assert r.policy.strategy == "rules" and r.policy.default_tier == "ta" and len(r.policy.rules) == 2
    vip = r.policy.rules[0]
    assert vip.header == "x-vip" and vip.keywords == ("urgent",) and vip.pattern is not None
    assert r.policy.rules[1].tenants == frozenset({"acme"}) and r.policy.rules[1].min_turns == 3
    assert (
        r.cascade.verifiers.enabled == ("truncated", "logprob") and r.cascade.verifiers.min_mean_logprob == -2
    )
    assert (
        r.cascade.verifiers.refusals[-1] == "nope"
        and r.cascade.judge.fraction == 0.1
        and not r.cascade.streams
    )
    acme, globex = r.policy_for("acme"), r.policy_for("globex")
    assert (
        acme.strategy == "cascade"
        and acme.cascade_tiers == ("ta", "teacher")
        and acme.rules == r.policy.rules
    )
    assert globex.strategy == "rules" and globex.tier == "teacher"  # inherits everything it does not set
    assert r.policy_for("other") is r.policy and r.policy_for(None) is r.policy
    assert r.route_table == {"billing": "student"} and r.domains.floor == 0.6


def test_a_full_cache_section() -> None:
    s = parse(
        cache={
            "exact": {"enabled": True, "ttl_s": 60, "max_bytes": 4096},
            "semantic": {"enabled": False, "threshold": 0.95, "ttl_s": 120},
            "write_queue": 10,
            "tenants": {"acme": {"exact": {"enabled": False}, "nondeterministic": True}},
        }
    )
    c = s.cache
    assert (
        c.policy == CachePolicy(True, 60, False, 0.95, 120, False)
        and c.max_bytes == 4096
        and c.write_queue == 10
    )
    assert c.policy_for("acme") == CachePolicy(False, 60, False, 0.95, 120, True) and not c.any_semantic


def test_the_semantic_cache_with_overrides_per_tenant_and_domain() -> None:
    s = parse(
        cache={
            "semantic": {
                "enabled": True,
                "align_threshold": 0.3,
                "domains": {"legal": {"threshold": 0.97}},
                "prune_s": 5,
            },
            "tenants": {
                "acme": {"semantic": {"threshold": 0.95}},
                "globex": {"semantic": {"enabled": False}},
            },
        }
    )
    c = s.cache
    assert c.any_semantic and c.prune_s == 5
    assert c.policy.semantic_policy(None) == SemanticPolicy(threshold=0.91, align_threshold=0.3)
    assert (
        c.policy.semantic_policy("legal").threshold == 0.97
        and c.policy.semantic_policy("code").threshold == 0.91
    )
    acme = c.policy_for("acme")
    assert acme.semantic and acme.semantic_policy("code").threshold == 0.95
    assert acme.semantic_policy("legal").threshold == 0.97  # inherited: the domain's own threshold wins
    assert not c.policy_for("globex").semantic


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"routing": {"strategy": "random"}}, "routing.strategy"),
        ({"routing": {"tier": "intern"}}, "routing.tier"),
        ({"routing": {"rules": [{"tier": "ta", "when": {"regex": "("}}]}}, "routing.rules[0].when.regex"),
        ({"routing": {"rules": [{"tier": "ta", "when": {"colour": "red"}}]}}, "routing.rules[0].when"),
        ({"routing": {"rules": [{"tier": "ta", "when": {"tools": "yes"}}]}}, "routing.rules[0].when.tools"),
        ({"routing": {"rules": [{"tier": "ta", "when": {"min_prompt_tokens": -1}}]}}, "min_prompt_tokens"),
        ({"routing": {"cascade": {"verifiers": ["vibes"]}}}, "routing.cascade.verifiers"),
        ({"routing": {"cascade": {"judge": {"fraction": 0.5}}}}, "routing.cascade.judge.tier"),
        (
            {"routing": {"cascade": {"judge": {"tier": "supervisor", "fraction": 2}}}},
            "routing.cascade.judge.fraction",
        ),
        ({"routing": {"tenants": {"acme": {"cascade": {"verifiers": []}}}}}, "routing.tenants.acme.cascade"),
        ({"routing": {"tenants": {"acme": {"route_table": {}}}}}, "routing.tenants.acme"),
        ({"routing": {"route_table": {"billing": "boss"}}}, "routing.route_table.billing"),
        ({"routing": {"refresh_s": 0}}, "routing.refresh_s"),
        ({"cache": {"exact": {"enabled": "yes"}}}, "cache.exact.enabled"),
        ({"cache": {"exact": {"max_bytes": 10}}}, "cache.exact.max_bytes"),
        ({"cache": {"semantic": {"threshold": 1.5}}}, "cache.semantic.threshold"),
        ({"cache": {"tenants": {"acme": {"write_queue": 5}}}}, "cache.tenants.acme"),
        ({"cache": {"size": 5}}, "cache"),
        ({"cache": {"semantic": {"threshold": "high"}}}, "cache.semantic.threshold"),
        (
            {"cache": {"tenants": {"acme": {"semantic": {"threshold": -0.1}}}}},
            "cache.tenants.acme.semantic.threshold",
        ),
        ({"cache": {"semantic": {"align_threshold": 2}}}, "cache.semantic.align_threshold"),
        ({"cache": {"semantic": {"enabled": "on"}}}, "cache.semantic.enabled"),
        ({"cache": {"semantic": {"ttl_s": 0}}}, "cache.semantic.ttl_s"),
        (
            {"cache": {"semantic": {"domains": {"legal": {"threshold": 1.2}}}}},
            "cache.semantic.domains.legal.threshold",
        ),
        ({"cache": {"semantic": {"domains": {"legal": 0.95}}}}, "cache.semantic.domains.legal"),
        ({"cache": {"semantic": {"prune_s": 0}}}, "cache.semantic.prune_s"),
        ({"cache": {"semantic": {"verify": False}}}, "cache.semantic"),
        ({"cache": {"tenants": {"acme": {"semantic": {"prune_s": 5}}}}}, "cache.tenants.acme.semantic"),
    ],
)
def test_bad_values_name_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**doc)
    assert field in str(info.value)


def test_an_admin_api_override_goes_over_the_configs_tenant_policy_field_by_field() -> None:
    c = parse(
        cache={
            "exact": {"ttl_s": 100},
            "semantic": {"enabled": True, "threshold": 0.9},
            "tenants": {"acme": {"exact": {"ttl_s": 200}, "semantic": {"threshold": 0.95}}},
        }
    ).cache
    acme = c.with_override("acme", {"exact": {"enabled": False}, "semantic": {"ttl_s": 60}})
    # admin API > `cache.tenants` > global: fields the override leaves out come from the config's tenant
    assert acme == CachePolicy(False, 200, True, 0.95, 60)
    assert c.with_override("other", {"nondeterministic": True}) == CachePolicy(
        True, 100, True, 0.9, 3600, True
    )
    assert c.with_override("acme", {}) == c.policy_for("acme")


@pytest.mark.parametrize(
    ("config", "override", "field"),
    [
        ({}, {"semantic": {"enabled": True}}, "cache.semantic.enabled"),
        ({"exact": {"enabled": False}}, {"exact": {"enabled": True}}, "cache.exact.enabled"),
    ],
)
def test_an_override_cannot_turn_on_a_cache_the_config_did_not_open(
    config: dict[str, Any], override: dict[str, Any], field: str
) -> None:
    c = parse(cache=config).cache
    with pytest.raises(ConfigError, match="in the config") as info:
        c.check_override("acme", override)
    assert info.value.where == field
    # Once the config opens it (for any tenant), the override may turn it on for another.
    kind = field.split(".")[1]
    opened = parse(cache={**config, "tenants": {"globex": {kind: {"enabled": True}}}}).cache
    opened.check_override("acme", override)
