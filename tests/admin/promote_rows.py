"""Evidence for the promote job, seeded into a real database: two topics of queries with their embeddings,
served by the teacher, with shadow verdicts of the student and feedback."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.admin.conftest import config
from tests.admin.learning_rows import evaluation, feedback, trace, write
from tiergate.gateway.config.settings import Settings

NOW_MS = 1_750_000_000_000
DIMS = 384
TOPICS = {
    "billing": ["refund", "invoice", "charge", "card", "receipt"],
    "code": ["python", "function", "compile", "stack", "variable"],
}


def promote_settings(database_url: str, **promote: Any) -> Settings:
    section = {"clusters": 2, "quality": 0.9, **promote}
    return config(database_url, learning={"promote": section})


def vector(topic: str, rng: np.random.Generator) -> bytes:
    v = np.zeros(DIMS, dtype=np.float32)
    v[list(TOPICS).index(topic)] = 1.0
    v += rng.normal(0, 0.05, DIMS).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32).tobytes()


_DOORS = ("chat", "messages", "completions")


async def seed(
    engine: AsyncEngine,
    topic: str,
    *,
    requests: int,
    verdicts: dict[str, int] | None = None,
    served: str = "teacher",
    candidate: str = "student",
    feedback_score: float | None = None,
    ts_ms: int = NOW_MS - 3_600_000,
    seed: int = 0,
) -> list[str]:
    """`requests` traces of `topic` served by `served`; the first ones carry `verdicts` ({verdict: count}) of
    `candidate` against them, and feedback on every answer when `feedback_score` is given."""
    rng = np.random.default_rng([seed, len(topic)])
    words = TOPICS[topic]
    traces = []
    for i in range(requests):
        text = f"{words[i % 5]} {words[(i + 1) % 5]} {words[(i + 2) % 5]} question {i}"
        traces.append(
            trace(
                "ten_a",
                ts_ms + i,
                tier=served,
                endpoint=_DOORS[i % len(_DOORS)],  # evidence comes from every front door's chat calls
                cost_nano=10_000 if served == "teacher" else 1_000,
                messages=[{"role": "user", "content": text}],
                embedding=vector(topic, rng),
            )
        )
    await write(engine, "traces", traces)
    ids = [t["request_id"] for t in traces]
    rows, k = [], 0
    for verdict, count in (verdicts or {}).items():
        for _ in range(count):
            agreed = verdict == "as_good"
            rows.append(
                evaluation(
                    "ten_a",
                    ids[k],
                    ts_ms + k,
                    served_tier=served,
                    candidate_tier=candidate,
                    verdict=verdict,
                    agreed=agreed,
                    candidate_cost_nano=1_000 if candidate == "student" else 10_000,
                )
            )
            k += 1
    if rows:
        await write(engine, "evaluations", rows)
    if feedback_score is not None:
        await write(engine, "feedback", [feedback("ten_a", r, ts_ms + 1, feedback_score) for r in ids])
    return ids
