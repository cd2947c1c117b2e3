"""Traces in the control plane: the tenant's content policy and retention, `GET /admin/traces` behind the
master key with its filters and tenant walls, `tiergate traces export` (JSON lines, Parquet) and
`tiergate traces purge` as the Helm CronJob runs it - on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import select

from tests.admin.conftest import ADMIN, config, serve
from tests.admin.learning_rows import DAY_MS, evaluation, feedback, trace, write
from tiergate.admin import trace_search
from tiergate.admin.cli import main
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.learning import Evaluation, Feedback, Trace


async def test_a_tenant_states_its_content_policy_and_retention(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant(trace_content="full", trace_retention_days=7)
        assert (tenant["trace_content"], tenant["trace_retention_days"]) == ("full", 7)
        path = f"/admin/tenants/{tenant['id']}"
        changed = (await s.client.patch(path, json={"trace_content": None}, headers=ADMIN)).json()
        assert changed["trace_content"] is None and changed["trace_retention_days"] == 7
        for body, param in (
            ({"trace_content": "all"}, "trace_content"),
            ({"trace_retention_days": 0}, "trace_retention_days"),
        ):
            r = await s.client.patch(path, json=body, headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"]["param"] == param
        assert (await s.client.get(path, headers=ADMIN)).json()["trace_content"] is None


async def test_admin_traces_filters_and_keeps_tenants_apart(database_url: str) -> None:
    settings = config(database_url, learning={"traces": {"content": "redacted"}})
    async with serve(settings) as s:
        acme = await s.new_tenant(trace_content="full")
        globex = await s.new_tenant(name="globex", trace_content="none")
        acme_key, globex_key = await s.new_key(acme["id"]), await s.new_key(globex["id"])
        for key, model in ((acme_key, "student"), (acme_key, "teacher"), (globex_key, "student")):
            assert (await s.chat(key["key"], model)).status_code == 200
        await s.gateway.learning.traces.flush()

        async def listed(**params: Any) -> dict[str, Any]:
            r = await s.client.get("/admin/traces", params=params, headers=ADMIN)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        mine = await listed(tenant_id=acme["id"])
        assert [t["tier"] for t in mine["data"]] == ["teacher", "student"]  # newest first
        assert {t["tenant_id"] for t in mine["data"]} == {acme["id"]}
        assert mine["data"][0]["messages"] == [{"role": "user", "content": "hello there"}]
        assert mine["data"][0]["answer"] == {"role": "assistant", "content": "ok"} and not mine["has_more"]
        (theirs,) = (await listed(tenant_id=globex["id"]))["data"]
        assert theirs["content"] == "none" and theirs["messages"] is None and theirs["answer"] is None
        assert len((await listed())["data"]) == 3
        assert [t["tenant_id"] for t in (await listed(tier="student"))["data"]] == [globex["id"], acme["id"]]
        assert (await listed(tenant_id=acme["id"], tier="student"))["data"][0]["cost_usd"] > 0
        first = await listed(limit=1)
        assert len(first["data"]) == 1 and first["has_more"]
        assert (await listed(since="2999-01-01"))["data"] == []
        assert (await listed(domain="billing"))["data"] == []
        for params, param in (
            ({"since": "yesterday"}, "since"),
            ({"limit": 0}, "limit"),
            ({"tier": "intern"}, "tier"),
        ):
            r = await s.client.get("/admin/traces", params=params, headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"]["param"] == param
        tenant_key = {"authorization": f"Bearer {acme_key['key']}"}
        assert (await s.client.get("/admin/traces", headers=tenant_key)).status_code == 403


def _cli_config(tmp_path: Path, database_url: str, **learning: Any) -> str:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"master_key": "m", "database_url": database_url, "learning": learning}))
    return str(path)


def test_export_writes_one_tenants_traces_as_jsonl_and_parquet(database_url: str, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    vector = bytes(range(8)) * 192  # 384 float32s

    async def seed() -> None:
        engine = open_engine(database_url)
        rows = [
            trace("ten_a", now - i * 1000, domain="math", embedding=vector if i == 0 else None)
            for i in range(3)
        ]
        await write(engine, "traces", [*rows, trace("ten_b", now), trace("ten_a", now - 10 * DAY_MS)])
        await engine.dispose()

    asyncio.run(seed())
    cfg = _cli_config(tmp_path, database_url)
    since = time.strftime("%Y-%m-%d", time.gmtime(now / 1000 - 86_400))
    jsonl, parquet = tmp_path / "t.jsonl", tmp_path / "t.parquet"
    assert main(["traces", "export", "--format", "jsonl", "--tenant", "ten_a", "--since", since, "--out", str(jsonl), "--config", cfg]) == 0  # fmt: skip
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 3 and {t["tenant_id"] for t in lines} == {"ten_a"}
    assert [t["ts_ms"] for t in lines] == sorted(t["ts_ms"] for t in lines)  # oldest first
    assert lines[-1]["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert len(lines[-1]["embedding"]) == 384 and lines[0]["embedding"] is None
    assert main(["traces", "export", "--format", "parquet", "--tenant", "ten_a", "--out", str(parquet), "--config", cfg]) == 0  # fmt: skip
    table = pq.read_table(parquet)
    assert table.num_rows == 4 and set(table.column("tenant_id").to_pylist()) == {"ten_a"}
    assert json.loads(table.column("answer").to_pylist()[0]) == {"role": "assistant", "content": "4"}
    assert main(["traces", "export", "--format", "jsonl", "--since", "soon", "--out", str(jsonl), "--config", cfg]) == 2  # fmt: skip


async def test_purge_applies_each_tenants_retention_and_strips_old_evidence(database_url: str) -> None:
    now = int(time.time() * 1000)
    engine = open_engine(database_url)
    try:
        async with serve(config(database_url)) as s:
            short = await s.new_tenant(trace_retention_days=1)
            default = await s.new_tenant(name="default")
        old, older, recent = now - 2 * DAY_MS, now - 40 * DAY_MS, now - 1000
        rows = [trace(short["id"], old), trace(short["id"], recent), trace(default["id"], old),
                trace(default["id"], older), trace(None, older), trace("ten_gone", older)]  # fmt: skip
        await write(engine, "traces", rows)
        await write(
            engine, "evaluations", [evaluation(short["id"], "r1", old), evaluation(default["id"], "r2", old)]
        )
        await write(
            engine,
            "feedback",
            [feedback(short["id"], "r1", old, 1.0), feedback(default["id"], "r2", old, 0.0)],
        )
        dry = await trace_search.purge(engine, 30, now, dry_run=True)
        assert (dry.traces, dry.evaluations, dry.feedback) == (4, 1, 1)
        assert len(await _all(engine, Trace)) == 6  # a dry run changes nothing
        done = await trace_search.purge(engine, 30, now)
        assert done == dry
        kept = {(r.tenant_id, r.ts_ms) for r in await _all(engine, Trace)}
        assert kept == {(short["id"], recent), (default["id"], old)}
        by_tenant = {r.tenant_id: r for r in await _all(engine, Evaluation)}
        assert by_tenant[short["id"]].candidate_answer is None and by_tenant[short["id"]].rationale is None
        assert by_tenant[short["id"]].verdict == "worse"  # the evidence stays
        assert by_tenant[default["id"]].candidate_answer is not None
        assert {r.tenant_id: r.comment for r in await _all(engine, Feedback)} == {
            short["id"]: None,
            default["id"]: "a comment",
        }
        assert await trace_search.purge(engine, 30, now) == trace_search.Purged(0, 0, 0)
    finally:
        await engine.dispose()


async def _all(engine: Any, model: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(model.__table__))).all())


def test_the_purge_the_helm_cron_job_runs(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`tiergate traces purge` with no arguments, its config from $TIERGATE_CONFIG, as in the chart."""
    asyncio.run(migrate.upgrade(sqlite_url))

    async def seed() -> None:
        engine = open_engine(sqlite_url)
        await write(
            engine,
            "traces",
            [trace(None, int(time.time() * 1000) - 8 * DAY_MS), trace(None, int(time.time() * 1000))],
        )
        await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("TIERGATE_CONFIG", _cli_config(tmp_path, sqlite_url, traces={"retention_days": 7}))
    assert main(["traces", "purge", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dry_run": True, "default_retention_days": 7, "traces": 1, "evaluations": 0, "feedback": 0}  # fmt: skip
    assert main(["traces", "purge"]) == 0
    assert "deleted 1 trace(s) past retention (default 7 days)" in capsys.readouterr().out
    assert main(["traces", "purge", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["traces"] == 0
