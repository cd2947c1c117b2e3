"""Which candidates a served answer is compared with, and the seeded per-request sampling."""

from __future__ import annotations

import pytest

from tiergate.policies.shadow import Candidate, candidate_tier, candidates, sampled

ALL = ("student", "ta", "teacher", "supervisor")


@pytest.mark.parametrize(
    ("served", "tiers", "mode", "expected"),
    [
        ("teacher", ALL, "next_cheaper", "ta"),
        ("ta", ALL, "next_cheaper", "student"),
        ("student", ALL, "next_cheaper", None),  # nothing is cheaper
        ("teacher", ("student", "teacher"), "next_cheaper", "student"),  # the next *configured* cheaper tier
        ("supervisor", ALL, "student", "student"),  # a named tier, cheaper than the served one
        ("ta", ALL, "teacher", None),  # a named tier that is not cheaper is no candidate
        ("teacher", ("ta", "teacher"), "student", None),  # a named tier nobody serves
        ("teacher", ALL, "none", None),
        ("gpt-4o", ALL, "next_cheaper", None),  # not a tier (an untiered deployment)
    ],
)
def test_candidate_tier(served: str, tiers: tuple[str, ...], mode: str, expected: str | None) -> None:
    assert candidate_tier(served, tiers, mode) == expected


def test_registered_models_are_compared_on_their_tiers_traffic() -> None:
    registered = {"registered/student/tiny#1": "student", "registered/teacher/new#2": "teacher"}
    # Served by teacher: TA is the next cheaper tier; the registered teacher competes with the incumbent.
    assert candidates("teacher", ALL, registered, "next_cheaper", True) == (
        Candidate("ta"),
        Candidate("teacher", "registered/teacher/new#2"),
    )
    # Served by TA: the student tier and the registered student are both candidates.
    assert candidates("ta", ALL, registered, "next_cheaper", True) == (
        Candidate("student"),
        Candidate("student", "registered/student/tiny#1"),
    )
    # Served by student: only the registered student (a possible replacement of the incumbent).
    assert candidates("student", ALL, registered, "next_cheaper", True) == (
        Candidate("student", "registered/student/tiny#1"),
    )
    assert candidates("ta", ALL, registered, "next_cheaper", False) == (Candidate("student"),)


def test_a_registered_model_on_a_tier_nobody_serves_is_the_next_cheaper_candidate() -> None:
    registered = {"registered/student/tiny#1": "student"}
    assert candidates("teacher", ("teacher",), registered, "next_cheaper", True) == (
        Candidate("student", "registered/student/tiny#1"),
    )
    assert candidates("teacher", ("teacher",), registered, "next_cheaper", False) == ()


def test_sampling_is_seeded_per_request_and_candidate_and_hits_its_rate() -> None:
    ta, tiny = Candidate("ta"), Candidate("student", "registered/student/tiny#1")
    ids = [f"req_{i}" for i in range(20_000)]
    drawn = [sampled(7, i, ta, 0.1) for i in ids]
    assert drawn == [sampled(7, i, ta, 0.1) for i in ids]  # reproducible: every replica agrees
    assert sum(drawn) / len(ids) == pytest.approx(0.1, abs=0.01)
    assert drawn != [sampled(8, i, ta, 0.1) for i in ids]  # the seed matters
    assert drawn != [sampled(7, i, tiny, 0.1) for i in ids]  # candidates are drawn independently
    assert not any(sampled(7, i, ta, 0.0) for i in ids[:100])
    assert all(sampled(7, i, ta, 1.0) for i in ids[:100])
