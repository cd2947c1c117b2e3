"""One run per interval of a job that every replica schedules: a claim in the shared database.

Every gateway with `learning.promote.enabled` wakes up every `interval_s`; without coordination N replicas
would each cluster the same traces N times per interval (the conditional route-table write keeps the
result right, not the work small). Before running, a replica claims the job: one statement moves the job's
`started_ms` forward only if the last claim is at least `gap_s` old, so of the replicas waking in one
interval one does the work and the others skip. Nothing is held while the job runs: a replica that dies
mid-run delays the next run by one interval at most.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.db.learning import JobRun

_TABLE = JobRun.__table__  # type: ignore[attr-defined]


def holder_name() -> str:
    """This process, as the claims name it: host, pid and a random suffix (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def claim(
    engine: AsyncEngine, job: str, holder: str, gap_s: float, *, now_ms: int | None = None
) -> bool:
    """Whether this holder may run `job` now: True when no claim of it is younger than `gap_s`."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    values = {"holder": holder, "started_ms": now_ms}
    async with engine.begin() as conn:
        # Atomic on both databases: PostgreSQL re-checks the WHERE of a row another writer just updated.
        moved = await conn.execute(
            update(_TABLE)
            .where(_TABLE.c.name == job, _TABLE.c.started_ms <= now_ms - int(gap_s * 1000))
            .values(**values)
        )
        if moved.rowcount == 1:
            return True
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(_TABLE).values(name=job, **values))
    except IntegrityError:  # the row exists: a recent claim (or another replica's first one, just now)
        return False
    return True
