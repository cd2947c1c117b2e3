"""Seeded adversarial outcome sets for `tiergate replay`: the traffic that breaks a naive learning loop.

    python -m bench.adversarial --out bench/adversarial/work --seed 0

Writes one outcome file per set (the format `tiergate replay --outcomes` reads, domains named) and prints
its path. Every set has four tiers (student, TA, teacher, supervisor); replay serves the teacher and bills
each judge call at the supervisor's price, which here is 1.5 times the teacher's. Answers are long and
open-ended: scores are graded in [0, 1], so two answers almost never score alike and nearly every shadow
pair needs the judge.

- `far-worse`: 805 requests over 8 domains, mixed; the student reaches 20% of the teacher's quality and the
  TA 53% on every domain. Nothing may be promoted; learning can only lose money.
- `few`: the same tiers, 150 requests: too little traffic for any evaluation to pay back.
- `drift`: 1,600 requests, 8 domains arriving one after another (each domain's requests, then the next's);
  the TA is as good as the teacher on two of them, the last ones to arrive.
- `tenants`: 1,200 requests of two tenants with disjoint domains (4 each), interleaved; the TA is as good
  as the teacher on one tenant's domains only.

User feedback that contradicts the judge, also named in issue 12, cannot be expressed in an outcome file
(replay reads no feedback) and is not generated here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TIERS = ("student", "ta", "teacher", "supervisor")
# USD per token: the supervisor (the judge) costs more than the teacher, the cheaper tiers far less.
PRICE_PER_TOKEN = {"student": 0.15e-6, "ta": 0.6e-6, "teacher": 10e-6, "supervisor": 15e-6}
TEACHER_QUALITY = 0.8  # mean graded score of the teacher's answers
TOPICS = (
    "contract law",
    "tax filing",
    "kubernetes upgrades",
    "organic chemistry",
    "medieval history",
    "python packaging",
    "tomato gardening",
    "marathon training",
)


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    requests: int
    domains: int
    relative: dict[str, float]  # cheaper tier -> its quality as a share of the teacher's, on hard domains
    easy: frozenset[int] = field(default_factory=frozenset)  # domains where the TA is as good as the teacher
    drift: bool = False  # domains arrive one after another instead of mixed
    tenants: int = 1  # tenants, each with its own disjoint share of the domains
    answer_tokens: float = 900.0  # mean tokens of an answer (long, open-ended)


FAR_WORSE = {"student": 0.20, "ta": 0.53}
SPECS = {
    "far-worse": Spec("far-worse", 805, 8, FAR_WORSE),
    "few": Spec("few", 150, 8, FAR_WORSE),
    "drift": Spec("drift", 1600, 8, FAR_WORSE, easy=frozenset({6, 7}), drift=True),
    "tenants": Spec("tenants", 1200, 8, FAR_WORSE, easy=frozenset({0, 1, 2, 3}), tenants=2),
}


def _order(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """The domain of each request, in arrival order."""
    domains = np.arange(spec.requests) % spec.domains
    if spec.drift:
        return np.sort(domains)
    return rng.permutation(domains)


def generate(spec: Spec, seed: int) -> list[dict[str, Any]]:
    """The records of one set: the same `spec` and `seed` give the same records."""
    rng = np.random.default_rng([seed, len(spec.name), spec.requests])
    per_tenant = spec.domains // spec.tenants
    rows = []
    for i, d in enumerate(_order(spec, rng)):
        tenant = f"tenant{int(d) // per_tenant + 1}"
        prompt_tokens = int(rng.integers(80, 400))
        teacher = float(np.clip(rng.normal(TEACHER_QUALITY, 0.15), 0.0, 1.0))
        scores = {"teacher": teacher, "supervisor": float(np.clip(teacher + abs(rng.normal(0, 0.05)), 0, 1))}
        for tier, share in spec.relative.items():
            if tier == "ta" and int(d) in spec.easy:
                # As good as the teacher: often the same answer, else a small symmetric difference.
                same = rng.random() < 0.5
                scores[tier] = teacher if same else float(np.clip(teacher + rng.normal(0, 0.1), 0, 1))
            else:
                scores[tier] = float(np.clip(teacher * share + rng.normal(0, 0.1), 0.0, 1.0))
        outcomes = {}
        for tier in TIERS:
            tokens = prompt_tokens + rng.lognormal(np.log(spec.answer_tokens), 0.4)
            outcomes[tier] = {"score": round(scores[tier], 4), "cost": tokens * PRICE_PER_TOKEN[tier]}
        topic = TOPICS[int(d) % len(TOPICS)]
        rows.append(
            {
                "id": f"{spec.name}-{i}",
                "prompt": f"[{tenant}] an open-ended question about {topic}, number {i}",
                "domain": f"{tenant}/{topic}",
                "outcomes": outcomes,
            }
        )
    return rows


def write(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/adversarial/work"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", default=",".join(SPECS), help=f"comma-separated, of {', '.join(SPECS)}")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sets.split(",") if s not in SPECS]
    if unknown:
        print(f"unknown set {unknown[0]!r}; sets: {', '.join(SPECS)}", file=sys.stderr)
        return 2
    for name in args.sets.split(","):
        path = write(generate(SPECS[name], args.seed), args.out / f"{name}-{args.seed}.jsonl")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
