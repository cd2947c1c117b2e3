from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from bench.harness.upstream import (
    CHAT_PATH,
    SSE_PATH,
    USAGE,
    chat_completion,
    nginx_conf,
    sse_stream,
    static_upstream,
)
from tiergate.gateway.upstream.relay import SSEAccumulator


def test_the_canned_answer_is_a_chat_completion_with_usage() -> None:
    doc = json.loads(chat_completion())
    assert doc["object"] == "chat.completion" and doc["usage"] == USAGE
    assert doc["choices"][0]["message"]["content"]


def test_the_canned_stream_is_what_the_gateway_relays_with_usage_and_done() -> None:
    acc = SSEAccumulator(strip_usage_chunk=True)
    relayed = acc.feed(sse_stream()) + acc.flush()
    assert acc.done and acc.usage == USAGE
    assert (
        acc.assembled()["choices"][0]["message"]["content"]
        == json.loads(chat_completion())["choices"][0]["message"]["content"]
    )
    assert b'"usage"' not in relayed  # the client did not ask for the usage chunk


def test_long_bodies_are_split_below_nginx_token_limit(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path, 8080)
    assert "listen 127.0.0.1:8080" in conf and str(tmp_path / "nginx.pid") in conf
    assert all(len(token) < 4096 for token in conf.split("set ")[1:])


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install -y nginx)")
def test_nginx_serves_the_canned_bytes_and_is_stopped_afterwards(tmp_path: Path) -> None:
    with static_upstream(tmp_path, None) as (base, server):
        for path, expected in ((CHAT_PATH, chat_completion()), (SSE_PATH, sse_stream())):
            request = urllib.request.Request(base + path, data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.read() == expected
    assert server.proc.poll() is not None
