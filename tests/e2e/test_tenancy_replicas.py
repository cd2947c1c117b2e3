"""Two `tiergate serve` processes sharing PostgreSQL and Redis: budgets, rate limits, keys and the ledger.

The overspend bound under test: a request is admitted only while the budget holds its largest possible cost
(reserved atomically in one Lua script), and its actual cost never exceeds that reservation when the upstream
honours max_tokens. So settled spend never exceeds the budget; the general bound is the sum over requests
admitted before the budget ran out of (actual - reserved), which is zero here.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support import ROOT, fake_upstream, free_port, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services]
MASTER = "sk-replica-master"
ADMIN = {"authorization": f"Bearer {MASTER}"}


@dataclass
class Replicas:
    urls: tuple[str, str]  # gateway base URLs (no /v1)
    database_url: str

    def admin(self, method: str, path: str, i: int = 0, **kwargs: Any) -> Any:
        r = httpx.request(method, self.urls[i] + "/admin" + path, headers=ADMIN, timeout=10, **kwargs)
        assert r.status_code < 300, r.text
        return r.json()

    def key(self, **limits: Any) -> dict[str, Any]:
        tenant = self.admin("POST", "/tenants", json={"name": "acme"})
        return self.admin("POST", "/keys", json={"tenant_id": tenant["id"], **limits})  # type: ignore[no-any-return]

    def ledger(self, query: str, *args: Any) -> list[Any]:
        import asyncpg

        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.database_url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())


def _config(upstream: str, database_url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    def dep(model: str, price: float) -> dict[str, Any]:
        return {
            "model": model,
            "api_base": upstream,
            "input_cost_per_mtok": price,
            "output_cost_per_mtok": price,
            "max_output_tokens": 50,
        }

    return {
        "master_key": MASTER,
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "tiers": {"student": [dep("student-1", 1.0)], "teacher": [dep("teacher-1", 10.0)]},
        "upstream": {"max_retries": 0},
        "accounting": {"ledger_flush_s": 0.02},
    }


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[Replicas]:
    with fake_upstream() as upstream:
        config = tmp_path / "tiergate.yaml"
        config.write_text(yaml.safe_dump(_config(upstream, postgres_url, redis_server_url, redis_prefix)))
        env = {"PYTHONPATH": str(ROOT)}
        refused = subprocess.run(
            [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(free_port())],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**__import__("os").environ, **env},
        )  # fmt: skip
        assert refused.returncode != 0 and "tiergate db upgrade" in refused.stdout + refused.stderr
        subprocess.run(
            [sys.executable, "-m", "tiergate", "db", "upgrade", "--config", str(config)],
            cwd=tmp_path,
            check=True,
            env={**__import__("os").environ, **env},
        )
        ports = free_port(), free_port()
        args = [
            [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(p)]
            for p in ports
        ]
        with (
            running(args[0], url=f"http://127.0.0.1:{ports[0]}/readyz", cwd=tmp_path),
            running(args[1], url=f"http://127.0.0.1:{ports[1]}/readyz", cwd=tmp_path),
        ):
            yield Replicas((f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"), postgres_url)


async def _fire(replicas: Replicas, key: str, n: int, **fields: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """n concurrent chat requests, alternating between the replicas; (request id, status, body)."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:

        async def one(i: int) -> tuple[str, int, dict[str, Any]]:
            rid = f"burst-{i}"
            body = {"model": "student", "messages": [{"role": "user", "content": "hello"}], **fields}
            r = await client.post(
                f"{replicas.urls[i % 2]}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}", "x-request-id": rid},
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
    results = asyncio.run(_fire(replicas, key["key"], 200, max_tokens=10))
    admitted = [rid for rid, status, _ in results if status == 200]
    refused = [body for _, status, body in results if status != 200]
    assert all(body["error"]["code"] == "insufficient_quota" for body in refused), {
        b["error"]["message"] for b in refused
    }
    assert 10 <= len(admitted) <= 20, len(admitted)

    def rows() -> list[Any] | None:
        found = replicas.ledger(
            "SELECT request_id, cost_nano, status FROM ledger WHERE key_id = $1", key["id"]
        )
        return found if len(found) >= len(admitted) else None

    ledger = wait_for(rows, timeout=10, what="ledger rows of every admitted request")
    assert sorted(r["request_id"] for r in ledger) == sorted(admitted)  # exactly one row each, no others
    spent = sum(r["cost_nano"] for r in ledger)
    assert spent == 13_000 * len(admitted) <= budget_nano
    usage = httpx.get(
        replicas.urls[1] + "/v1/usage", headers={"authorization": f"Bearer {key['key']}"}
    ).json()
    assert usage["total"]["requests"] == len(admitted)


def test_rpm_holds_across_two_replicas_within_5_percent(replicas: Replicas) -> None:
    key = replicas.key(rpm=100)
    results = asyncio.run(_fire(replicas, key["key"], 160))
    admitted = sum(1 for _, status, _ in results if status == 200)
    limited = [body for _, status, body in results if status == 429]
    assert 95 <= admitted <= 105, admitted
    assert (
        all(b["error"]["code"] == "rate_limit_exceeded" for b in limited) and len(limited) == 160 - admitted
    )


def test_keys_created_and_revoked_on_one_replica_act_on_the_other(replicas: Replicas) -> None:
    key = replicas.key()
    client = [openai.OpenAI(base_url=u + "/v1", api_key=key["key"], max_retries=0) for u in replicas.urls]
    ask = {"model": "student", "messages": [{"role": "user", "content": "hi"}]}
    assert client[1].chat.completions.create(**ask).choices[0].message.content == "echo: hi"  # type: ignore[call-overload]
    replicas.admin("DELETE", f"/keys/{key['id']}", 0)

    def refused() -> bool:
        try:
            client[1].chat.completions.create(**ask)  # type: ignore[call-overload]
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, timeout=1.0, interval=0.02, what="the other replica refusing the revoked key")


def test_the_sdk_sees_each_refusal_as_its_own_exception(replicas: Replicas) -> None:
    limited = replicas.key(rpm=1, allowed_models=["student"])
    broke = replicas.key(budget_usd=0.0)
    sdk = openai.OpenAI(base_url=replicas.urls[0] + "/v1", api_key=limited["key"], max_retries=0)
    ask: dict[str, Any] = {"model": "student", "messages": [{"role": "user", "content": "hi"}]}
    sdk.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as rate:
        sdk.chat.completions.create(**ask)
    assert rate.value.code == "rate_limit_exceeded" and rate.value.response.headers["retry-after"]
    with pytest.raises(openai.PermissionDeniedError):
        sdk.chat.completions.create(**{**ask, "model": "teacher"})
    with pytest.raises(openai.RateLimitError) as quota:
        openai.OpenAI(
            base_url=replicas.urls[1] + "/v1", api_key=broke["key"], max_retries=0
        ).chat.completions.create(**ask)
    assert quota.value.code == "insufficient_quota"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=replicas.urls[1] + "/v1", api_key="sk-tg-nobody", max_retries=0).models.list()
