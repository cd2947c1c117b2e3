from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from bench.adversarial import SPECS, TEACHER_QUALITY, generate, main, write
from tiergate.admin.jobs.outcomes import load_outcomes


def scores(records: list, tier: str) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([r.outcomes[tier].score for r in records])


def test_every_set_is_a_valid_outcome_file_and_the_same_seed_gives_the_same_set(tmp_path: Path) -> None:
    for name, spec in SPECS.items():
        records = load_outcomes(write(generate(spec, 3), tmp_path / f"{name}.jsonl"))
        assert len(records) == spec.requests
        assert tuple(records[0].outcomes) == ("student", "ta", "teacher", "supervisor")
        assert generate(spec, 3) == generate(spec, 3) != generate(spec, 4)


def test_the_cheaper_tiers_are_far_worse_and_the_judge_costs_more_than_the_teacher(tmp_path: Path) -> None:
    records = load_outcomes(write(generate(SPECS["far-worse"], 0), tmp_path / "o.jsonl"))
    teacher = scores(records, "teacher").mean()
    assert abs(teacher - TEACHER_QUALITY) < 0.03
    assert abs(scores(records, "student").mean() / teacher - 0.20) < 0.03
    assert abs(scores(records, "ta").mean() / teacher - 0.53) < 0.03
    costs = {t: np.mean([r.outcomes[t].cost for r in records]) for t in records[0].outcomes}
    assert costs["supervisor"] > costs["teacher"] > 10 * costs["ta"] > costs["student"]
    # Graded, open-ended answers: the cheap agreement check settles almost no pair.
    assert (scores(records, "ta") == scores(records, "teacher")).mean() < 0.01


def test_drift_brings_domains_one_after_another_and_tenants_have_disjoint_domains() -> None:
    drift = generate(SPECS["drift"], 0)
    arrivals = [r["domain"] for r in drift]
    changes = sum(a != b for a, b in itertools.pairwise(arrivals))
    assert changes == SPECS["drift"].domains - 1
    # The domains where the TA is as good as the teacher arrive last.
    late = {str(r["domain"]) for r in drift[-400:]}
    ta_gap = np.mean([r["outcomes"]["teacher"]["score"] - r["outcomes"]["ta"]["score"] for r in drift[-400:]])  # type: ignore[index]
    assert len(late) == 2 and abs(ta_gap) < 0.03

    tenants = generate(SPECS["tenants"], 0)
    by_tenant: dict[str, set[str]] = {}
    for r in tenants:
        by_tenant.setdefault(str(r["domain"]).split("/")[0], set()).add(str(r["domain"]))
    assert len(by_tenant) == 2 and not set.intersection(*by_tenant.values())


def test_the_cli_writes_one_file_per_set_and_refuses_an_unknown_set(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--seed", "1", "--sets", "few,drift"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift-1.jsonl", "few-1.jsonl"]
    assert main(["--out", str(tmp_path), "--sets", "nope"]) == 2
