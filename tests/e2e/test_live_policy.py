"""The learning loop's live path, end to end: a real `tiergate serve` (its own periodic promote job writing
route tables to its database, its shadow sampler following them) in front of the fake upstream.

- Whose cheaper tier is always wrong: over 2,000 requests, evaluation (shadow and judge calls, in the
  ledger as `kind = 'evaluation'`) costs no more than the default cap, 5% of the serving spend.
- Whose cheaper tier is as good: the promote job promotes the domain, and the gateway then serves it there.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import fake_upstream, free_port, running, wait_for
from tiergate.policies.exploration import EVALUATION_SHARE

pytestmark = pytest.mark.e2e

MASTER = "sk-e2e-live-policy"
ADMIN = {"authorization": f"Bearer {MASTER}"}
REQUESTS = 2000
CONCURRENCY = 16


@dataclass
class Live:
    url: str  # the gateway's base URL, ending in /v1
    upstream: str
    database: Path
    key: str
    tenant: str

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, args).fetchall()

    def spend(self, kind: str) -> int:
        sql = "SELECT COALESCE(SUM(cost_nano), 0) FROM ledger WHERE kind = ? AND tenant_id = ?"
        return int(self.rows(sql, kind, self.tenant)[0][0])

    def answer(self, model: str, **default: Any) -> None:
        """Every later request to the upstream `model` is answered as `default` says (tests/fake_upstream.py)."""
        url = self.upstream.removesuffix("/v1") + "/_script"
        httpx.post(url, json={"model": model, "default": default}).raise_for_status()

    def drive(self, first: int, count: int) -> list[str]:
        """`count` requests, `CONCURRENCY` at a time; returns the tier that served each."""

        async def run() -> list[str]:
            limit = asyncio.Semaphore(CONCURRENCY)
            headers = {"authorization": f"Bearer {self.key}"}
            async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30) as client:

                async def one(i: int) -> str:
                    text = f"what does invoice {i} charge for the card on file"
                    async with limit:
                        r = await client.post(
                            "/chat/completions",
                            json={"model": "auto", "messages": [{"role": "user", "content": text}]},
                        )
                    assert r.status_code == 200, r.text
                    return r.headers["x-tiergate-tier"]

                return list(await asyncio.gather(*(one(i) for i in range(first, first + count))))

        return asyncio.run(run())

    def settled(self) -> tuple[int, int]:
        """(evaluation, serving) spend once the shadow evaluations of the requests sent are all booked."""
        last: list[tuple[int, int, int]] = []

        def still() -> tuple[int, int] | None:
            now = (
                self.spend("evaluation"),
                self.spend("request"),
                len(self.rows("SELECT id FROM evaluations")),
            )
            done = last and last[-1] == now and self._queued() == 0
            last.append(now)
            return now[:2] if done else None

        return wait_for(still, timeout=60, interval=0.5, what="the evaluations to settle")

    def _queued(self) -> float:
        text = httpx.get(self.url.removesuffix("/v1") + "/metrics", headers=ADMIN).text
        lines = [line for line in text.splitlines() if line.startswith("tiergate_queue_depth{")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    def outcomes(self) -> dict[str, float]:
        text = httpx.get(self.url.removesuffix("/v1") + "/metrics", headers=ADMIN).text
        prefix = 'tiergate_shadow_evaluations_total{outcome="'
        found = [
            line.removeprefix(prefix).split('"} ') for line in text.splitlines() if line.startswith(prefix)
        ]
        return {outcome: float(value) for outcome, value in found}


def gateway_config(upstream: str) -> dict[str, Any]:
    def dep(model: str, price_in: float, price_out: float) -> dict[str, Any]:
        return {"model": model, "api_base": upstream, "api_key": "sk-up", "input_cost_per_mtok": price_in,
                "output_cost_per_mtok": price_out}  # fmt: skip

    return {
        "master_key": MASTER,
        "tiers": {
            "student": [dep("student-1", 1, 2)],
            "teacher": [dep("teacher-1", 10, 20)],
            "supervisor": [dep("judge-1", 30, 60)],  # the judge, dearer than the teacher
        },
        "models": [dep("embed-1", 0.01, 0)],
        "upstream": {"max_retries": 0},
        # The fake upstream embeds every query alike: one domain of queries.
        "routing": {"strategy": "promotion", "refresh_s": 0.2,
                    "domains": {"embeddings": {"deployment": "embed-1", "dimensions": 8}}},
        "cache": {"exact": {"enabled": False}},
        "learning": {
            "traces": {"content": "full", "flush_s": 0.05},
            # Every default but following the route table's shares (off by default: it spends money).
            "shadow": {"route_table": True},
            "promote": {"enabled": True, "interval_s": 1.0, "clusters": 1, "quality": 0.9},
        },
    }  # fmt: skip


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with fake_upstream() as upstream:
        config = tmp_path / "tiergate.yaml"
        config.write_text(yaml.safe_dump(gateway_config(upstream)))
        port = free_port()
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port)]
        with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=tmp_path, output=tmp_path / "log"):
            admin = f"http://127.0.0.1:{port}/admin"
            tenant = httpx.post(f"{admin}/tenants", json={"name": "acme"}, headers=ADMIN).json()["id"]
            key = httpx.post(f"{admin}/keys", json={"tenant_id": tenant}, headers=ADMIN).json()["key"]
            yield Live(f"http://127.0.0.1:{port}/v1", upstream, tmp_path / "tiergate.db", key, tenant)


def test_a_cheaper_tier_always_wrong_costs_no_more_than_the_cap(live: Live) -> None:
    live.answer("student-1", content="I am not sure.")
    live.answer(
        "judge-1", judge_prefers="echo:"
    )  # the judge prefers the teacher's answer: the student is worse
    served = live.drive(0, REQUESTS)  # the gateway's promote job runs every second meanwhile
    evaluation, serving = live.settled()
    # The loop did explore, found the student worse, and never promoted it ...
    verdicts = live.rows("SELECT verdict, COUNT(*) FROM evaluations WHERE status = 'ok' GROUP BY verdict")
    assert dict(verdicts).get("worse", 0) > 0 and set(dict(verdicts)) == {"worse"}
    assert set(served) == {"teacher"}
    # ... and spent at most the cap, which bound it (without it, the first explorations cost more).
    assert 0 < evaluation <= EVALUATION_SHARE * serving
    assert live.outcomes()["over_budget"] > 0
    # Some refused at the judge, the candidate's answer paid for: the cap is checked before each call.
    assert live.rows("SELECT COUNT(*) FROM evaluations WHERE status = 'over_budget'")[0][0] > 0


def test_a_cheaper_tier_as_good_gets_its_domain_promoted(live: Live) -> None:
    sent: list[str] = []

    def promoted() -> list[int] | None:
        sent.extend(live.drive(len(sent), 100))
        tables = live.rows("SELECT version, doc FROM route_tables WHERE author = 'promote'")
        found = [v for v, doc in tables if "student" in json.loads(doc)["routes"].values()]
        return found or (None if len(sent) < REQUESTS else [])

    found = wait_for(promoted, timeout=300, interval=0.1, what="a promotion")
    assert found, f"no promotion after {len(sent)} requests"
    # The gateway now serves the domain on the student, the teacher only for monitoring samples.
    after = wait_for(lambda: (t := live.drive(len(sent), 200)).count("student") > 150 and t, timeout=30)
    assert after.count("teacher") < 40
    evaluation, serving = live.settled()
    assert 0 < evaluation <= EVALUATION_SHARE * serving
