"""`tiergate promote` on the command line: the Helm CronJob's call, against the database's route tables."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.admin.promote_rows import seed
from tiergate.admin.cli import main
from tiergate.admin.jobs import promote
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.routing.table_store import StoredRouteTable


def _deployment(model: str, price: float) -> dict[str, Any]:
    return {
        "model": model,
        "api_base": "http://up/v1",
        "input_cost_per_mtok": price,
        "output_cost_per_mtok": price,
    }


@pytest.fixture
def cfg(tmp_path: Path, database_url: str) -> str:
    async def seeded() -> None:
        engine = open_engine(database_url)
        now = int(time.time() * 1000) - 3_600_000
        await seed(engine, "billing", requests=100, verdicts={"as_good": 60}, ts_ms=now)
        await seed(engine, "code", requests=100, verdicts={"as_good": 30, "worse": 30}, ts_ms=now)
        await engine.dispose()

    asyncio.run(seeded())
    path = tmp_path / "promote.yaml"
    doc = {
        "master_key": "m",
        "database_url": database_url,
        "tiers": {"student": [_deployment("small", 1)], "teacher": [_deployment("big", 10)]},
        "learning": {"promote": {"clusters": 2, "quality": 0.9}},
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def history(database_url: str) -> list[StoredRouteTable]:
    async def read() -> list[StoredRouteTable]:
        engine = open_engine(database_url)
        try:
            return await promote.open_store(engine).history(10)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_dry_run_prints_decisions_and_evidence_and_writes_nothing(
    cfg: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["promote", "--dry-run", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert re.search(r"promote card / charge / invoice \[d\d\]: teacher -> student; 60 verdicts", out)
    assert "student<teacher" in out and "0/30/30" in out  # the evidence table: the code domain's verdicts
    assert "dry run: nothing written" in out
    assert history(database_url) == []
    assert main(["promote", "--dry-run", "--json", "--config", cfg]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["written_version"] is None
    assert [(d["action"], d["from"], d["to"], d["samples"]) for d in report["decisions"]] == [
        ("promote", "teacher", "student", 60)
    ]


def test_a_run_writes_one_version_and_the_next_run_nothing(
    cfg: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["promote", "--json", "--config", cfg]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written_version"] == 1 and report["base_version"] == 0
    (stored,) = history(database_url)
    assert stored.author == "promote" and stored.doc.note == report["note"]
    assert sorted(stored.doc.routes.values()) == ["student", "teacher"]
    assert set(stored.doc.names.values()) == {"card / charge / invoice", "compile / function / python"}
    assert main(["promote", "--config", cfg]) == 0
    assert "nothing changed: route table stays at version 1" in capsys.readouterr().out
    assert len(history(database_url)) == 1


def test_a_configuration_it_cannot_work_with_is_an_error(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"master_key": "m", "database_url": sqlite_url,
                                    "tiers": {"teacher": [_deployment("big", 10)]}}))  # fmt: skip
    assert main(["promote", "--config", str(path)]) == 2
    assert "promotion needs at least two configured tiers" in capsys.readouterr().err
