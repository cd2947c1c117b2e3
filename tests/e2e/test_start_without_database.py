"""A replica started while PostgreSQL is away: it serves what needs no database, says it is not ready, and
becomes ready without a restart once PostgreSQL is back, its spilled ledger rows replayed.

PostgreSQL is shared with other tests, so it is never stopped: the replica reaches it through a `TcpProxy`
that is cut before the replica starts and restored later.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.replicas import ADMIN, MASTER, Replicas, replica_config, upgrade
from tests.support import fake_upstream, free_port, running, wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def _chat(url: str, key: str, rid: str) -> httpx.Response:
    body = {"model": "student", "messages": [{"role": "user", "content": rid}], "max_tokens": 10}
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}", "x-request-id": rid},
        timeout=30,
    )  # fmt: skip


def test_a_replica_starts_while_postgres_is_away_and_recovers_without_a_restart(
    tmp_path: Path, postgres_url: str, redis_prefix: str
) -> None:
    host_port = postgres_url.split("@", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    with TcpProxy(host, int(port or 5432)) as proxy, fake_upstream() as upstream:
        proxied = postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}")
        doc = replica_config(upstream, proxied, "", redis_prefix)
        del doc["redis_url"], doc["redis_prefix"]  # PostgreSQL alone holds keys, budgets and the ledger
        config = tmp_path / "tiergate.yaml"
        config.write_text(yaml.safe_dump(doc))
        direct = tmp_path / "migrate.yaml"
        direct.write_text(yaml.safe_dump({**doc, "database_url": postgres_url}))
        upgrade(direct, tmp_path)
        proxy.cut()
        gw = f"http://127.0.0.1:{free_port()}"
        args = [
            sys.executable,
            "-m",
            "tiergate",
            "serve",
            "--config",
            str(config),
            "--port",
            gw.rsplit(":", 1)[1],
        ]
        log = tmp_path / "output.log"
        with running(args, url=gw + "/healthz", cwd=tmp_path, output=log):
            ready = httpx.get(gw + "/readyz", timeout=10)
            assert ready.status_code == 503 and "database unreachable" in ready.json()["error"]["message"]
            # The master key needs no database: answered, its ledger row spilled to a local file.
            assert _chat(gw, MASTER, "while-away").status_code == 200
            stranger = _chat(gw, "sk-tg-" + "a" * 40, "unknown-key")
            assert stranger.status_code == 503 and stranger.json()["error"]["code"] == "database_unavailable"
            assert "unreachable at startup; starting without it" in log.read_text()

            proxy.restore()
            wait_for(lambda: httpx.get(gw + "/readyz", timeout=10).status_code == 200, timeout=30,
                     what="the replica ready once PostgreSQL is back")  # fmt: skip
            tenant = httpx.post(
                gw + "/admin/tenants", json={"name": "acme"}, headers=ADMIN, timeout=10
            ).json()
            key = httpx.post(gw + "/admin/keys", json={"tenant_id": tenant["id"]}, headers=ADMIN, timeout=10)
            assert _chat(gw, key.json()["key"], "after").status_code == 200
            check = Replicas([gw], [], upstream, postgres_url, "", redis_prefix)
            rows = wait_for(
                lambda: (found := check.sql("SELECT request_id FROM ledger ORDER BY request_id")) and len(found) == 2
                and found,
                what="both answered requests in the ledger",
            )  # fmt: skip
    assert [r["request_id"] for r in rows] == ["after", "while-away"]
