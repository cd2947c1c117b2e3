"""The served app (data plane + admin API) in-process, on a SQLite file of the test's own, upstream mocked."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.admin.server import create_server
from tiergate.gateway.components import Gateway
from tiergate.gateway.config.settings import Settings, parse_settings
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine

MASTER = "sk-admin-master"
ADMIN = {"authorization": f"Bearer {MASTER}"}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's write-ahead and spill files (`accounting.spill_dir`, ".") land in the test's own directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Both databases, migrated (a module may define its own)."""
    url: str = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    asyncio.run(migrate.upgrade(url))
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(database_url)
    yield engine
    await engine.dispose()


def config(database_url: str, **overrides: Any) -> Settings:
    def dep(model: str, price_in: float, price_out: float, **extra: Any) -> dict[str, Any]:
        return {"model": model, "api_base": "http://up/v1", "input_cost_per_mtok": price_in,
                "output_cost_per_mtok": price_out, "max_output_tokens": 1000, **extra}  # fmt: skip

    doc: dict[str, Any] = {
        "master_key": MASTER,
        "database_url": database_url,
        "tiers": {"student": [dep("small", 1, 2)], "teacher": [dep("big", 10, 40)]},
        "models": [dep("embedder", 0.5, 0)],
        "upstream": {"max_retries": 0, "backoff_base_s": 0.001, "backoff_max_s": 0.002},
        "accounting": {"ledger_flush_s": 0.01, "key_refresh_s": 0.05},
    }
    doc.update(overrides)
    return parse_settings(doc, env={})


def answer(request: httpx.Request) -> httpx.Response:
    """A chat answer whose usage is 10 prompt + 5 completion tokens; embeddings bill 4 tokens."""
    if request.url.path.endswith("/embeddings"):
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": [{"index": 0, "embedding": [0.1]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            },
        )
    body = httpx.Response(200, content=request.content).json()
    return httpx.Response(200, json={
        "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })  # fmt: skip


@dataclass
class Served:
    client: httpx.AsyncClient
    gateway: Gateway
    router: respx.Router

    async def new_tenant(self, **fields: Any) -> dict[str, Any]:
        r = await self.client.post("/admin/tenants", json={"name": "acme", **fields}, headers=ADMIN)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def new_key(self, tenant_id: str, **fields: Any) -> dict[str, Any]:
        r = await self.client.post("/admin/keys", json={"tenant_id": tenant_id, **fields}, headers=ADMIN)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def chat(self, key: str, model: str = "student", **fields: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **fields}
        return await self.client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )

    async def flushed(self) -> None:
        await self.gateway.accounting.ledger.flush()


Factory = Callable[..., Any]


@asynccontextmanager
async def serve(
    settings: Settings, handler: Callable[[httpx.Request], httpx.Response] = answer
) -> AsyncIterator[Served]:
    router = respx.Router(assert_all_called=False)
    router.route().mock(side_effect=handler)
    app = create_server(
        settings, upstream_transport=httpx.MockTransport(router.handler), rng=random.Random(0)
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw") as client,
    ):
        yield Served(client, app.state.gateway, router)
