"""Two `tiergate serve` processes on one PostgreSQL: a route table written through one is served by the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.replicas import ADMIN, Replicas, start_replicas
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services]
REFRESH_S = 0.2


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[Replicas]:
    with start_replicas(
        tmp_path,
        postgres_url,
        redis_server_url,
        redis_prefix,
        routing={"strategy": "promotion", "refresh_s": REFRESH_S},
    ) as started:
        yield started


def tier(replicas: Replicas, i: int) -> str:
    r = httpx.post(
        f"{replicas.urls[i]}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "Why was I charged twice?"}]},
        headers=ADMIN,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-tiergate-tier"]


def serving(replicas: Replicas, i: int, version: int) -> bool:
    return bool(replicas.admin("GET", "/route-table", i)["serving_version"] == version)


def test_a_version_written_through_one_replica_is_served_by_the_other(replicas: Replicas) -> None:
    assert tier(replicas, 0) == tier(replicas, 1) == "teacher"  # no table: every domain is unknown
    # No centroids: every query falls in `general`.
    written = replicas.admin(
        "PUT", "/route-table", 0, json={"routes": {"general": "student"}, "base_version": 0}
    )
    assert written["version"] == 1 and serving(replicas, 0, 1)
    wait_for(lambda: serving(replicas, 1, 1), timeout=10, what="replica 1 to install version 1")
    assert tier(replicas, 1) == "student"
    # And back the other way: a rollback through replica 1 reaches replica 0.
    replicas.admin("PUT", "/route-table", 1, json={"routes": {"general": "ta"}})
    assert replicas.admin("POST", "/route-table/rollback", 1, json={"to_version": 1})["version"] == 3
    wait_for(lambda: serving(replicas, 0, 3), timeout=10, what="replica 0 to install version 3")
    assert tier(replicas, 0) == "student"
    history = replicas.admin("GET", "/route-table/history", 0)["data"]
    assert [h["version"] for h in history] == [3, 2, 1]
    rows = replicas.sql("SELECT version, author FROM route_tables ORDER BY version")
    assert [tuple(r) for r in rows] == [(1, "master"), (2, "master"), (3, "master")]
