"""Two `tiergate serve` processes sharing PostgreSQL and Redis: budgets, rate limits, keys and the ledger.

The overspend bound under test: a request is admitted only while the budget holds its largest possible cost
(reserved atomically in one Lua script), and its actual cost never exceeds that reservation when the upstream
honours max_tokens. So settled spend never exceeds the budget; the general bound is the sum over requests
admitted before the budget ran out of (actual - reserved), which is zero here.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.e2e.conftest import sdk_client
from tests.e2e.replicas import Replicas, replica_config, start_replicas
from tests.support import ROOT, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services]


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[Replicas]:
    with start_replicas(tmp_path, postgres_url, redis_server_url, redis_prefix) as started:
        yield started


def test_serve_refuses_a_postgresql_schema_that_is_behind(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        yaml.safe_dump(replica_config("http://127.0.0.1:9/v1", postgres_url, redis_server_url, redis_prefix))
    )
    refused = subprocess.run(
        [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert refused.returncode != 0 and "tiergate db upgrade" in refused.stdout + refused.stderr


async def _fire(
    replicas: Replicas, keys: list[str], n: int, **fields: Any
) -> list[tuple[str, int, dict[str, Any]]]:
    """n concurrent chat requests, alternating between the replicas (and the keys); (request id, status, body)."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:

        async def one(i: int) -> tuple[str, int, dict[str, Any]]:
            rid = f"burst-{i}"
            body = {"model": "student", "messages": [{"role": "user", "content": "hello"}], **fields}
            r = await client.post(
                f"{replicas.urls[i % 2]}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {keys[i // 2 % len(keys)]}", "x-request-id": rid},
            )
            return rid, r.status_code, r.json()

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_budget_holds_across_two_replicas_and_every_admitted_request_has_one_ledger_row(
    replicas: Replicas,
) -> None:
    # The fake upstream answers "echo: hello" = 11 prompt + 2 completion tokens = 13,000 nano-USD at $1/Mtok;
    # each request reserves (counted prompt + max_tokens 10) x $1/Mtok. A budget of 20 actual requests:
    budget_nano = 20 * 13_000
    key = replicas.key(budget_usd=budget_nano / 1e9, budget_period="total")
    results = asyncio.run(_fire(replicas, [key["key"]], 200, max_tokens=10))
    admitted = [rid for rid, status, _ in results if status == 200]
    refused = [body for _, status, body in results if status != 200]
    assert all(body["error"]["code"] == "insufficient_quota" for body in refused), {
        b["error"]["message"] for b in refused
    }
    assert 10 <= len(admitted) <= 20, len(admitted)

    def rows() -> list[Any] | None:
        found = replicas.sql("SELECT request_id, cost_nano, status FROM ledger WHERE key_id = $1", key["id"])
        return found if len(found) >= len(admitted) else None

    ledger = wait_for(rows, timeout=10, what="ledger rows of every admitted request")
    assert sorted(r["request_id"] for r in ledger) == sorted(admitted)  # exactly one row each, no others
    spent = sum(r["cost_nano"] for r in ledger)
    assert spent == 13_000 * len(admitted) <= budget_nano
    usage = httpx.get(
        replicas.urls[1] + "/v1/usage", headers={"authorization": f"Bearer {key['key']}"}
    ).json()
    assert usage["total"]["requests"] == len(admitted)


@pytest.mark.parametrize("scope", ["key", "tenant"])
def test_rpm_holds_across_two_replicas_within_5_percent(replicas: Replicas, scope: str) -> None:
    if scope == "key":
        keys = [replicas.key(rpm=100)["key"]]
    else:  # two keys of one tenant, each on both replicas: the tenant's limit counts them together
        tenant = replicas.admin("POST", "/tenants", json={"name": "shared", "rpm": 100})
        keys = [replicas.admin("POST", "/keys", json={"tenant_id": tenant["id"]})["key"] for _ in range(2)]
    results = asyncio.run(_fire(replicas, keys, 160))
    admitted = sum(1 for _, status, _ in results if status == 200)
    limited = [body for _, status, body in results if status == 429]
    assert 95 <= admitted <= 105, admitted
    assert (
        all(b["error"]["code"] == "rate_limit_exceeded" for b in limited) and len(limited) == 160 - admitted
    )


def test_keys_created_changed_and_revoked_on_one_replica_act_on_the_other_at_once(replicas: Replicas) -> None:
    """Through Redis's change channel: the replicas' own poll of the database runs every 30 s here."""
    key = replicas.key()
    client = [sdk_client(u + "/v1", key["key"]) for u in replicas.urls]
    ask: dict[str, Any] = {"model": "student", "messages": [{"role": "user", "content": "hi"}]}
    # Created through replica 0, used through replica 1 at once.
    assert client[1].chat.completions.create(**ask).choices[0].message.content == "echo: hi"
    assert client[1].chat.completions.create(**{**ask, "model": "teacher"}).choices[0].message.content

    def refused(model: str, error: type[openai.APIStatusError]) -> bool:
        try:
            client[1].chat.completions.create(**{**ask, "model": model})
        except error:
            return True
        return False

    replicas.admin("PATCH", f"/keys/{key['id']}", 0, json={"allowed_models": ["student"]})
    wait_for(lambda: refused("teacher", openai.PermissionDeniedError), timeout=1.0, interval=0.02,
             what="the other replica applying the key's new allowed_models")  # fmt: skip
    replicas.admin("DELETE", f"/keys/{key['id']}", 0)
    wait_for(lambda: refused("student", openai.AuthenticationError), timeout=1.0, interval=0.02,
             what="the other replica refusing the revoked key")  # fmt: skip


def test_the_sdk_sees_each_refusal_as_its_own_exception(replicas: Replicas) -> None:
    limited = replicas.key(rpm=1, allowed_models=["student"])
    broke = replicas.key(budget_usd=0.0)
    sdk = sdk_client(replicas.urls[0] + "/v1", limited["key"])
    ask: dict[str, Any] = {"model": "student", "messages": [{"role": "user", "content": "hi"}]}
    sdk.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as rate:
        sdk.chat.completions.create(**ask)
    assert rate.value.code == "rate_limit_exceeded" and rate.value.response.headers["retry-after"]
    with pytest.raises(openai.PermissionDeniedError):
        sdk.chat.completions.create(**{**ask, "model": "teacher"})
    with pytest.raises(openai.RateLimitError) as quota:
        sdk_client(replicas.urls[1] + "/v1", broke["key"]).chat.completions.create(**ask)
    assert quota.value.code == "insufficient_quota"
    with pytest.raises(openai.AuthenticationError):
        sdk_client(replicas.urls[1] + "/v1", "sk-tg-nobody").models.list()
