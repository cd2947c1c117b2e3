"""Several `tiergate serve` processes on the machine's PostgreSQL and Redis, in front of the fake upstream.

The processes may reach the services through other URLs than the test does (a `TcpProxy` that the test cuts
to simulate an outage), so the test always inspects the real services directly.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import ROOT, fake_upstream, free_port, running

MASTER = "sk-replica-master"
ADMIN = {"authorization": f"Bearer {MASTER}"}


def dep(model: str, upstream: str, price: float, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "api_base": upstream,
        "input_cost_per_mtok": price,
        "output_cost_per_mtok": price,
        "max_output_tokens": 50,
        **extra,
    }


def replica_config(
    upstream: str, database_url: str, redis_url: str, prefix: str, **overrides: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "master_key": MASTER,
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "tiers": {
            "student": [dep("student-1", upstream, 1.0)],
            "teacher": [dep("teacher-1", upstream, 10.0)],
        },
        "upstream": {"max_retries": 0},
        # Key changes reach the other replica only through Redis within the tests' deadlines: a poll this
        # slow cannot make a revocation test pass on its own.
        "accounting": {"ledger_flush_s": 0.02, "key_refresh_s": 30.0},
    }
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(name), dict):
            doc[name] = {**doc[name], **value}
        else:
            doc[name] = value
    return doc


@dataclass
class Replicas:
    urls: list[str]  # gateway base URLs (no /v1)
    procs: list[subprocess.Popen[bytes]]
    upstream: str  # the fake upstream's base URL, ending in /v1
    database_url: str  # the real database, for the test's own queries
    redis_url: str
    prefix: str
    logs: list[Path] = field(default_factory=list)

    def admin(self, method: str, path: str, i: int = 0, **kwargs: Any) -> Any:
        r = httpx.request(method, self.urls[i] + "/admin" + path, headers=ADMIN, timeout=10, **kwargs)
        assert r.status_code < 300, r.text
        return r.json()

    def key(self, i: int = 0, **limits: Any) -> dict[str, Any]:
        tenant = self.admin("POST", "/tenants", i, json={"name": "acme"})
        return self.admin("POST", "/keys", i, json={"tenant_id": tenant["id"], **limits})  # type: ignore[no-any-return]

    def script(self, model: str, *steps: dict[str, Any]) -> None:
        httpx.post(
            self.upstream.removesuffix("/v1") + "/_script", json={"model": model, "steps": list(steps)}
        ).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        return httpx.get(self.upstream.removesuffix("/v1") + "/_requests").json()  # type: ignore[no-any-return]

    def sql(self, query: str, *args: Any) -> list[Any]:
        import asyncpg

        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.database_url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def held_reservations(self, scope: str) -> int:
        """Reservations of a budget scope ("k:<id>" or "t:<id>") still held in Redis, in every period."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            held = 0
            for name in client.scan_iter(f"{self.prefix}ba:{scope}:*"):
                held += int(client.hlen(name))
            for name in client.scan_iter(f"{self.prefix}b:{scope}:*"):
                held += abs(int(client.hget(name, "reserved") or 0))
            return held
        finally:
            client.close()

    def redis_spent(self, scope: str) -> int:
        """What Redis counts as spent by a budget scope, over every period."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            names = client.scan_iter(f"{self.prefix}b:{scope}:*")
            return sum(int(client.hget(n, "spent") or 0) for n in names)
        finally:
            client.close()

    def output(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")


def upgrade(config: Path, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "tiergate", "db", "upgrade", "--config", str(config)],
        cwd=cwd,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@contextmanager
def start_replicas(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    prefix: str,
    *,
    n: int = 2,
    serve_database_url: str | None = None,
    serve_redis_url: str | None = None,
    models: tuple[str, ...] = (),
    **overrides: Any,
) -> Iterator[Replicas]:
    """`n` gateway processes (each in its own directory, with its own spill files and log) sharing the
    database and Redis; `serve_*_url` are what the processes connect to, when not the real services.
    `models` are more deployments (no tier, called by name) priced like the student."""
    with fake_upstream() as upstream, ExitStack() as stack:
        config = tmp_path / "tiergate.yaml"
        doc = replica_config(
            upstream, serve_database_url or database_url, serve_redis_url or redis_url, prefix, **overrides
        )
        doc["models"] = [dep(m, upstream, 1.0) for m in models]
        config.write_text(yaml.safe_dump(doc))
        # Migrated through the real URLs, not through a proxy the test may cut.
        direct = tmp_path / "migrate.yaml"
        direct.write_text(yaml.safe_dump({**doc, "database_url": database_url, "redis_url": redis_url}))
        upgrade(direct, tmp_path)
        urls, procs, logs = [], [], []
        for i in range(n):
            port = free_port()
            workdir = tmp_path / f"replica{i}"
            workdir.mkdir()
            args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port)]
            logs.append(workdir / "output.log")
            url = f"http://127.0.0.1:{port}"
            procs.append(
                stack.enter_context(running(args, url=url + "/readyz", cwd=workdir, output=logs[-1]))
            )
            urls.append(url)
        try:
            yield Replicas(urls, procs, upstream, database_url, redis_url, prefix, logs)
        finally:
            stack.close()  # the processes first: then nothing writes under the prefix any more
            _forget(redis_url, prefix)


def _forget(redis_url: str, prefix: str) -> None:
    """Delete the keys the test's replicas made (the server is shared; the prefix is the test's own)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        names = list(client.scan_iter(f"{prefix}*"))
        if names:
            client.delete(*names)
    finally:
        client.close()
