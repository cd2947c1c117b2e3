"""Admission and settlement in-process (SQLite budget counters, in-memory windows) and the ledger's durability."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.admin.conftest import ADMIN, answer, config, serve
from tests.gateway.accounting.conftest import call_record
from tests.support import until
from tiergate.gateway.accounting import ledger
from tiergate.gateway.accounting.ledger import LedgerWriter
from tiergate.gateway.upstream.tokens import TokenCounter

pytestmark = pytest.mark.asyncio


def _counters(db: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT scope, spent_nano, reserved_nano FROM budget_counters ORDER BY scope"
        ).fetchall()


async def test_rpm_refuses_with_retry_after_and_the_openai_code(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], rpm=3)
        statuses = [(await s.chat(key["key"])).status_code for _ in range(3)]
        refused = await s.chat(key["key"])
        assert statuses == [200] * 3 and refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert len(s.router.calls) == 3  # the refused request never reached the upstream


async def test_tenant_rpm_is_shared_by_its_keys(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant(rpm=2)
        k1, k2 = await s.new_key(tenant["id"]), await s.new_key(tenant["id"])
        assert [(await s.chat(k["key"])).status_code for k in (k1, k2, k1)] == [200, 200, 429]
        assert "tenant" in (await s.chat(k2["key"])).json()["error"]["message"]


async def test_tpm_counts_the_estimate_then_the_real_usage(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], tpm=100)
        # max_tokens=200 cannot fit 100 TPM at all: refused without waiting for the window.
        too_big = await s.chat(key["key"], max_tokens=200)
        assert too_big.status_code == 429 and "more than" in too_big.json()["error"]["message"]
        # Each call is estimated at prompt (~9) + 60 and corrected to the 15 tokens the upstream reports:
        # uncorrected, the second call would not fit (2 x 69 > 100); corrected, three do (30 + 69 <= 100).
        statuses = [(await s.chat(key["key"], max_tokens=60)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


async def test_a_budget_refuses_before_the_upstream_and_settles_actual_cost(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        # Student: $1/$2 per Mtok. max_tokens=100 reserves ~prompt x 1 + 100 x 2 = ~218 nano-dollars... x 1000.
        key = await s.new_key(tenant["id"], budget_usd=0.0005, budget_period="daily")
        ok = [(await s.chat(key["key"], max_tokens=100)).status_code for _ in range(30)]
        assert 200 in ok and ok[-1] == 429
        refused = await s.chat(key["key"], max_tokens=100)
        assert (
            refused.json()["error"]["code"] == "insufficient_quota"
            and refused.json()["error"]["type"] == "insufficient_quota"
        )
        calls = len(s.router.calls)
        assert calls == ok.count(200)
        await s.flushed()
        spent = {scope: (spent, reserved) for scope, spent, reserved in _counters(tmp_path / "tiergate.db")}
        # Settled at the real usage (10 + 5 tokens = 20,000 nano each), nothing left reserved.
        assert spent[f"k:{key['id']}"] == (calls * 20_000, 0)
        with sqlite3.connect(tmp_path / "tiergate.db") as conn:
            ledger = conn.execute(
                "SELECT SUM(cost_nano), COUNT(*) FROM ledger WHERE key_id = ?", (key["id"],)
            ).fetchone()
        assert ledger == (calls * 20_000, calls)
        assert calls * 20_000 <= 500_000  # never over the budget: one process, reservations exact


async def test_a_daily_budget_refusal_says_when_it_renews_with_retry_after(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], budget_usd=0.0003, budget_period="daily")
        statuses = [(await s.chat(key["key"], max_tokens=100)).status_code for _ in range(20)]
        assert statuses[0] == 200 and statuses[-1] == 429
        before = time.time()
        refused = await s.chat(key["key"], max_tokens=100)
        midnight = (int(before) // 86_400 + 1) * 86_400
        assert refused.status_code == 429
        assert midnight - time.time() - 1 <= int(refused.headers["retry-after"]) <= midnight - before + 1
        assert "x-should-retry" not in refused.headers
        message = refused.json()["error"]["message"]
        assert "renews at" in message and "next budget period" not in message


async def test_a_total_budget_refusal_says_it_never_renews_and_not_to_retry(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], budget_usd=0.0003, budget_period="total")
        statuses = [(await s.chat(key["key"], max_tokens=100)).status_code for _ in range(20)]
        assert statuses[0] == 200 and statuses[-1] == 429
        refused = await s.chat(key["key"], max_tokens=100)
        assert refused.headers["x-should-retry"] == "false" and "retry-after" not in refused.headers
        assert "never renews" in refused.json()["error"]["message"]


async def test_a_request_dearer_than_the_whole_budget_is_told_not_to_retry(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        # max_tokens=1000 at $2/Mtok reserves $0.002, more than the $0.001 the key may ever spend a day.
        key = await s.new_key(tenant["id"], budget_usd=0.001, budget_period="daily")
        refused = await s.chat(key["key"], max_tokens=1000)
        assert refused.status_code == 429 and refused.headers["x-should-retry"] == "false"
        assert "whole budget" in refused.json()["error"]["message"]
        assert (await s.chat(key["key"], max_tokens=10)).status_code == 200
        assert len(s.router.calls) == 1


async def test_escalation_tops_up_the_reservation_or_does_not_escalate(sqlite_url: str) -> None:
    def failing_student(request: httpx.Request) -> httpx.Response:
        if b'"small"' in request.content:
            return httpx.Response(500, json={"error": {"message": "down"}})
        return answer(request)

    async with serve(config(sqlite_url), failing_student) as s:
        tenant = await s.new_tenant()
        # Enough for a student reservation (~2 mUSD at 1000 output tokens) but not a teacher one (~40 mUSD).
        poor = await s.new_key(tenant["id"], budget_usd=0.01)
        rich = await s.new_key(tenant["id"], budget_usd=1.0)
        refused = await s.chat(poor["key"])
        assert refused.status_code == 502 and "budget" in refused.json()["error"]["message"]
        escalated = await s.chat(rich["key"])
        assert escalated.status_code == 200 and escalated.headers["x-tiergate-tier"] == "teacher"
        await s.flushed()
        report = (await s.client.get("/admin/reports/cost?group_by=key", headers=ADMIN)).json()
        by_key = {r["key"]: r for r in report["rows"]}
        assert by_key[poor["id"]]["cost_usd"] == 0 and by_key[poor["id"]]["requests"] == 1
        assert by_key[rich["id"]]["cost_usd"] == pytest.approx((10 * 10 + 5 * 40) * 1000 / 1e9)


async def test_revoked_and_expired_keys_are_401(sqlite_url: str, tmp_path: Path) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"])
        # The API refuses an expiry in the past: the key is made to outlive its expiry in the database.
        expired = await s.new_key(tenant["id"], expires_at="2100-01-01T00:00:00Z")
        with sqlite3.connect(tmp_path / "tiergate.db") as conn:
            conn.execute("UPDATE api_keys SET expires_ms = 978307200000 WHERE id = ?", (expired["id"],))
        assert (await s.chat(key["key"])).status_code == 200
        await s.client.delete(f"/admin/keys/{key['id']}", headers=ADMIN)
        assert (await s.chat(key["key"])).json()["error"]["code"] == "api_key_revoked"
        assert (await s.chat(expired["key"])).json()["error"]["code"] == "api_key_expired"
        assert (await s.chat("sk-tg-unknown")).status_code == 401


async def test_ledger_spills_when_the_database_is_away_and_replays_at_start(
    sqlite_url: str, tmp_path: Path
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from tiergate.gateway.db.migrate import upgrade

    await upgrade(sqlite_url)
    broken = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing-dir/x.db")
    writer = LedgerWriter(
        broken, batch_size=10, flush_s=0.01, retries=2, queue_size=100, spill_dir=str(tmp_path / "spill")
    )
    task = asyncio.ensure_future(writer.run())
    for i in range(15):
        writer.sink(call_record(i))
    writer.stop()
    await task
    assert writer.stats.spilled == 15 and writer.stats.written == 0
    await broken.dispose()

    from tiergate.gateway.db.engine import open_engine

    engine = open_engine(sqlite_url)
    again = LedgerWriter(
        engine, batch_size=10, flush_s=0.01, retries=2, queue_size=100, spill_dir=str(tmp_path / "spill")
    )
    assert await again.replay() == 15
    assert await again.replay() == 0  # the file is gone once written
    await engine.dispose()
    with sqlite3.connect(tmp_path / "tiergate.db") as conn:
        assert conn.execute("SELECT COUNT(*), SUM(cost_nano) FROM ledger").fetchone() == (
            15,
            sum(1000 + i for i in range(15)),
        )


async def test_a_full_queue_drops_nothing(sqlite_url: str, tmp_path: Path) -> None:
    from tiergate.gateway.db.engine import open_engine
    from tiergate.gateway.db.migrate import upgrade

    await upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    writer = LedgerWriter(
        engine, batch_size=10, flush_s=0.01, retries=1, queue_size=3, spill_dir=str(tmp_path)
    )
    for i in range(5):
        writer.sink(call_record(i))
    assert writer.stats.overflowed == 2
    task = asyncio.ensure_future(writer.run())
    writer.stop()
    await task  # the overflow is written at shutdown
    assert await writer.replay() == 0
    await engine.dispose()
    with sqlite3.connect(tmp_path / "tiergate.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone() == (5,)


async def test_spilled_rows_are_replayed_while_running_once_the_database_is_back(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiergate.gateway.accounting import ledger
    from tiergate.gateway.db.engine import open_engine
    from tiergate.gateway.db.migrate import upgrade

    monkeypatch.setattr(ledger, "REPLAY_EVERY_S", 0.01)
    db = tmp_path / "tiergate.db"
    engine = open_engine(sqlite_url)
    writer = LedgerWriter(
        engine, batch_size=10, flush_s=0.01, retries=1, queue_size=100, spill_dir=str(tmp_path / "spill")
    )
    tasks = [asyncio.ensure_future(writer.run()), asyncio.ensure_future(writer.replay_periodically())]
    for i in range(3):  # no schema yet: every insert fails, the rows are spilled
        writer.sink(call_record(i))
    await writer.flush()
    assert writer.stats.spilled == 3 and writer.spilled_files() == 1
    await upgrade(sqlite_url)  # the database is back
    writer.sink(call_record(3))
    await until(lambda: writer.stats.replayed == 3 and writer.spilled_files() == 0, what="the replay")
    await writer.flush()
    writer.stop()
    await tasks[0]
    tasks[1].cancel()
    await asyncio.gather(tasks[1], return_exceptions=True)
    await engine.dispose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT entry_id) FROM ledger").fetchone() == (4, 4)


async def test_a_spill_file_claimed_for_replay_gets_no_more_rows(sqlite_url: str, tmp_path: Path) -> None:
    """Two processes sharing the spill directory: one replays while the other keeps spilling."""
    from tiergate.gateway.db.engine import open_engine
    from tiergate.gateway.db.migrate import upgrade

    await upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    away = open_engine("postgresql://tiergate@127.0.0.1:1/nowhere")  # the spilling process's database is away
    spilling, replaying = (
        LedgerWriter(e, batch_size=10, flush_s=0.01, retries=1, queue_size=10, spill_dir=str(tmp_path))
        for e in (away, engine)
    )
    task = asyncio.ensure_future(spilling.run())
    spilling.sink(call_record(0))
    await spilling.flush()
    assert spilling.stats.spilled == 1
    assert await replaying.replay() == 1  # claims the other's file, writes it, removes it
    spilling.sink(call_record(1))
    await spilling.flush()  # a new file, not the claimed one
    assert await replaying.replay() == 1
    assert spilling.spilled_files() == 0
    spilling.stop()
    await task
    await away.dispose()
    await engine.dispose()
    with sqlite3.connect(tmp_path / "tiergate.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone() == (2,)


async def test_a_budget_store_that_fails_counts_nothing_against_the_rate_limits() -> None:
    from tiergate.gateway.accounting.keys import Limits
    from tiergate.gateway.accounting.limits import BudgetCheck, LocalLimiter
    from tiergate.policies.budget import Budget

    class Unreachable:
        async def reserve(
            self, reservation_id: str, budgets: tuple[BudgetCheck, ...], amount: int, now: float
        ) -> int | None:
            raise ConnectionRefusedError("the database is away")

        async def settle(
            self, reservation_id: str, budgets: tuple[BudgetCheck, ...], reserved: int, cost: int
        ) -> None:
            return None

        async def aclose(self) -> None:
            return None

    limiter = LocalLimiter(Unreachable())
    budgeted = Limits("k:a", "t:a", key_rpm=1, key_budget=Budget(1000, "daily"))
    with pytest.raises(ConnectionRefusedError):
        await limiter.admit(budgeted, now_s=1000.0, tokens=0, reserve_nano=10)
    # The failed call was not admitted: the key's one request per minute is still there.
    ticket = await limiter.admit(Limits("k:a", "t:a", key_rpm=1), now_s=1000.5, tokens=0, reserve_nano=0)
    assert ticket.budgets == ()


async def test_an_upstream_whose_tokenizer_counts_more_cannot_overspend_the_budget(
    sqlite_url: str, tmp_path: Path
) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    counted = TokenCounter().messages(messages, "small")
    billed = math.ceil(counted * 1.3)  # another tokenizer: 30% more tokens for the same prompt

    def dearer(request: httpx.Request) -> httpx.Response:
        body = httpx.Response(200, content=request.content).json()
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": billed, "completion_tokens": 5, "total_tokens": billed + 5},
        })  # fmt: skip

    # Student "small": $1/$2 per Mtok. Each call costs `cost`; reserved at the counted prompt alone, an 11th
    # call would just fit after ten and end over the budget. The margin's reservation does not fit.
    cost = billed * 1000 + 5 * 2000
    budget_nano = 10 * cost + counted * 1000 + 5 * 2000
    async with serve(config(sqlite_url), dearer) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], budget_usd=budget_nano / 1e9, budget_period="total")
        statuses = [(await s.chat(key["key"], max_tokens=5)).status_code for _ in range(12)]
        await s.flushed()
    assert statuses == [200] * 10 + [429] * 2
    spent = {scope: spent for scope, spent, _ in _counters(tmp_path / "tiergate.db")}
    assert spent[f"k:{key['id']}"] == 10 * cost <= budget_nano  # settled at the upstream's count


async def test_a_row_the_database_refuses_costs_no_other_row(sqlite_url: str, tmp_path: Path) -> None:
    from tiergate.gateway.db.engine import open_engine
    from tiergate.gateway.db.migrate import upgrade

    await upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    writer = LedgerWriter(
        engine, batch_size=10, flush_s=0.01, retries=3, queue_size=100, spill_dir=str(tmp_path / "spill")
    )
    task = asyncio.ensure_future(writer.run())
    bad = call_record(2)
    bad.cost_nano = 2**70  # more than SQLite's 64-bit INTEGER holds: refused, and not because it is away
    for record in (call_record(0), call_record(1), bad, call_record(3)):
        writer.sink(record)
    writer.stop()
    await task
    await engine.dispose()
    assert (writer.stats.written, writer.stats.rejected, writer.stats.spilled) == (3, 1, 0)
    with sqlite3.connect(tmp_path / "tiergate.db") as conn:
        assert sorted(r for (r,) in conn.execute("SELECT request_id FROM ledger")) == ["r0", "r1", "r3"]
    (rejected,) = (tmp_path / "spill").glob("tiergate-ledger-rejected-*.jsonl")
    assert [orjson.loads(line)["request_id"] for line in rejected.read_bytes().splitlines()] == ["r2"]
    assert not list((tmp_path / "spill").glob(ledger.SPILL_GLOB))  # never replayed: it would fail again
