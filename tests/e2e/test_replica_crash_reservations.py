"""A replica killed (SIGKILL) with a budget reservation open: the other replica refuses the budget only while
the dead one's lease runs, not for the reservation's whole TTL, and nothing stays reserved afterwards."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.replicas import ADMIN, Replicas, start_replicas
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def _chat(url: str, key: str, rid: str) -> httpx.Response:
    body = {"model": "student", "messages": [{"role": "user", "content": rid}], "max_tokens": 50}
    headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def _reserved_amounts(replicas: Replicas, scope: str) -> list[int]:
    client = redis.Redis.from_url(replicas.redis_url)
    try:
        return [
            int(v) for name in client.scan_iter(f"{replicas.prefix}ba:{scope}:*") for v in client.hvals(name)
        ]
    finally:
        client.close()


def test_a_killed_replicas_reservation_is_released_within_its_lease(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    with start_replicas(
        tmp_path, postgres_url, redis_server_url, redis_prefix, accounting={"reservation_lease_s": 2.0}
    ) as replicas:
        a, b = replicas.urls
        key = replicas.key(budget_usd=1.0, budget_period="total")
        scope = f"k:{key['id']}"
        replicas.script("student-1", {"delay_s": 60.0})  # answered long after replica a is gone
        pool = ThreadPoolExecutor(1)
        pool.submit(_chat, a, key["key"], "dies-with-a")
        held = wait_for(lambda: _reserved_amounts(replicas, scope) or None, what="a's reservation")
        # A budget with room for one such reservation but not two.
        budget_usd = held[0] * 1.5 / 1e9
        r = httpx.patch(f"{b}/admin/keys/{key['id']}", json={"budget_usd": budget_usd}, headers=ADMIN)
        assert r.status_code == 200, r.text

        replicas.procs[0].kill()
        replicas.procs[0].wait()
        killed_at = time.monotonic()
        refused = _chat(b, key["key"], "while-a-holds")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "insufficient_quota"
        # Without leases this stays refused for accounting.reservation_ttl_s (15 min).
        served = wait_for(
            lambda: r if (r := _chat(b, key["key"], "after-lease")).status_code == 200 else None,
            timeout=20,
            interval=0.25,
            what="replica b admitting once a's lease ran out",
        )
        assert served.json()["choices"]
        assert time.monotonic() - killed_at < 20
        wait_for(lambda: not _reserved_amounts(replicas, scope), what="no reservation left held")
        pool.shutdown(wait=False, cancel_futures=True)
