"""The static upstream: nginx in a temporary prefix answering every chat completion with canned bytes.

`POST /v1/chat/completions` returns a JSON chat completion (with usage); `POST /sse/v1/chat/completions`
returns the same answer as a server-sent event stream (role chunk, content chunks, finish chunk, usage chunk,
`[DONE]`). nginx never reads the request, so its cost is the floor any gateway is measured against.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness.procs import Server, free_port, start

CHAT_PATH = "/v1/chat/completions"
SSE_PATH = "/sse/v1/chat/completions"
MODEL = "bench-model"
CONTENT_PIECES = [
    "Tiered",
    " routing",
    " sends",
    " each",
    " request",
    " to",
    " the",
    " cheapest",
    " model",
    " that",
    " is",
    " good",
    " enough",
    ",",
    " and",
    " escalates",
    " when",
    " it",
    " is",
    " not",
    ".",
]
USAGE = {
    "prompt_tokens": 21,
    "completion_tokens": len(CONTENT_PIECES),
    "total_tokens": 21 + len(CONTENT_PIECES),
}
_BASE = {"id": "chatcmpl-bench0001", "created": 1735689600, "model": MODEL, "system_fingerprint": "fp_bench"}


def chat_completion() -> bytes:
    doc = {
        **_BASE,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(CONTENT_PIECES), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sse_stream() -> bytes:
    def chunk(choices: list[object], **extra: object) -> bytes:
        doc = {**_BASE, "object": "chat.completion.chunk", "choices": choices, **extra}
        return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"

    def delta(d: dict[str, object], finish: str | None = None) -> list[object]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    events = [chunk(delta({"role": "assistant", "content": ""}))]
    events += [chunk(delta({"content": piece})) for piece in CONTENT_PIECES]
    events.append(chunk(delta({}, "stop")))
    events.append(chunk([], usage=USAGE))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def _nginx_string(text: str) -> str:
    """`text` as an nginx single-quoted string (nginx turns \\n back into a newline)."""
    if "$" in text:
        raise ValueError("nginx would expand '$' in a returned body")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _returning(name: str, body: bytes) -> str:
    """Directives that return `body`: nginx caps one config token at 4 KB, so long bodies are set in parts."""
    text = body.decode()
    parts = [text[i : i + 2000] for i in range(0, len(text), 2000)]
    sets = "".join(f"set ${name}{i} {_nginx_string(part)}; " for i, part in enumerate(parts))
    return sets + 'return 200 "' + "".join(f"${name}{i}" for i in range(len(parts))) + '";'


def nginx_conf(prefix: Path, port: int) -> str:
    return f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {CHAT_PATH} {{ default_type application/json; {_returning("chat", chat_completion())} }}
        location = {SSE_PATH} {{ default_type text/event-stream; {_returning("sse", sse_stream())} }}
        location = /healthz {{ default_type text/plain; return 200 "ok"; }}
        location / {{ return 404; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


@contextmanager
def static_upstream(workdir: Path, core: int | None) -> Iterator[tuple[str, Server]]:
    """nginx on a free port, its prefix, config, pid file and logs under `workdir`; yields its base URL."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx")
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port))
    base = f"http://127.0.0.1:{port}"
    server = start(
        "nginx",
        [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        health_url=base + "/healthz",
        log=prefix / "stdout.log",
        core=core,
        timeout=10,
    )
    try:
        yield base, server
    finally:
        server.stop()
