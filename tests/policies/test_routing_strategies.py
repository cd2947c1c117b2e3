"""The strategies `auto` can use, table-driven: features, domain, route table, policy, health -> targets."""

from __future__ import annotations

import re

import pytest

from tiergate.policies.retry import Health
from tiergate.policies.route_table import Sampling
from tiergate.policies.routing import (
    MONITOR_KEY,
    STRATEGIES,
    Catalog,
    EscalationPolicy,
    Features,
    RouteRequest,
    RouteTable,
    RoutingPolicy,
    Rule,
    decide,
)
from tiergate.policies.shadow import drawn

CATALOG = Catalog(
    tiers={"student": ("s1",), "ta": ("a1",), "teacher": ("t1",), "supervisor": ("p1",)},
    names={"s": ("s1",), "a": ("a1",), "t": ("t1",), "p": ("p1",)},
    deployment_tier={"s1": "student", "a1": "ta", "t1": "teacher", "p1": "supervisor"},
)
NO_TA = Catalog(
    tiers={"student": ("s1",), "supervisor": ("p1",)},
    names={"s": ("s1",), "p": ("p1",)},
    deployment_tier={"s1": "student", "p1": "supervisor"},
)
RULES = (
    Rule("supervisor", "vip header", header="x-priority", header_value="high"),
    Rule("teacher", "long", min_prompt_tokens=1000),
    Rule("ta", "tools", tools=True),
    Rule("ta", "json", json_schema=True),
    Rule("teacher", "proofs", pattern=re.compile(r"(?i)\bprove\b")),
    Rule("ta", "code words", keywords=("python", "c++")),
    Rule("teacher", "acme", tenants=frozenset({"acme"})),
    Rule("ta", "long chats", min_turns=5),
    Rule("ta", "any debug header", header="x-debug"),
    Rule("student", "short", max_prompt_tokens=10),
)


def tiers(plan_request: RouteRequest) -> list[str | None]:
    plan = decide(plan_request)
    assert plan is not None
    return [t.tier for t in plan.targets]


def test_every_strategy_is_registered_by_name() -> None:
    assert set(STRATEGIES) == {"fixed", "rules", "promotion", "cascade"}


@pytest.mark.parametrize(
    ("policy", "catalog", "escalation", "expected", "reason"),
    [
        (
            RoutingPolicy(),
            CATALOG,
            EscalationPolicy(),
            ["student", "ta", "teacher", "supervisor"],
            "fixed: student",
        ),
        (
            RoutingPolicy(tier="teacher"),
            CATALOG,
            EscalationPolicy(),
            ["teacher", "supervisor"],
            "fixed: teacher",
        ),
        (RoutingPolicy(tier="teacher"), CATALOG, EscalationPolicy(tier_aliases=False), ["teacher"], "fixed"),
        (RoutingPolicy(tier="ta"), NO_TA, EscalationPolicy(), ["supervisor"], "ta not configured"),
    ],
)
def test_fixed(
    policy: RoutingPolicy, catalog: Catalog, escalation: EscalationPolicy, expected: list[str], reason: str
) -> None:
    r = RouteRequest(catalog, policy, escalation)
    assert tiers(r) == expected
    plan = decide(r)
    assert plan is not None and reason in plan.reason and not plan.verify


@pytest.mark.parametrize(
    ("features", "first", "rule"),
    [
        (Features(prompt_tokens=50), "student", "no rule matched"),
        (Features(prompt_tokens=5), "student", "short"),
        (Features(prompt_tokens=50, headers={"x-priority": "high"}), "supervisor", "vip header"),
        (Features(prompt_tokens=50, headers={"x-priority": "low"}), "student", "no rule matched"),
        (Features(prompt_tokens=5000, tools=True), "teacher", "long"),  # first match wins
        (Features(prompt_tokens=50, tools=True), "ta", "tools"),
        (Features(prompt_tokens=50, json_schema=True), "ta", "json"),
        (Features(prompt_tokens=50, last_user="Please PROVE this"), "teacher", "proofs"),
        (Features(prompt_tokens=50, last_user="improve this"), "student", "no rule matched"),  # whole words
        (Features(prompt_tokens=50, last_user="a Python question"), "ta", "code words"),
        (Features(prompt_tokens=50, last_user="C++ templates?"), "ta", "code words"),
        (Features(prompt_tokens=50, last_user="pythonic"), "student", "no rule matched"),
        (Features(prompt_tokens=50, tenant_id="acme"), "teacher", "acme"),
        (Features(prompt_tokens=50, tenant_id="other"), "student", "no rule matched"),
        (Features(prompt_tokens=50, turns=6), "ta", "long chats"),
        (Features(prompt_tokens=50, headers={"x-debug": "1"}), "ta", "any debug header"),
    ],
)
def test_rules(features: Features, first: str, rule: str) -> None:
    r = RouteRequest(CATALOG, RoutingPolicy("rules", rules=RULES), features=features)
    plan = decide(r)
    assert plan is not None
    assert plan.targets[0].tier == first and rule in plan.reason


def test_rules_default_tier_and_every_condition_of_a_rule_must_hold() -> None:
    both = Rule("teacher", "long tool calls", min_prompt_tokens=100, tools=True)
    policy = RoutingPolicy("rules", rules=(both,), default_tier="ta")
    assert (
        tiers(RouteRequest(CATALOG, policy, features=Features(prompt_tokens=500, tools=True)))[0] == "teacher"
    )
    assert tiers(RouteRequest(CATALOG, policy, features=Features(prompt_tokens=500)))[0] == "ta"
    assert tiers(RouteRequest(CATALOG, policy, features=Features(prompt_tokens=5, tools=True)))[0] == "ta"


TABLE = RouteTable(version=7, routes={"billing": "student", "code": "ta", "legal": "supervisor"})


@pytest.mark.parametrize(
    ("domain", "table", "policy", "first", "reason"),
    [
        (
            "billing",
            TABLE,
            RoutingPolicy("promotion"),
            "student",
            "domain billing -> student (route table v7)",
        ),
        ("code", TABLE, RoutingPolicy("promotion"), "ta", "domain code -> ta"),
        ("legal", TABLE, RoutingPolicy("promotion"), "supervisor", "legal"),
        ("cooking", TABLE, RoutingPolicy("promotion"), "teacher", "cooking not in route table v7"),
        (None, TABLE, RoutingPolicy("promotion"), "teacher", "general not in route table"),
        ("cooking", TABLE, RoutingPolicy("promotion", unknown_tier="supervisor"), "supervisor", "not in"),
        ("billing", RouteTable(), RoutingPolicy("promotion"), "teacher", "v0"),  # no table yet: the teacher
    ],
)
def test_promotion(
    domain: str | None, table: RouteTable, policy: RoutingPolicy, first: str, reason: str
) -> None:
    plan = decide(RouteRequest(CATALOG, policy, domain=domain, table=table))
    assert plan is not None and plan.targets[0].tier == first and reason in plan.reason


def test_promotion_to_an_unconfigured_tier_goes_to_the_next_more_capable_one() -> None:
    plan = decide(RouteRequest(NO_TA, RoutingPolicy("promotion"), domain="code", table=TABLE))
    assert plan is not None and [t.tier for t in plan.targets] == ["supervisor"]


MONITORED = RouteTable(
    version=8,
    routes={"billing": "student", "code": "ta", "legal": "teacher"},
    sampling={
        "billing": Sampling(1.0, "teacher"),  # every request a monitoring sample
        "code": Sampling(0.0, "teacher"),  # none
        "legal": Sampling(1.0),  # exploring: a shadow share, not routing's business
    },
)


@pytest.mark.parametrize(
    ("domain", "catalog", "monitoring", "targets", "monitor", "reason"),
    [
        (
            "billing", CATALOG, True, ["teacher", "supervisor"], "student",
            "promotion: domain billing -> student (route table v8); teacher serves: monitoring sample",
        ),
        ("billing", CATALOG, False, ["student", "ta", "teacher", "supervisor"], None, "billing -> student"),
        ("code", CATALOG, True, ["ta", "teacher", "supervisor"], None, "domain code -> ta (route table v8)"),
        ("legal", CATALOG, True, ["teacher", "supervisor"], None, "domain legal -> teacher (route table v8)"),
        # The incumbent is not configured: the nearest more capable tier serves the sample.
        ("billing", NO_TA, True, ["supervisor"], "student", "supervisor serves: monitoring sample"),
    ],
)  # fmt: skip
def test_a_promoted_domains_monitoring_sample_is_served_by_the_incumbent(
    domain: str,
    catalog: Catalog,
    monitoring: bool,
    targets: list[str],
    monitor: str | None,
    reason: str,
) -> None:
    r = RouteRequest(
        catalog,
        RoutingPolicy("promotion"),
        domain=domain,
        table=MONITORED,
        request_id="r1",
        monitoring=monitoring,
    )
    plan = decide(r)
    assert plan is not None and [t.tier for t in plan.targets] == targets
    assert plan.monitor == monitor and reason in plan.reason


def test_no_sample_when_the_routed_and_the_incumbent_tier_are_served_alike() -> None:
    # Neither ta nor teacher is configured here: both would be served by the supervisor, nothing to compare.
    table = RouteTable(1, {"code": "ta"}, {"code": Sampling(1.0, "teacher")})
    plan = decide(
        RouteRequest(NO_TA, RoutingPolicy("promotion"), domain="code", table=table, monitoring=True)
    )
    assert plan is not None and plan.monitor is None and "monitoring" not in plan.reason


@pytest.mark.parametrize("seed", [0, 7])
def test_the_monitoring_share_is_a_seeded_draw_per_request_id(seed: int) -> None:
    table = RouteTable(1, {"billing": "student"}, {"billing": Sampling(0.25, "teacher")})

    def monitored(request_id: str) -> bool:
        r = RouteRequest(
            CATALOG, RoutingPolicy("promotion"), domain="billing", table=table,
            request_id=request_id, monitoring=True, seed=seed,
        )  # fmt: skip
        plan = decide(r)
        assert plan is not None
        return plan.monitor is not None

    ids = [f"req-{i}" for i in range(2000)]
    picked = [i for i in ids if monitored(i)]
    assert 400 < len(picked) < 600  # about a quarter
    assert picked == [i for i in ids if monitored(i)]  # the same requests again: every replica agrees
    assert picked == [i for i in ids if drawn(seed, i, MONITOR_KEY, 0.25)]


@pytest.mark.parametrize(
    ("policy", "catalog", "expected", "verify"),
    [
        (RoutingPolicy("cascade"), CATALOG, ["student", "ta", "teacher", "supervisor"], True),
        (
            RoutingPolicy("cascade", cascade_tiers=("teacher", "student")),
            CATALOG,
            ["student", "teacher"],
            True,
        ),
        (RoutingPolicy("cascade", cascade_tiers=("ta", "teacher")), NO_TA, ["student", "supervisor"], True),
        (
            RoutingPolicy("cascade", cascade_tiers=("student",)),
            CATALOG,
            ["student"],
            False,
        ),  # nothing to climb
    ],
)
def test_cascade(policy: RoutingPolicy, catalog: Catalog, expected: list[str], verify: bool) -> None:
    plan = decide(RouteRequest(catalog, policy))
    assert plan is not None and [t.tier for t in plan.targets] == expected and plan.verify is verify


def test_cascade_escalates_even_when_tier_aliases_do_not() -> None:
    plan = decide(RouteRequest(CATALOG, RoutingPolicy("cascade"), EscalationPolicy(tier_aliases=False)))
    assert plan is not None and len(plan.targets) == 4 and plan.verify


@pytest.mark.parametrize("strategy", ["fixed", "cascade"])
def test_a_tier_whose_every_deployment_rests_is_skipped(strategy: str) -> None:
    health = {"s1": Health(0, cooled_until=100.0)}
    resting = decide(RouteRequest(CATALOG, RoutingPolicy(strategy), health=health, now=50.0))
    rested = decide(RouteRequest(CATALOG, RoutingPolicy(strategy), health=health, now=100.0))
    assert resting is not None and resting.targets[0].tier == "ta" and "student resting" in resting.reason
    assert rested is not None and rested.targets[0].tier == "student"


def test_the_last_tier_is_kept_even_when_resting() -> None:
    health = {"p1": Health(0, cooled_until=100.0)}
    plan = decide(RouteRequest(CATALOG, RoutingPolicy(tier="supervisor"), health=health, now=0.0))
    assert plan is not None and [t.tier for t in plan.targets] == ["supervisor"]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_nothing_configured_is_none(strategy: str) -> None:
    assert decide(RouteRequest(Catalog({}, {}, {}), RoutingPolicy(strategy))) is None


def test_policy_says_what_it_needs() -> None:
    assert RoutingPolicy("promotion").needs_domain and not RoutingPolicy("cascade").needs_domain
    assert RoutingPolicy("rules", rules=(Rule("ta", min_prompt_tokens=5),)).needs_prompt_tokens
    assert not RoutingPolicy("rules", rules=(Rule("ta", tools=True),)).needs_prompt_tokens
