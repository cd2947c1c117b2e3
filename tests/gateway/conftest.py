"""In-process gateway fixtures: the app driven through httpx.ASGITransport, upstreams mocked with respx."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import respx
from starlette.applications import Starlette

from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.app import create_app
from tiergate.gateway.config.settings import Settings, parse_settings

MASTER = "sk-test-master"
AUTH = {"authorization": f"Bearer {MASTER}"}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded SQLite database (./tiergate.db) and ledger spill files land in the test's own directory."""
    monkeypatch.chdir(tmp_path)


def settings(**overrides: Any) -> Settings:
    doc: dict[str, Any] = {
        "master_key": MASTER,
        "tiers": {
            "student": [
                {
                    "model": "small-a",
                    "api_base": "http://up-a/v1",
                    "api_key": "key-a",
                    "input_cost_per_mtok": 1,
                    "output_cost_per_mtok": 2,
                },
                {
                    "model": "small-b",
                    "api_base": "http://up-b/v1",
                    "api_key": "key-b",
                    "input_cost_per_mtok": 1,
                    "output_cost_per_mtok": 2,
                },
            ],
            "teacher": [
                {
                    "model": "big",
                    "api_base": "http://up-t/v1",
                    "api_key": "key-t",
                    "input_cost_per_mtok": 10,
                    "output_cost_per_mtok": 20,
                }
            ],
        },
        "models": [{"model": "embedder", "api_base": "http://up-e/v1", "input_cost_per_mtok": 0.1}],
        "upstream": {
            "max_retries": 1,
            "backoff_base_s": 0.001,
            "backoff_max_s": 0.002,
            "cooldown_failures": 3,
            "cooldown_s": 60,
            "load_balance": "ordered",
        },
    }
    doc.update(overrides)
    return parse_settings(doc, env={})


def completion(model: str, content: str = "hello", usage: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }  # fmt: skip
    if usage:
        doc["usage"] = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    return doc


def sse(*docs: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(d) + b"\n\n" for d in docs) + b"data: [DONE]\n\n"


@asynccontextmanager
async def gateway(
    router: respx.Router, config: Settings | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, list[CallRecord]]]:
    """The app with its lifespan running; yields a client and the list of records its sinks received."""
    async with gateway_app(httpx.MockTransport(router.handler), config) as (_, client, records):
        yield client, records


@asynccontextmanager
async def gateway_app(
    transport: httpx.AsyncBaseTransport, config: Settings | None = None
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, list[CallRecord]]]:
    """`gateway` with any upstream transport, yielding the app too (its parts: `app.state.gateway`)."""
    app = create_app(config or settings(), upstream_transport=transport, rng=random.Random(0))
    records: list[CallRecord] = []
    async with app.router.lifespan_context(app):
        app.state.gateway.sinks.append(records.append)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield app, client, records


def chat(model: str = "auto", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


Handler = Callable[[httpx.Request], httpx.Response]
