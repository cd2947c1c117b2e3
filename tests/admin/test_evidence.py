"""The evidence the promote job reads: verdicts and feedback per domain and tier, tenant by tenant."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.admin.learning_rows import evaluation, feedback, trace, write
from tiergate.admin.evidence import (
    FeedbackStats,
    Verdicts,
    count_verdicts,
    feedback_rows,
    feedback_stats,
    verdict_rows,
)


async def test_verdicts_count_agreements_as_same_and_skip_what_gave_no_evidence(engine: AsyncEngine) -> None:
    rows = [
        evaluation("a", "r1", 100, domain="math", verdict="worse"),
        evaluation("a", "r2", 200, domain="math", verdict="as_good", agreed=True, agreement="number"),
        evaluation("a", "r3", 300, domain="math", verdict="better"),
        evaluation("a", "r4", 400, domain="code", verdict="as_good", candidate_tier="ta", served_tier="supervisor"),
        evaluation("a", "r5", 500, domain="math", verdict=None, status="judge_failed"),
        evaluation("a", "r6", 600, domain="math", verdict=None, status="no_verdict"),
        evaluation("a", "r7", 700, domain="math", verdict="worse", registered=True, candidate_deployment_id="registered/student/x#1"),
        evaluation("b", "r8", 800, domain="math", verdict="worse"),
    ]  # fmt: skip
    await write(engine, "evaluations", rows)
    mine = await verdict_rows(engine, tenant_id="a")
    assert [r.request_id for r in mine] == ["r1", "r2", "r3", "r4"]
    assert mine[1].agreed and not mine[0].agreed
    assert count_verdicts(mine) == {
        ("math", "student", "teacher"): Verdicts(better=1, same=1, worse=1),
        ("code", "ta", "supervisor"): Verdicts(same=1),
    }
    assert [r.request_id for r in await verdict_rows(engine, tenant_id="a", since_ms=250)] == ["r3", "r4"]
    with_registered = await verdict_rows(engine, tenant_id="a", registered=True)
    assert with_registered[-1].candidate_deployment_id == "registered/student/x#1"
    assert len(await verdict_rows(engine)) == 5  # every tenant: the job's global view


async def test_feedback_is_the_newest_per_request_on_the_tier_that_answered(engine: AsyncEngine) -> None:
    traces = [
        trace("a", 10, request_id="r1", domain="math", tier="teacher"),
        trace("a", 20, request_id="r2", domain="math", tier="student"),
        trace("a", 30, request_id="r3", tier=None, status="error"),  # no answer: nothing to judge
        trace("b", 40, request_id="r1", domain="code", tier="ta"),  # the same id in another tenant
    ]
    await write(engine, "traces", traces)
    await write(
        engine,
        "feedback",
        [
            feedback("a", "r1", 100, 0.0),
            feedback("a", "r1", 200, 1.0),  # changed its mind: the newest counts
            feedback("a", "r2", 150, 0.5),
            feedback("a", "r3", 160, 1.0),
            feedback("b", "r1", 170, 0.25),
            feedback("a", "r9", 180, 1.0),  # no trace of the tenant's
        ],
    )
    mine = await feedback_rows(engine, tenant_id="a")
    assert [(r.request_id, r.domain, r.tier, r.score) for r in mine] == [
        ("r2", "math", "student", 0.5),
        ("r1", "math", "teacher", 1.0),
    ]
    assert feedback_stats(mine) == {
        ("math", "student"): FeedbackStats(1, 0.5, 0.25),
        ("math", "teacher"): FeedbackStats(1, 1.0, 1.0),
    }
    (theirs,) = await feedback_rows(engine, tenant_id="b")
    assert (theirs.domain, theirs.tier, theirs.score) == ("code", "ta", 0.25)
    assert len(await feedback_rows(engine)) == 3
    assert await feedback_rows(engine, tenant_id="a", since_ms=190) == [mine[1]]
