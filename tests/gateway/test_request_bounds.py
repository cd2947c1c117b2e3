"""`n`, `max_tokens` and embeddings `input` are bounded as OpenAI bounds them: a 400 naming the field, before any
counter or upstream sees the request, whoever the caller."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from httpx import Response

from tests.admin.conftest import config, serve
from tests.gateway.conftest import AUTH, chat, completion, gateway, settings


def _counters(db: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT scope, spent_nano, reserved_nano FROM budget_counters").fetchall()


def _refused(r: httpx.Response, param: str, *words: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert all(w in error["message"] for w in words), error["message"]


async def test_a_huge_n_with_a_budgeted_key_on_sqlite_is_a_400_not_a_500(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], budget_usd=1.0)
        # As a server answers: an exception escaping the app is a 500, not raised into the test.
        served = httpx.ASGITransport(app=s.client._transport.app, raise_app_exceptions=False)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=served, base_url="http://gw") as client:

            async def ask(**fields: Any) -> httpx.Response:
                body = chat("student", max_tokens=5, **fields)
                return await client.post(
                    "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key['key']}"}
                )

            # 10**15 choices x 5 tokens x $2/Mtok is 10**19 nano-USD: past SQLite's 64-bit INTEGER (was a 500).
            for n in (10**15, 10**12, 129):
                _refused(await ask(n=n), "n", "from 1 to 128", str(n))
            assert (await ask(n=128)).status_code == 200
        await s.flushed()
        assert len(s.router.calls) == 1  # only the bounded request reached the upstream
    (scope, spent, reserved), *others = _counters(tmp_path / "tiergate.db")
    assert (scope, reserved, others) == (f"k:{key['id']}", 0, [])
    assert spent == 10 * 1000 + 5 * 2000  # the one answered call; the refused ones changed nothing


async def test_max_tokens_beyond_every_reachable_deployment_is_refused_even_for_the_master_key() -> None:
    def tier(model: str, limit: int | None) -> list[dict[str, Any]]:
        extra = {} if limit is None else {"max_output_tokens": limit}
        return [{"model": model, "api_base": "http://up/v1", "input_cost_per_mtok": 1, **extra}]

    # A model the price map knows (gpt-4o-mini: 16,384 output tokens), one with a configured limit, and one
    # nobody knows (a generous fixed ceiling).
    config = settings(
        tiers={
            "student": tier("small", 1000),
            "ta": tier("gpt-4o-mini", None),
            "teacher": tier("house-model-x", None),
        }
    )
    router = respx.Router(assert_all_called=False)
    upstream = router.post("http://up/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small"))
    )
    async with gateway(router, config) as (client, records):

        async def ask(model: str, **fields: Any) -> httpx.Response:
            return await client.post("/v1/chat/completions", json=chat(model, **fields), headers=AUTH)

        # A deployment named directly reaches only itself; the tier aliases reach the tiers above as well.
        _refused(await ask("small", max_tokens=1001), "max_tokens", "from 1 to 1000", "'small'")
        _refused(await ask("gpt-4o-mini", max_completion_tokens=16385), "max_completion_tokens", "16384")
        _refused(await ask("house-model-x", max_tokens=10**12), "max_tokens", "from 1 to 1000000")
        _refused(await ask("auto", max_tokens=1_000_001), "max_tokens", "1000000")
        refused_calls = upstream.call_count
        assert (await ask("small", max_tokens=1000)).status_code == 200
        assert (await ask("gpt-4o-mini", max_completion_tokens=16384)).status_code == 200
        assert (await ask("student", max_tokens=5000)).status_code == 200  # the teacher can produce it
    assert refused_calls == 0 and upstream.call_count == 3
    assert [r.outcome for r in records] == ["ok"] * 3


@pytest.mark.parametrize("value", ["", [], [""], ["ok", 7], [[]], ["x"] * 2049])
async def test_a_bad_embeddings_input_is_a_400_naming_input_and_reaches_no_upstream(value: Any) -> None:
    router = respx.Router(assert_all_called=False)
    upstream = router.post("http://up-e/v1/embeddings").mock(return_value=Response(200, json={}))
    async with gateway(router) as (client, records):
        r = await client.post("/v1/embeddings", json={"model": "embedder", "input": value}, headers=AUTH)
    _refused(r, "input", "2048")
    assert upstream.call_count == 0 and records == []


async def test_a_token_array_counts_its_tokens_against_the_budget(sqlite_url: str) -> None:
    # $1000 per Mtok: $0.001 a token. A budget of $0.05 holds a reservation of 50 tokens (with the
    # allowance for tokenizer mismatch: counted x 1.35 + 16), not one of 100.
    pricey = {"model": "embedder", "api_base": "http://up/v1", "input_cost_per_mtok": 1000}
    async with serve(config(sqlite_url, models=[pricey])) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], budget_usd=0.05, budget_period="total")

        async def embed(value: Any) -> httpx.Response:
            body = {"model": "embedder", "input": value}
            return await s.client.post(
                "/v1/embeddings", json=body, headers={"authorization": f"Bearer {key['key']}"}
            )

        for hundred_tokens in (list(range(100)), [list(range(100))], ["a", list(range(100))]):
            refused = await embed(hundred_tokens)
            assert refused.status_code == 429, refused.text  # counted as no tokens once: admitted
            assert refused.json()["error"]["code"] == "insufficient_quota"
        assert (await embed([1, 2, 3])).status_code == 200
        assert len(s.router.calls) == 1
