"""A gateway killed with SIGKILL right after answering loses no ledger row: the rows still queued in memory are
in its write-ahead file, and the next process started on the same `accounting.spill_dir` writes them, once."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.replicas import ADMIN, Replicas, replica_config, upgrade
from tests.support import fake_upstream, free_port, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services]

N = 25


def _chat(url: str, key: str, rid: str, stream: bool) -> httpx.Response:
    body = {
        "model": "student",
        "messages": [{"role": "user", "content": rid}],
        "max_tokens": 10,
        "stream": stream,
    }
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}", "x-request-id": rid},
        timeout=30,
    )  # fmt: skip


def test_a_killed_gateway_loses_no_answered_request_from_the_ledger(
    tmp_path: Path, postgres_url: str, redis_prefix: str
) -> None:
    with fake_upstream() as upstream:
        # A minute's flush interval: whatever is answered sits in the writer's queue, not in the database.
        doc = replica_config(upstream, postgres_url, "", redis_prefix, accounting={"ledger_flush_s": 60.0})
        del doc["redis_url"], doc["redis_prefix"]
        config = tmp_path / "tiergate.yaml"
        config.write_text(yaml.safe_dump(doc))
        upgrade(config, tmp_path)
        workdir = tmp_path / "work"  # the working directory: `accounting.spill_dir` is "."
        workdir.mkdir()
        check = Replicas([], [], upstream, postgres_url, "", redis_prefix)

        def serve() -> tuple[str, list[str]]:
            port = free_port()
            args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port)]
            return f"http://127.0.0.1:{port}", args

        gw, args = serve()
        with running(args, url=gw + "/readyz", cwd=workdir, output=tmp_path / "first.log") as proc:
            tenant = httpx.post(
                gw + "/admin/tenants", json={"name": "acme"}, headers=ADMIN, timeout=10
            ).json()
            key = httpx.post(gw + "/admin/keys", json={"tenant_id": tenant["id"]}, headers=ADMIN, timeout=10)
            rids = [f"crash-{i:03d}" for i in range(N)]
            # Streamed and not: a stream's row is written ahead before its last bytes leave, as an answer's is.
            answered = [_chat(gw, key.json()["key"], rid, i % 2 == 1) for i, rid in enumerate(rids)]
            assert [r.status_code for r in answered] == [200] * N
            assert all(b"data: [DONE]" in r.content for r in answered[1::2])
            proc.kill()  # SIGKILL: no drain, no shutdown hook
            proc.wait()
        assert check.sql("SELECT request_id FROM ledger") == []  # they were all still queued
        assert list(workdir.glob("tiergate-ledger-wal-*.jsonl"))

        gw, args = serve()
        with running(args, url=gw + "/readyz", cwd=workdir, output=tmp_path / "second.log"):
            rows = wait_for(
                lambda: (found := check.sql("SELECT request_id, COUNT(*) AS n FROM ledger GROUP BY request_id"))
                and len(found) == N and found,
                what="the killed gateway's answered requests in the ledger",
            )  # fmt: skip
            assert {r["request_id"]: r["n"] for r in rows} == dict.fromkeys(rids, 1)
            assert "recovered 25 ledger rows" in (tmp_path / "second.log").read_text()
            # Only the running process's own segment is left.
            assert len(list(workdir.glob("tiergate-ledger-wal-*.jsonl"))) == 1
        assert list(workdir.glob("tiergate-ledger-wal-*")) == []  # its clean shutdown removed it
