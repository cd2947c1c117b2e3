"""One policy, live and in replay: on the same evidence, the live promote job writes the shadow shares replay
follows, with the same defaults, so the two cannot drift apart again."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.admin.jobs import promote
from tiergate.admin.jobs.promote_evidence import Built
from tiergate.admin.jobs.replay_config import ReplayConfig, shares
from tiergate.gateway.config.settings import parse_settings
from tiergate.policies import domains as dom
from tiergate.policies.promotion import DomainEvidence, Quality, Verdicts, plan
from tiergate.policies.route_table import Sampling

NOW_MS = 1_750_000_000_000
TWO = ("student", "teacher")
THREE = ("student", "ta", "teacher")
COSTS = {"student": 1e-6, "ta": 4e-6, "teacher": 1e-5}


def domain(
    name: str,
    traffic: int,
    tier: str = "teacher",
    ladder: tuple[str, ...] = TWO,
    **steps: tuple[int, int, int],
) -> DomainEvidence:
    """`steps`: candidate tier -> (better, same, worse) against the tier above it on `ladder`."""
    verdicts = {
        (cand, ladder[ladder.index(cand) + 1]): Verdicts(better=b, same=s, worse=w)
        for cand, (b, s, w) in steps.items()
    }
    costs = {t: COSTS[t] for t in ladder}
    return DomainEvidence(name, name, tier, float(traffic), costs, verdicts)


CASES: dict[str, tuple[tuple[str, ...], list[DomainEvidence]]] = {
    "nothing measured yet": (TWO, [domain("a", 100), domain("b", 300)]),
    "one promising, one futile": (
        TWO,
        [domain("a", 200, student=(0, 20, 0)), domain("b", 200, student=(0, 40, 20))],
    ),
    "every cheaper answer worse": (
        TWO,
        [domain("a", 500, student=(0, 0, 60)), domain("b", 500, student=(0, 2, 50)), domain("c", 100)],
    ),
    "promoted and monitored": (
        TWO,
        [domain("a", 400, student=(2, 80, 0)), domain("b", 100, "student", student=(0, 60, 0))],
    ),
    "three tiers": (
        THREE,
        [
            domain("a", 300, ladder=THREE, ta=(0, 40, 1), student=(0, 10, 10)),
            domain("b", 300, ladder=THREE, ta=(0, 5, 0)),
            domain("c", 50, ladder=THREE),
        ],
    ),
}


def live_settings(**promote_section: Any) -> Any:
    return parse_settings({"learning": {"promote": promote_section}}, env={})


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    ("judge_cost", "next_run", "unpriced"), [(1.0, 1.0, ()), (2.5, 0.25, ()), (0.5, 2.0, ("student",))]
)
def test_live_and_replay_give_the_same_shares_for_the_same_evidence(
    case: str, judge_cost: float, next_run: float, unpriced: tuple[str, ...]
) -> None:
    ladder, evidence = CASES[case]
    settings = live_settings()
    result = plan(evidence, ladder, Quality(0.9, 0.9, 0), settings.learning.promote.promotion)
    # The live job's next decision is `interval_s` away; its window's traffic arrived over `span`.
    span_ms = settings.learning.promote.interval_s * 1000 / next_run
    built = Built(
        domain_set=dom.DomainSet((), 0.25), evidence=evidence, quality=result.quality, new_domains=(),
        retired=(), judge_cost=judge_cost, unpriced=unpriced, first_ms=int(NOW_MS - span_ms),
    )  # fmt: skip
    live = promote.shadow_sampling(built, result, ladder, settings, NOW_MS)
    replayed = shares(
        evidence, result, ladder, ReplayConfig(), judge_cost=judge_cost, next_run=next_run, unpriced=unpriced
    )
    assert live == replayed
    assert set(live) == {e.domain for e in evidence}


def test_the_cases_are_ones_where_the_policy_decides_something() -> None:
    # Not a constant share: the cases above exercise exploring, futility, revisiting and monitoring.
    got: set[Sampling] = set()
    for ladder, evidence in CASES.values():
        result = plan(evidence, ladder, Quality(0.9, 0.9, 0), ReplayConfig().promotion)
        got |= set(
            shares(
                evidence, result, ladder, ReplayConfig(), judge_cost=1.0, next_run=1.0, unpriced=()
            ).values()
        )
    assert any(s.incumbent for s in got) and Sampling(0.0) in got
    assert len({s.share for s in got if s.incumbent is None and s.share > 0}) >= 3


def test_settings_the_user_tunes_reach_the_live_shares_as_they_would_replays() -> None:
    ladder, evidence = CASES["nothing measured yet"]
    tuned = live_settings(max_share=0.1, horizon=4.0)
    result = plan(evidence, ladder, Quality(0.9, 0.9, 0), tuned.learning.promote.promotion)
    built = Built(dom.DomainSet((), 0.25), evidence, result.quality, (), (), first_ms=NOW_MS - 3_600_000)
    live = promote.shadow_sampling(built, result, ladder, tuned, NOW_MS)
    config = ReplayConfig(exploration=tuned.learning.promote.exploration)
    assert live == shares(evidence, result, ladder, config, judge_cost=1.0, next_run=1.0, unpriced=())
    assert all(s.share <= 0.1 for s in live.values()) and live != promote.shadow_sampling(
        built, result, ladder, live_settings(), NOW_MS
    )
