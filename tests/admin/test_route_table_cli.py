"""`tiergate route-table show|history|put|rollback` on the configured database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from tiergate.admin.cli import main
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.routing.table_store import SqlRouteTableStore

E0 = [1.0] + [0.0] * 383


@pytest.fixture
def cfg(tmp_path: Path, sqlite_url: str) -> str:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"master_key": "m", "database_url": sqlite_url}))
    return str(path)


def versions(url: str) -> list[int]:
    async def read() -> list[int]:
        engine = open_engine(url)
        try:
            return [s.version for s in await SqlRouteTableStore(engine).history(100)]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_put_show_history_and_rollback(
    cfg: str, sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "v1.json"
    first.write_text(json.dumps({"routes": {"billing": "student"}, "centroids": {"billing": E0}}))
    second = tmp_path / "v2.yaml"
    second.write_text(
        yaml.safe_dump(
            {
                "routes": {"billing": "teacher", "code": "ta"},
                "note": "from yaml",
                "sampling": {"billing": {"explore": 0.3}, "code": {"monitor": 0.05, "incumbent": "teacher"}},
            }
        )
    )
    assert (
        main(["route-table", "put", str(first), "--note", "promote billing", "--config", cfg, "--json"]) == 0
    )
    out = capsys.readouterr()
    made = json.loads(out.out)
    assert made["version"] == 1 and made["author"] == "cli" and made["note"] == "promote billing"
    assert made["centroids"]["billing"] == E0 and "version 1" in out.err
    assert main(["route-table", "put", str(second), "--base-version", "1", "--config", cfg]) == 0
    assert "version 2" in capsys.readouterr().out
    assert main(["route-table", "show", "--config", cfg]) == 0
    shown = capsys.readouterr().out
    assert "version 2" in shown and "from yaml" in shown and "code" in shown and "ta" in shown
    assert "explore 0.3" in shown and "monitor 0.05 (teacher serves)" in shown
    assert main(["route-table", "show", "--version", "1", "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["routes"] == {"billing": "student"}
    assert main(["route-table", "rollback", "--config", cfg, "--json"]) == 0
    back = json.loads(capsys.readouterr().out)
    assert (
        back["version"] == 3
        and back["routes"] == {"billing": "student"}
        and back["note"] == "promote billing"
    )
    assert main(["route-table", "rollback", "--to", "2", "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["routes"] == {"billing": "teacher", "code": "ta"}
    assert main(["route-table", "history", "--limit", "3", "--config", cfg, "--json"]) == 0
    assert [h["version"] for h in json.loads(capsys.readouterr().out)] == [4, 3, 2]
    assert main(["route-table", "history", "--config", cfg]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["version", "created_at", "author", "domains", "note"] and len(listing) == 5
    assert versions(sqlite_url) == [4, 3, 2, 1]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.json", '{"routes": {"billing": "student"', "t.json: not valid JSON"),
        ("t.yaml", "routes: [unclosed", "t.yaml: not valid YAML"),
        ("t.txt", "{}", "must end in .json, .yaml or .yml"),
        ("t.yml", "- billing", "the route table must be an object"),
        ("t.json", '{"routes": {"billing": "intern"}}', "routes.billing: must be one of"),
        ("t.json", '{"routes": {}, "centroids": {"x": [1.0]}}', "centroids.x must be a list of 384"),
        (
            "t.json",
            '{"routes": {}, "sampling": {"x": {"explore": 2}}}',
            "sampling.x.explore must be a number",
        ),
        ("t.json", '{"routes": {}, "color": "red"}', "unknown field(s) color"),
        (None, "", "No such file"),
    ],
)
def test_a_bad_file_is_refused_clearly_and_writes_nothing(
    cfg: str,
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str | None,
    content: str,
    message: str,
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"routes": {"billing": "student"}}))
    assert main(["route-table", "put", str(good), "--config", cfg]) == 0
    capsys.readouterr()
    path = tmp_path / (name or "missing.json")
    if name is not None:
        path.write_text(content)
    assert main(["route-table", "put", str(path), "--config", cfg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tiergate: ") and message in err
    assert versions(sqlite_url) == [1]


def test_stale_base_version_missing_versions_and_an_empty_table(
    cfg: str, sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["route-table", "show", "--config", cfg]) == 2
    assert "no versions yet" in capsys.readouterr().err
    assert main(["route-table", "rollback", "--config", cfg]) == 2
    assert "no earlier version to roll back to" in capsys.readouterr().err
    doc = tmp_path / "t.json"
    doc.write_text(json.dumps({"routes": {"billing": "student"}}))
    assert main(["route-table", "put", str(doc), "--config", cfg]) == 0
    assert main(["route-table", "put", str(doc), "--base-version", "0", "--config", cfg]) == 2
    assert "moved on to version 1" in capsys.readouterr().err
    assert main(["route-table", "show", "--version", "5", "--config", cfg]) == 2
    assert "version 5 does not exist" in capsys.readouterr().err
    assert main(["route-table", "rollback", "--to", "5", "--config", cfg]) == 2
    assert "version 5 does not exist" in capsys.readouterr().err
    assert versions(sqlite_url) == [1]
