"""Helpers shared by tests: free ports, real processes, polling with a deadline, the machine's services."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tiergate.gateway.accounting.auth import Authenticator
from tiergate.gateway.components import Gateway

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# CI sets this so that a missing PostgreSQL or Redis fails the run instead of skipping tests.
REQUIRE_SERVICES = os.environ.get("TIERGATE_REQUIRE_SERVICES") == "1"


def gateway_of(app_or_client: Any) -> Gateway:
    """The running gateway's parts, from its app or from an `httpx.AsyncClient` over `ASGITransport`."""
    app = app_or_client._transport.app if isinstance(app_or_client, httpx.AsyncClient) else app_or_client
    return app.state.gateway  # type: ignore[no-any-return]


def authenticate_with(gateway: Gateway, stand_in: Authenticator) -> None:
    """Every part of the gateway shares its one authenticator: from now on it answers as `stand_in` does."""
    gateway.auth.authenticate = stand_in.authenticate  # type: ignore[method-assign]


def embed_with(gateway: Gateway, stand_in: Any) -> None:
    """The gateway's one local embedder (queries, shadow agreement, seeds) embeds as `stand_in` does."""
    assert gateway.embedder is not None
    for method in ("aencode", "aembed"):
        if hasattr(stand_in, method):
            setattr(gateway.embedder, method, getattr(stand_in, method))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll until `predicate` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def until(predicate: Callable[[], T | None], *, within: float = 10.0, what: str = "condition") -> T:
    """`wait_for` inside an event loop: poll without blocking the loop that must make it true."""
    import asyncio

    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(
    args: list[str],
    *,
    url: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 20.0,
    output: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is up once `url` answers 200; stopped (SIGTERM, then SIGKILL) afterwards.

    Its output goes to the file `output` when given (a test that reads the log, or a process that writes
    more than a pipe holds), else to a pipe read if it fails to start.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with ExitStack() as files:
        sink = files.enter_context(open(output, "wb")) if output is not None else subprocess.PIPE
        proc = subprocess.Popen(args, env=full_env, cwd=cwd or ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not _answers(url):
                if proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    out = output.read_text() if output is not None else out
                    raise AssertionError(f"{' '.join(args)} exited with {proc.returncode}:\n{out}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{' '.join(args)} did not answer {url} within {timeout}s")
                time.sleep(0.05)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()


@contextmanager
def fake_upstream() -> Iterator[str]:
    """The scriptable fake upstream in its own process; yields its base URL (ending in /v1)."""
    port = free_port()
    with running(
        [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port)],
        url=f"http://127.0.0.1:{port}/_requests",
    ):
        yield f"http://127.0.0.1:{port}/v1"


def run_tiergate(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m tiergate ARGV` of this checkout, run to completion in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "tiergate", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def check_builtin_schema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against one of the schemas it bundles (offline), e.g. `vendor.compose-spec`."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def service_unavailable(what: str, detail: str) -> None:
    """Skip (on a laptop without the service or tool) or fail (in CI, where it must be there)."""
    message = f"{what} is not available ({detail}); tests that need it are skipped"
    if REQUIRE_SERVICES:
        pytest.fail(message + " - but TIERGATE_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(message)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus exposition text as {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)
