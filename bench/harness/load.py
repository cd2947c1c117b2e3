"""Load from wrk: one run at a given concurrency, parsed from the JSON line that lua/report.lua prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def chat_body(model: str, *, stream: bool) -> bytes:
    """The chat completion every standard workload sends (a short system prompt and question)."""
    doc: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Explain in one sentence what a tiered LLM gateway does."},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    }
    if stream:
        doc["stream"] = True
    return json.dumps(doc, separators=(",", ":")).encode()


def request_body(api: str, model: str, *, stream: bool, fields: Iterable[tuple[str, Any]] = ()) -> bytes:
    """The standard workload's request in the shape of `api`: the same system prompt, question and limits,
    with a workload's `fields` set on top."""
    chat = json.loads(chat_body(model, stream=stream))
    system, question = (m["content"] for m in chat["messages"])
    extra = dict(fields)
    if api == "chat":
        return (
            json.dumps({**chat, **extra}, separators=(",", ":")).encode()
            if extra
            else chat_body(model, stream=stream)
        )
    doc: dict[str, object]
    if api == "messages":
        doc = {"model": model, "system": system, "messages": [{"role": "user", "content": question}],
               "temperature": 0.2, "max_tokens": 64}  # fmt: skip
    elif api == "responses":
        doc = {"model": model, "instructions": system, "input": question, "temperature": 0.2,
               "max_output_tokens": 64}  # fmt: skip
    else:
        raise ValueError(f"unknown api {api!r}")
    if stream:
        doc["stream"] = True
    return json.dumps({**doc, **extra}, separators=(",", ":")).encode()


LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
MARKER = "BENCH_RESULT "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int  # socket errors, timeouts and responses with status >= 400
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def parse(stdout: str) -> WrkResult:
    """The result line of a wrk run; ValueError (with wrk's output) when there is none."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            doc = json.loads(line[len(MARKER) :])
            lat = doc["latency_us"]
            return WrkResult(
                requests=doc["requests"],
                duration_s=doc["duration_us"] / 1e6,
                errors=sum(doc["errors"].values()),
                p50_ms=lat["p50"] / 1000,
                p90_ms=lat["p90"] / 1000,
                p99_ms=lat["p99"] / 1000,
                max_ms=lat["max"] / 1000,
            )
    raise ValueError(f"wrk printed no result line:\n{stdout[-2000:]}")


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    *,
    script: str,
    connections: int,
    duration_s: float,
    env: Mapping[str, str],
    timeout_s: float = 10.0,
) -> WrkResult:
    """One wrk run with one thread (the load generator shares its core with the upstream)."""
    binary = wrk_binary()
    if binary is None:
        raise FileNotFoundError("wrk")
    args = [
        binary,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA_DIR / script),
        url,
    ]
    done = subprocess.run(
        args,
        env={**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **env},
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse(done.stdout)
