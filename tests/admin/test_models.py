"""`tiergate models register|list|activate|deactivate|remove`."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from tiergate.admin import models
from tiergate.admin.cli import main
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.errors import BadRequest


@pytest.fixture
def cfg(tmp_path: Path, sqlite_url: str) -> str:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"master_key": "m", "database_url": sqlite_url}))
    return str(path)


def test_register_list_and_remove(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["models", "register", "--tier", "student", "--model", "acme-student-v2", "--api-base", "http://vllm:8000/v1",
            "--api-key-env", "VLLM_KEY", "--input-cost-per-mtok", "0.05", "--output-cost-per-mtok", "0.1"]  # fmt: skip
    assert main([*args, "--config", cfg, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["status"] == "candidate" and made["tier"] == "student" and made["api_key_env"] == "VLLM_KEY"
    assert made["deployment_id"] == f"registered/student/acme-student-v2#{made['id']}"
    assert made["input_cost_per_mtok"] == 0.05 and made["output_cost_per_mtok"] == 0.1
    assert main(["models", "list", "--config", cfg]) == 0
    listing = capsys.readouterr().out
    assert made["id"] in listing and "acme-student-v2" in listing and "candidate" in listing
    assert main(["models", "remove", made["id"], "--config", cfg]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["models", "list", "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["models", "remove", made["id"], "--config", cfg]) == 2
    assert f"no registered model with id '{made['id']}'" in capsys.readouterr().err


def test_activate_and_deactivate_from_the_cli(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["models", "register", "--tier", "ta", "--model", "m", "--api-base", "http://vllm:8000/v1"]
    assert main([*args, "--config", cfg, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert main(["models", "activate", made["id"], "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "active"
    assert main(["models", "list", "--config", cfg, "--json"]) == 0
    assert [m["status"] for m in json.loads(capsys.readouterr().out)] == ["active"]
    assert main(["models", "deactivate", made["id"], "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "candidate"
    assert main(["models", "activate", "mdl_nope", "--config", cfg]) == 2
    assert "no registered model with id 'mdl_nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("api_base", "vllm:8000", "api_base must be an http(s) URL"),
        ("api_key_env", "MY-KEY", "api_key_env must be an environment variable name"),
        ("input_cost_per_mtok", -1.0, "input_cost_per_mtok must be a price"),
        ("model", " ", "model must be a name"),
        ("tier", "intern", "tier must be one of"),
    ],
)
def test_bad_registrations_are_refused_and_write_nothing(sqlite_url: str, field: str, value: object, message: str) -> None:  # fmt: skip
    async def attempt() -> list[object]:
        await migrate.upgrade(sqlite_url)
        engine = open_engine(sqlite_url)
        try:
            fields: dict[str, object] = {
                "tier": "student",
                "model": "m",
                "api_base": "http://x/v1",
                field: value,
            }
            with pytest.raises(BadRequest, match=re.escape(message)):
                await models.register(engine, **fields)  # type: ignore[arg-type]
            return list(await models.list_models(engine))
        finally:
            await engine.dispose()

    assert asyncio.run(attempt()) == []


async def test_activate_and_deactivate_flip_the_status(sqlite_url: str) -> None:
    await migrate.upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        row = await models.register(engine, tier="ta", model="m", api_base="http://x/v1")
        assert (await models.activate(engine, row.id)).status == "active"
        assert [m.status for m in await models.list_models(engine)] == ["active"]
        assert (await models.deactivate(engine, row.id)).status == "candidate"
        with pytest.raises(models.UnknownId):
            await models.activate(engine, "mdl_nope")
    finally:
        await engine.dispose()
