"""The claim that lets one replica per interval run the gateway's periodic promote job, on both databases."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.admin.jobs import lease, promote
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.learning import JobRun

T0 = 1_800_000_000_000


async def _rows(engine: AsyncEngine) -> list[tuple[str, str, int]]:
    table = JobRun.__table__  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return [
            tuple(r) for r in (await conn.execute(select(table.c.name, table.c.holder, table.c.started_ms)))
        ]


async def test_a_claim_holds_for_the_gap_whoever_asks(engine: AsyncEngine) -> None:
    assert await lease.claim(engine, "promote", "a", 10.0, now_ms=T0)
    assert not await lease.claim(engine, "promote", "b", 10.0, now_ms=T0 + 1_000)
    assert not await lease.claim(engine, "promote", "a", 10.0, now_ms=T0 + 9_999)  # its own claim too
    assert await lease.claim(engine, "other-job", "b", 10.0, now_ms=T0 + 1_000)  # jobs are separate
    assert await lease.claim(engine, "promote", "b", 10.0, now_ms=T0 + 10_000)
    assert sorted(await _rows(engine)) == [("other-job", "b", T0 + 1_000), ("promote", "b", T0 + 10_000)]


async def test_of_replicas_claiming_at_once_exactly_one_wins(database_url: str) -> None:
    # One engine per replica, as separate processes would have; the first claim (an insert) and a later one
    # (an update) both race.
    engines = [open_engine(database_url) for _ in range(6)]
    try:
        for now_ms in (T0, T0 + 60_000, T0 + 120_000):
            won = await asyncio.gather(
                *(
                    lease.claim(e, "promote", f"replica-{i}", 30.0, now_ms=now_ms)
                    for i, e in enumerate(engines)
                )
            )
            assert sum(won) == 1, won
            ((_, holder, started),) = await _rows(engines[0])
            assert holder == f"replica-{won.index(True)}" and started == now_ms
    finally:
        for e in engines:
            await e.dispose()


async def test_the_periodic_task_skips_an_interval_another_replica_claimed() -> None:
    claims = iter([True, False, False, True])
    runs: list[int] = []

    async def claim() -> bool:
        return next(claims)

    async def run_once() -> Any:
        runs.append(1)
        if len(runs) == 2:
            raise asyncio.CancelledError  # the gateway shutting down ends the task
        return SimpleNamespace(written=None, base_version=3)  # what the task reads of an Outcome

    async def sleep(_: float) -> None:
        return None

    with pytest.raises(asyncio.CancelledError):
        await promote.periodically(run_once, 30.0, claim=claim, sleep=sleep)
    assert runs == [1, 1]  # the first and fourth intervals; the two between were claimed elsewhere


def test_holder_names_differ_between_processes_on_one_host() -> None:
    assert lease.holder_name() != lease.holder_name()
