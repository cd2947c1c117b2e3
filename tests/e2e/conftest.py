"""A real `tiergate serve` process in front of the scriptable fake upstream process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support import fake_upstream, free_port, running

MASTER = "sk-e2e-master"


@dataclass
class Stack:
    url: str  # the gateway's base URL, ending in /v1
    upstream: str  # the fake upstream's base URL, ending in /v1

    def script(self, model: str, *steps: dict[str, Any]) -> None:
        httpx.post(
            self.upstream.removesuffix("/v1") + "/_script", json={"model": model, "steps": list(steps)}
        ).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        return httpx.get(self.upstream.removesuffix("/v1") + "/_requests").json()  # type: ignore[no-any-return]

    def events(self) -> list[dict[str, Any]]:
        return httpx.get(self.upstream.removesuffix("/v1") + "/_events").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.upstream.removesuffix("/v1") + "/_reset").raise_for_status()


def gateway_config(upstream: str) -> dict[str, Any]:
    def dep(model: str, **extra: Any) -> dict[str, Any]:
        return {
            "model": model,
            "api_base": upstream,
            "api_key": "sk-upstream",
            "input_cost_per_mtok": 1,
            "output_cost_per_mtok": 2,
            **extra,
        }

    return {
        "master_key": MASTER,
        "tiers": {
            "student": [dep("student-1"), dep("student-2")],
            "teacher": [dep("teacher-1")],
        },
        "models": [
            dep("embed-1"),
            # Anthropic's Messages API, translated by litellm; the fake upstream speaks it too.
            {"model": "claude-fake", "name": "claude", "provider": "anthropic", "api_base": upstream.removesuffix("/v1"),
             "api_key": "sk-ant-fake", "input_cost_per_mtok": 1, "output_cost_per_mtok": 5},
        ],
        # Cooldown is tested in-process; here it would make tests depend on the ones before them.
        "upstream": {"max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "load_balance": "ordered", "cooldown_failures": 1000},
    }  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("gateway")
    with fake_upstream() as upstream:
        config = workdir / "tiergate.yaml"
        config.write_text(yaml.safe_dump(gateway_config(upstream)))
        port = free_port()
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port)]
        with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=workdir):
            yield Stack(f"http://127.0.0.1:{port}/v1", upstream)


@pytest.fixture
def gw(stack: Stack) -> Stack:
    stack.reset()
    return stack


_OPEN_CLIENTS: list[openai.OpenAI] = []


def sdk_client(url: str, key: str = MASTER) -> openai.OpenAI:
    """An SDK client that is closed after the test, so no socket is left for the garbage collector to find
    (an unclosed socket's ResourceWarning, raised during a later test, fails that test)."""
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    _OPEN_CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()
