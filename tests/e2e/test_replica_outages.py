"""Redis or PostgreSQL away for a few seconds under two replicas: clear 503s where the gateway cannot enforce
or record what it must, the documented degraded modes elsewhere, and recovery without a restart.

The services are shared with other tests, so they are never stopped: the replicas reach them through a
`TcpProxy` that the test cuts (open connections reset, new ones refused) and restores.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.replicas import ADMIN, MASTER, Replicas, start_replicas
from tests.support import wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def _chat(url: str, key: str, rid: str, model: str = "student") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": rid}], "max_tokens": 10}
    headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def _error_code(r: httpx.Response) -> str | None:
    return r.json()["error"]["code"] if r.status_code >= 400 else None  # type: ignore[no-any-return]


def _ready(url: str) -> int:
    return httpx.get(url + "/readyz", timeout=10).status_code


def _host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host, int(port)


def _subscribers(replicas: Replicas) -> int:
    client = redis.Redis.from_url(replicas.redis_url)
    try:
        return int(
            dict(client.pubsub_numsub(f"{replicas.prefix}changes"))[f"{replicas.prefix}changes".encode()]
        )
    finally:
        client.close()


def test_redis_outage_refuses_limited_keys_with_503_and_recovers_without_a_restart(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    with TcpProxy(*_host_port(redis_server_url)) as proxy, start_replicas(
        tmp_path, postgres_url, redis_server_url, redis_prefix,
        serve_redis_url=f"redis://127.0.0.1:{proxy.port}/0",
    ) as replicas:  # fmt: skip
        a, b = replicas.urls
        limited = replicas.key(rpm=1000, budget_usd=1.0, budget_period="total")
        free = replicas.key()  # neither the key nor its tenant has a limit
        spare = replicas.key(rpm=1000)
        for name, url in (("a", a), ("b", b)):
            assert _chat(url, limited["key"], f"before-{name}").status_code == 200
            assert _chat(url, spare["key"], f"spare-{name}").status_code == 200
        wait_for(lambda: _subscribers(replicas) == 2, what="both replicas listening for key changes")
        # A request admitted before the outage and answered during it: its settlement waits for Redis.
        replicas.script("student-1", {"delay_s": 2.0})
        pool = ThreadPoolExecutor(1)
        in_flight = pool.submit(_chat, a, limited["key"], "in-flight")
        wait_for(lambda: any(r["body"]["messages"][0]["content"] == "in-flight" for r in replicas.received()))

        proxy.cut()
        for i, url in enumerate((a, b, a, b)):
            r = _chat(url, limited["key"], f"during-{i}")
            assert r.status_code == 503 and _error_code(r) == "limits_unavailable", r.text
            assert "rate-limit store is unreachable" in r.json()["error"]["message"]
        assert _ready(a) == 503 and _ready(b) == 503
        # Documented degraded mode: nothing to enforce for the master key and for unlimited keys.
        assert _chat(a, MASTER, "master-during").status_code == 200
        assert _chat(b, free["key"], "free-during").status_code == 200
        # Admin changes still land in the database; their announcement waits for the replicas' next poll.
        r = httpx.patch(f"{a}/admin/keys/{spare['id']}", json={"rpm": 2000}, headers=ADMIN, timeout=10)
        assert r.status_code == 200, r.text

        assert in_flight.result(timeout=30).status_code == 200
        pool.shutdown()
        proxy.restore()
        wait_for(lambda: _ready(a) == 200 and _ready(b) == 200, timeout=10, what="both replicas ready again")
        recovered = [_chat(url, limited["key"], f"after-{name}") for name, url in (("a", a), ("b", b))]
        assert [r.status_code for r in recovered] == [200, 200], [r.text for r in recovered]
        # The key-change listener is back: a revocation through one replica is refused by the other within a
        # second (the replicas' own poll runs every 30 s here, so only the listener can be that fast).
        wait_for(lambda: _subscribers(replicas) == 2, timeout=10, what="the listeners to resubscribe")
        httpx.delete(f"{a}/admin/keys/{limited['id']}", headers=ADMIN, timeout=10).raise_for_status()
        revoked_at = time.monotonic()
        wait_for(
            lambda: _chat(b, limited["key"], "revoked").status_code == 401,
            timeout=1.0,
            interval=0.02,
            what="replica b refusing the key revoked through replica a",
        )
        assert time.monotonic() - revoked_at < 1.0

        # Every admitted request has its ledger row, and Redis's counters hold every settlement - the one
        # that came during the outage too (retried in the background): nothing reserved is left held.
        expected = sorted(["before-a", "before-b", "in-flight", "after-a", "after-b"])

        def ledger() -> list[Any] | None:
            rows = replicas.sql("SELECT request_id, cost_nano FROM ledger WHERE key_id = $1", limited["id"])
            return rows if len(rows) >= len(expected) else None

        rows = wait_for(ledger, what="the limited key's ledger rows")
        # (calls polling for the revocation that were still answered have rows too)
        assert sorted(r["request_id"] for r in rows if r["request_id"] != "revoked") == expected
        scope = f"k:{limited['id']}"
        wait_for(lambda: replicas.held_reservations(scope) == 0, timeout=10, what="the late settlement")
        assert replicas.redis_spent(scope) == sum(r["cost_nano"] for r in rows)


def _spilled(replicas: Replicas) -> list[Path]:
    return [p for log in replicas.logs for p in log.parent.glob("tiergate-ledger-spill-*.jsonl")]


def _each_spilling(replicas: Replicas) -> bool:
    # Not a count of files: a replica's periodic replay renames its file while the database is still away,
    # and rows spilled after that start a second one.
    return all(any(log.parent.glob("tiergate-ledger-spill-*.jsonl")) for log in replicas.logs)


def test_postgres_outage_serves_cached_keys_spills_the_ledger_and_replays_it_without_a_restart(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    host, port = _host_port(postgres_url)
    with TcpProxy(host, port) as proxy, start_replicas(
        tmp_path, postgres_url, redis_server_url, redis_prefix,
        serve_database_url=postgres_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}"),
    ) as replicas:  # fmt: skip
        a, b = replicas.urls
        known = replicas.key(rpm=1000, budget_usd=1.0, budget_period="total")
        unseen = replicas.key(budget_usd=1.0, budget_period="total")  # never presented: in no key cache
        for name, url in (("a", a), ("b", b)):
            assert _chat(url, known["key"], f"before-{name}").status_code == 200

        proxy.cut()
        during = [f"during-{i}" for i in range(6)]
        for i, rid in enumerate(during):
            r = _chat((a, b)[i % 2], known["key"], rid)
            assert r.status_code == 200, r.text  # a cached key keeps working; its limits live in Redis
        assert _chat(b, MASTER, "master-during").status_code == 200
        usage = httpx.get(f"{a}/v1/usage", headers={"authorization": f"Bearer {known['key']}"}, timeout=10)
        assert usage.status_code == 503 and _error_code(usage) == "database_unavailable", usage.text
        r = _chat(a, unseen["key"], "unseen")
        assert r.status_code == 503 and _error_code(r) == "database_unavailable", r.text
        r = httpx.post(f"{b}/admin/tenants", json={"name": "new"}, headers=ADMIN, timeout=10)
        assert r.status_code == 503 and _error_code(r) == "database_unavailable", r.text
        assert _ready(a) == 503 and _ready(b) == 503
        # The ledger retries its batches, then keeps them in the spill file of each replica.
        wait_for(lambda: _each_spilling(replicas), timeout=30, what="both replicas spilling")

        proxy.restore()
        wait_for(lambda: _ready(a) == 200 and _ready(b) == 200, timeout=10, what="both replicas ready again")

        def ledger() -> list[Any] | None:
            rows = replicas.sql("SELECT request_id FROM ledger WHERE key_id = $1", known["id"])
            return rows if len(rows) >= 2 + len(during) else None

        rows = wait_for(ledger, timeout=20, what="the spilled rows replayed")
        assert sorted(r["request_id"] for r in rows) == sorted(["before-a", "before-b", *during])  # once each
        wait_for(lambda: not _spilled(replicas), what="the spill files removed once replayed")
        assert _chat(b, unseen["key"], "unseen-after").status_code == 200
        fresh = replicas.key(1)
        assert _chat(a, fresh["key"], "fresh").status_code == 200
