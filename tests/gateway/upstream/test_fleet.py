"""The fleet: the one owner of the deployments that exist, its snapshot replaced whole on registration."""

from __future__ import annotations

from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.upstream.fleet import Fleet

SMALL = Deployment(id="student/small#0", name="small", model="small", tier="student")
BIG = Deployment(id="teacher/big#0", name="big", model="big", tier="teacher")
TINY = Deployment(id="registered/student/tiny#1", name="tiny", model="tiny", tier="student", candidate=True)


def test_a_candidate_is_known_and_callable_but_serves_nothing() -> None:
    fleet = Fleet((SMALL, BIG))
    snapshot = fleet.register((TINY,))
    assert snapshot is fleet.snapshot and fleet.configured == (SMALL, BIG)
    assert snapshot.catalog.tiers == {"student": (SMALL.id,), "teacher": (BIG.id,)}
    assert "tiny" not in snapshot.catalog.names
    assert snapshot.candidates == {TINY.id: TINY} and snapshot.candidate_tiers == {TINY.id: "student"}
    assert snapshot.deployment(TINY.id) is TINY


def test_registration_replaces_the_snapshot_and_leaves_the_old_one_whole() -> None:
    fleet = Fleet((SMALL,))
    before = fleet.snapshot
    active = Deployment(id=TINY.id, name="tiny", model="tiny", tier="student")
    after = fleet.register((active,))
    assert before.catalog.tiers == {"student": (SMALL.id,)} and before.deployments == (SMALL,)
    assert after.catalog.tiers == {"student": (SMALL.id, TINY.id)} and after.candidates == {}


def test_a_removed_model_stays_callable_for_the_calls_planned_on_it() -> None:
    fleet = Fleet((SMALL,))
    fleet.register((TINY,))
    removed = fleet.register(())
    assert removed.deployments == (SMALL,) and removed.candidates == {}
    assert removed.deployment(TINY.id) is TINY  # a call already in flight on it still finds it
