from __future__ import annotations

import pytest

from tiergate.policies.retry import Health
from tiergate.policies.routing import (
    Catalog,
    EscalationPolicy,
    Target,
    prefer_healthy,
    resolve,
    restrict,
    visible_models,
)

CATALOG = Catalog(
    tiers={"student": ("s1", "s2"), "teacher": ("t1",), "supervisor": ("p1",)},
    names={"mini": ("s1", "s2"), "big": ("t1",), "judge": ("p1",), "embed": ("e1",)},
    deployment_tier={"s1": "student", "s2": "student", "t1": "teacher", "p1": "supervisor", "e1": None},
)
ON = EscalationPolicy(tier_aliases=True, deployments=False)


@pytest.mark.parametrize(
    ("model", "policy", "expected"),
    [
        ("auto", ON, [("student", ("s1", "s2")), ("teacher", ("t1",)), ("supervisor", ("p1",))]),
        ("auto", EscalationPolicy(tier_aliases=False), [("student", ("s1", "s2"))]),
        ("teacher", ON, [("teacher", ("t1",)), ("supervisor", ("p1",))]),
        ("supervisor", ON, [("supervisor", ("p1",))]),
        ("mini", ON, [("student", ("s1", "s2"))]),  # explicit deployments do not escalate by default
        (
            "mini",
            EscalationPolicy(deployments=True),
            [("student", ("s1", "s2")), ("teacher", ("t1",)), ("supervisor", ("p1",))],
        ),
        ("embed", EscalationPolicy(deployments=True), [(None, ("e1",))]),  # no tier, nothing to climb
    ],
)
def test_resolve(
    model: str, policy: EscalationPolicy, expected: list[tuple[str | None, tuple[str, ...]]]
) -> None:
    plan = resolve(model, CATALOG, policy)
    assert plan is not None
    assert [(t.tier, t.deployments) for t in plan.targets] == expected
    assert plan.reason


@pytest.mark.parametrize("model", ["ta", "gpt-unknown", ""])
def test_unknown_or_unconfigured_models_resolve_to_none(model: str) -> None:
    assert resolve(model, CATALOG, ON) is None


def test_auto_with_nothing_configured() -> None:
    assert resolve("auto", Catalog({}, {}, {}), ON) is None


@pytest.mark.parametrize(
    ("model", "allowed", "expected_tiers"),
    [
        ("auto", None, ["student", "teacher", "supervisor"]),
        ("auto", frozenset({"student"}), ["student"]),
        ("auto", frozenset({"teacher", "supervisor"}), ["teacher", "supervisor"]),
        ("teacher", frozenset({"teacher"}), ["teacher"]),  # never escalates into a tier the key may not use
        ("teacher", frozenset({"student"}), None),
        ("big", frozenset({"big"}), ["teacher"]),
        ("big", frozenset({"teacher"}), ["teacher"]),  # allowed through its tier
        ("big", frozenset({"mini"}), None),
        ("auto", frozenset({"mini"}), None),
    ],
)
def test_restrict(model: str, allowed: frozenset[str] | None, expected_tiers: list[str] | None) -> None:
    plan = resolve(model, CATALOG, ON)
    assert plan is not None
    limited = restrict(plan, model, CATALOG, allowed)
    if expected_tiers is None:
        assert limited is None
    else:
        assert limited is not None
        assert [t.tier for t in limited.targets] == expected_tiers


def test_prefer_healthy_rotates_and_puts_resting_deployments_last() -> None:
    ids = ("a", "b", "c")
    assert prefer_healthy(ids, {}, 0.0, 0) == ("a", "b", "c")
    assert prefer_healthy(ids, {}, 0.0, 1) == ("b", "c", "a")
    resting = {"b": Health(0, cooled_until=10.0)}
    assert prefer_healthy(ids, resting, 5.0, 1) == ("c", "a", "b")
    assert prefer_healthy(ids, resting, 10.0, 1) == ("b", "c", "a")  # rested long enough
    assert prefer_healthy((), {}, 0.0, 3) == ()


def test_visible_models_lists_auto_tiers_then_names() -> None:
    assert visible_models(CATALOG) == (
        "auto",
        "student",
        "teacher",
        "supervisor",
        "mini",
        "big",
        "judge",
        "embed",
    )
    assert visible_models(Catalog({}, {"embed": ("e1",)}, {"e1": None})) == ("embed",)


def test_target_is_hashable_value() -> None:
    assert Target("student", ("s1",)) == Target("student", ("s1",))
