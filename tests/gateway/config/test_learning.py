"""The `learning:` section: defaults, per-tenant shadow policies, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import parse_settings
from tiergate.policies.exploration import ExplorationConfig


def learning(section: Any) -> Any:
    return parse_settings({"learning": section}, env={}).learning


def test_defaults_trace_redacted_for_30_days_and_shadow_nothing() -> None:
    settings = learning(None)
    assert settings.traces.enabled and settings.traces.content == "redacted"
    assert settings.traces.retention_days == 30
    # Shadowing spends money: nothing runs until a fraction is given or the route table's shares are followed.
    policy = settings.shadow.policy
    assert not settings.shadow.any_active and not policy.follows_table
    assert policy.fraction_for("billing", "student") == 0.0
    assert policy.fraction_for("billing", "student", explore=0.3) == 0.0
    follows = learning({"shadow": {"route_table": True}}).shadow.policy
    assert follows.follows_table and follows.fraction_for("billing", "student", explore=0.3) == 0.3
    assert (
        settings.shadow.policy.candidate == "next_cheaper"
        and settings.shadow.policy.judge_tier == "supervisor"
    )
    assert settings.shadow.policy.daily_budget_nano == 1_000_000_000


def test_fractions_per_domain_and_candidate_and_tenant_overrides() -> None:
    settings = learning(
        {
            "traces": {"content": "full", "retention_days": 7},
            "shadow": {
                "fraction": 0.05,
                "domains": {"billing": {"student": 0.5}},
                "daily_budget_usd": 2.5,
                "tenants": {"acme": {"fraction": 0.2, "candidate": "student", "registered": False}},
            },
        }
    )
    assert settings.traces.content == "full" and settings.traces.retention_days == 7
    base, acme = settings.shadow.policy_for(None), settings.shadow.policy_for("acme")
    assert base.fraction_for("billing", "student") == 0.5
    assert base.fraction_for("billing", "ta") == base.fraction_for("code", "student") == 0.05
    assert base.fraction_for(None, "student") == 0.05
    assert base.daily_budget_nano == 2_500_000_000
    # A tenant's override starts from the global policy: it keeps what it does not change.
    assert acme.fraction == 0.2 and acme.candidate == "student" and not acme.registered
    assert acme.fraction_for("billing", "student") == 0.5 and acme.daily_budget_nano == base.daily_budget_nano
    assert settings.shadow.policy_for("other") is base
    assert settings.shadow.any_active


def test_promote_defaults_are_the_replays_and_can_be_set() -> None:
    from tiergate.admin.jobs.replay_config import ReplayConfig
    from tiergate.policies.promotion import PromotionConfig

    default = learning(None).promote
    replay = ReplayConfig()
    assert not default.enabled and default.promotion == PromotionConfig() == replay.promotion
    # One source of defaults: the live job explores by value of information exactly as replay does.
    assert default.exploration == replay.exploration and default.explore is replay.explore is None
    # ... and caps evaluation spend at the share of serving spend replay caps it at, on by default.
    shadow = learning(None).shadow.policy
    assert shadow.evaluation_share == replay.evaluation_budget == 0.05
    assert learning({"shadow": {"evaluation_share": 0.2}}).shadow.policy.evaluation_share == 0.2
    assert default.quality is None and default.promotion.quality_budget == 0.05
    given = learning(
        {"promote": {"enabled": True, "interval_s": 600, "quality_budget": 0.02, "alpha": 0.1,
                     "min_samples": 50, "quality": 0.8, "clusters": 12, "window_days": 7}}
    ).promote  # fmt: skip
    assert given.enabled and given.interval_s == 600 and given.window_days == 7
    assert (given.promotion.quality_budget, given.promotion.alpha, given.promotion.min_samples) == (
        0.02,
        0.1,
        50,
    )
    assert given.quality == 0.8 and given.clusters == 12
    tuned = learning(
        {"promote": {"horizon": 3, "max_share": 0.2, "revisit": 0.02, "monitor": 0.05, "explore": 0.1}}
    ).promote
    assert tuned.exploration == ExplorationConfig(horizon=3, max_share=0.2, revisit=0.02, monitor=0.05)
    assert tuned.explore == 0.1


def test_a_file_written_for_the_old_exploration_settings_still_loads() -> None:
    # `enough` set when exploration slowed after a fixed number of verdicts; it is read and has no effect.
    old = learning({"promote": {"explore": 0.3, "monitor": 0.03, "enough": 200}}).promote
    assert old.explore == 0.3 and old.exploration == ExplorationConfig()


@pytest.mark.parametrize(
    ("shadow", "explore", "expected"),
    [
        ({}, None, 0.0),  # nothing set: off
        ({"fraction": 0.1}, None, 0.1),  # the table has no share for the domain: the config's fraction
        ({"fraction": 0.1, "route_table": True}, 0.3, 0.3),  # the table's share wins over the fraction ...
        (
            {"fraction": 0.1, "route_table": True, "domains": {"billing": {"student": 0.02}}},
            0.3,
            0.02,
        ),  # ... not
        (
            {"fraction": 0.1, "route_table": True, "domains": {"billing": {"ta": 0.02}}},
            0.3,
            0.3,
        ),  # over `domains`
        ({"fraction": 0.1}, 0.3, 0.1),  # not following the table (the default)
    ],
)
def test_precedence_of_shadow_fractions(
    shadow: dict[str, Any], explore: float | None, expected: float
) -> None:
    policy = learning({"shadow": shadow}).shadow.policy
    assert policy.fraction_for("billing", "student", explore) == expected


@pytest.mark.parametrize(
    ("shadow", "follows", "active"),
    [
        ({}, False, False),
        ({"route_table": True}, True, True),
        ({"fraction": 0.1}, False, True),
        ({"route_table": True, "candidate": "none"}, False, False),  # compares nothing: no monitoring samples
        ({"route_table": True, "daily_budget_usd": 0}, False, False),
        ({"route_table": True, "evaluation_share": 0}, False, False),  # no evaluation may be paid for
    ],
)
def test_which_policies_follow_the_route_table(shadow: dict[str, Any], follows: bool, active: bool) -> None:
    settings = learning({"shadow": shadow}).shadow
    assert settings.policy.follows_table is follows and settings.any_active is active


def test_a_tenant_can_opt_in_or_out_of_the_route_tables_shares() -> None:
    settings = learning({"shadow": {"tenants": {"acme": {"route_table": True}}}}).shadow
    assert settings.policy_for("acme").follows_table and not settings.policy_for("other").follows_table
    settings = learning({"shadow": {"route_table": True, "tenants": {"acme": {"route_table": False}}}}).shadow
    assert settings.policy_for("other").follows_table and not settings.policy_for("acme").follows_table


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"traces": {"content": "some"}},
            'learning.traces.content: "some" is not one of full, redacted, none',
        ),
        ({"traces": {"retention_days": 0}}, "learning.traces.retention_days: 0 is not an integer >= 1"),
        (
            {"traces": {"colour": 1}},
            "learning.traces.colour: unknown field (allowed: batch_size, content, enabled,",
        ),
        ({"shadow": {"fraction": 1.5}}, "learning.shadow.fraction: 1.5 is not a number from 0.0 to 1.0"),
        (
            {"shadow": {"domains": {"billing": {"intern": 0.1}}}},
            'learning.shadow.domains.billing.intern: "intern" is not one of student, ta,',
        ),
        (
            {"shadow": {"candidate": "cheapest"}},
            'learning.shadow.candidate: "cheapest" is not one of next_cheaper, none, student,',
        ),
        (
            {"shadow": {"judge_tier": "boss"}},
            'learning.shadow.judge_tier: "boss" is not one of student, ta, teacher, supervisor',
        ),
        ({"shadow": {"route_table": "yes"}}, 'learning.shadow.route_table: "yes" is not true or false'),
        (
            {"shadow": {"daily_budget_usd": -1}},
            "learning.shadow.daily_budget_usd: -1 is not a number from 0.0 to",
        ),
        (
            {"shadow": {"tenants": {"acme": {"seed": 3}}}},
            "learning.shadow.tenants.acme.seed: unknown field (allowed: candidate,",
        ),
        ({"models": {"refresh_s": 0}}, "learning.models.refresh_s: 0 is not a number >= 0.05"),
        ({"replay": {}}, "learning.replay: unknown field (allowed: models, promote, shadow, traces)"),
        ({"promote": {"enabled": "yes"}}, 'learning.promote.enabled: "yes" is not true or false'),
        (
            {"promote": {"quality_budget": 1}},
            "learning.promote.quality_budget: 1 is not a number > 0.0 and < 1.0",
        ),
        ({"promote": {"alpha": 0}}, "learning.promote.alpha: 0 is not a number > 0.0 and < 0.5"),
        ({"promote": {"quality": 1.5}}, "learning.promote.quality: 1.5 is not a number from 0.0 to 1.0"),
        ({"promote": {"clusters": 0}}, "learning.promote.clusters: 0 is not an integer >= 1"),
        ({"promote": {"interval_s": 0}}, "learning.promote.interval_s: 0 is not a number >= 0.01"),
        (
            {"promote": {"budget": 0.1}},
            "learning.promote.budget: unknown field; did you mean quality_budget?",
        ),
    ],
)
def test_errors_name_the_field(section: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        learning(section)
    assert str(info.value).startswith(message)
