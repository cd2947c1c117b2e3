"""The learning loop against a real `tiergate serve` and the fake upstream: feedback through the official SDK
with the tenant walls, and a shadow candidate that takes seconds while the client is answered at once."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.e2e.conftest import sdk_client
from tests.support import fake_upstream, free_port, running, wait_for

pytestmark = pytest.mark.e2e

MASTER = "sk-e2e-learning"
ADMIN = {"authorization": f"Bearer {MASTER}"}
CANDIDATE_DELAY_S = 5.0


@dataclass
class Loop:
    url: str
    upstream: str
    database: Path

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as conn:
            return conn.execute(sql, args).fetchall()

    def key(self, name: str) -> str:
        admin = self.url.removesuffix("/v1") + "/admin"
        tenant = httpx.post(f"{admin}/tenants", json={"name": name}, headers=ADMIN).json()
        return str(httpx.post(f"{admin}/keys", json={"tenant_id": tenant["id"]}, headers=ADMIN).json()["key"])


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    workdir = tmp_path_factory.mktemp("learning")
    with fake_upstream() as upstream:
        dep = {"api_base": upstream, "api_key": "sk-up", "input_cost_per_mtok": 1, "output_cost_per_mtok": 2}
        config = {
            "master_key": MASTER,
            "tiers": {"student": [{"model": "student-1", **dep}], "teacher": [{"model": "teacher-1", **dep}]},
            "upstream": {"max_retries": 0},
            # Every answer shadowed, the share cap on evaluation spend far above it (tests/e2e/test_live_policy.py).
            "learning": {
                "traces": {"content": "full", "flush_s": 0.05},
                "shadow": {"fraction": 1.0, "evaluation_share": 1000},
            },
        }
        path = workdir / "tiergate.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(path), "--port", str(port)]
        with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=workdir):
            yield Loop(f"http://127.0.0.1:{port}/v1", upstream, workdir / "tiergate.db")


def test_feedback_with_the_sdk_is_walled_by_tenant(loop: Loop) -> None:
    mine, theirs = sdk_client(loop.url, loop.key("acme")), sdk_client(loop.url, loop.key("globex"))
    answer = mine.chat.completions.create(model="student", messages=[{"role": "user", "content": "hello"}])
    request_id = answer._request_id
    assert request_id
    given = mine.post(
        "/feedback", body={"request_id": request_id, "label": "good", "comment": "spot on"}, cast_to=object
    )
    assert given["object"] == "feedback" and given["score"] == 1.0  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        theirs.post("/feedback", body={"request_id": request_id, "score": 0.0}, cast_to=object)
    for bad in ({"request_id": request_id, "score": 1.5}, {"request_id": request_id}, {"score": 1}):
        with pytest.raises(openai.BadRequestError):
            mine.post("/feedback", body=bad, cast_to=object)
    stored = loop.rows("SELECT request_id, score, label, comment FROM feedback")
    assert stored == [(request_id, 1.0, "good", "spot on")]


def test_a_candidate_that_takes_seconds_does_not_delay_the_client(loop: Loop) -> None:
    httpx.post(
        loop.upstream.removesuffix("/v1") + "/_script",
        json={"model": "student-1", "steps": [{"delay_s": CANDIDATE_DELAY_S}]},
    ).raise_for_status()
    client = sdk_client(loop.url, MASTER)
    started = time.monotonic()
    answer = client.chat.completions.create(
        model="teacher", messages=[{"role": "user", "content": "slow shadow"}]
    )
    elapsed = time.monotonic() - started
    assert elapsed < CANDIDATE_DELAY_S  # the client did not wait for the candidate
    sql = "SELECT status, agreement, candidate_tier FROM evaluations WHERE request_id = ?"
    row = wait_for(
        lambda: loop.rows(sql, answer._request_id), timeout=CANDIDATE_DELAY_S + 20, what="the evaluation"
    )
    # The fake upstream echoes the prompt, so the candidate agrees: no judge was needed.
    assert row == [("ok", "identical", "student")]
