"""`tiergate tenants|keys|report cost|db upgrade` on the configured database (a SQLite file of the test's own)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
from pathlib import Path
from typing import get_args

import pytest
import yaml

from tiergate.admin.cli import main
from tiergate.admin.schemas import Period
from tiergate.gateway.accounting.keys import KEY_PREFIX
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.models import LedgerEntry
from tiergate.policies.budget import PERIODS


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tiergate.db"


@pytest.fixture
def cfg(tmp_path: Path, db: Path) -> str:
    deployment = {"api_base": "http://up/v1", "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}
    doc = {
        "master_key": "m",
        "database_url": f"sqlite:///{db}",
        "tiers": {
            "student": [{"model": "small", **deployment}],
            "teacher": [{"model": "big", **{**deployment, "input_cost_per_mtok": 10.0}}],
        },
    }
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def call(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = call(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def rows(db: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(f"SELECT * FROM {table} ORDER BY 1"))


def tenant(capsys: pytest.CaptureFixture[str], cfg: str, *extra: str) -> dict[str, object]:
    made = as_json(capsys, "tenants", "create", "acme", *extra, "--config", cfg)
    assert isinstance(made, dict)
    return made


def test_tenants_create_list_show_update_delete(
    cfg: str, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = tenant(capsys, cfg, "--budget-usd", "5", "--rpm", "10", "--metadata", '{"team": "ml"}')
    assert made["name"] == "acme" and made["budget_usd"] == 5.0 and made["budget_period"] == "monthly"
    assert made["rpm"] == 10 and made["metadata"] == {"team": "ml"}
    tid = str(made["id"])
    code, out, _ = call(capsys, "tenants", "list", "--config", cfg)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["id", "name", "budget_usd"] and tid in lines[1]
    assert as_json(capsys, "tenants", "show", tid, "--config", cfg) == made
    changed = as_json(
        capsys, "tenants", "update", tid, "--name", "acme2", "--no-rpm", "--budget-period", "daily",
        "--trace-content", "none", "--config", cfg,
    )  # fmt: skip
    assert isinstance(changed, dict)
    assert changed["name"] == "acme2" and changed["rpm"] is None and changed["budget_period"] == "daily"
    assert changed["trace_content"] == "none" and changed["metadata"] == {"team": "ml"}
    code, out, _ = call(capsys, "tenants", "delete", tid, "--config", cfg)
    assert code == 0 and f"deleted {tid}" in out
    assert as_json(capsys, "tenants", "list", "--config", cfg) == []
    code, _, err = call(capsys, "tenants", "show", tid, "--config", cfg)
    assert code == 2 and f"no tenant with id '{tid}'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tenants", "create", "acme", "--metadata", "{team: ml"], "--metadata: not valid JSON"),
        (
            ["tenants", "create", "acme", "--metadata", "[1, 2]"],
            "metadata: Input should be a valid dictionary",
        ),
        (["tenants", "create", "", "--rpm", "5"], "name: String should have at least 1 character"),
        (["tenants", "create", "acme", "--rpm", "0"], "rpm: Input should be greater than or equal to 1"),
        (["tenants", "update", "ten_nope", "--rpm", "5"], "no tenant with id 'ten_nope'"),
        (["tenants", "delete", "ten_nope"], "no tenant with id 'ten_nope'"),
        (["keys", "create", "--tenant", "ten_nope"], "no tenant with id 'ten_nope'"),
        (["keys", "list", "--tenant", "ten_nope"], "no tenant with id 'ten_nope'"),
        (["keys", "update", "key_nope", "--rpm", "5"], "no key with id 'key_nope'"),
        (["keys", "revoke", "key_nope"], "no key with id 'key_nope'"),
        (["keys", "rotate", "key_nope"], "no key with id 'key_nope'"),
        (
            ["keys", "create", "--tenant", "TID", "--expires-at", "soon"],
            "expires_at: Value error, must be an ISO",
        ),
        (
            ["keys", "create", "--tenant", "TID", "--allowed-models", "student,nosuchmodel"],
            "'allowed_models': no model named 'nosuchmodel'; a key may name auto, a tier (student, ta, teacher,"
            " supervisor) or a deployment: big, small",
        ),
        (
            ["keys", "create", "--tenant", "TID", "--expires-at", "2001-01-01"],
            "'expires_at': 2001-01-01T00:00:00+00:00 is in the past; a key's expiry must lie in the future",
        ),
        (
            ["keys", "update", "KID", "--expires-at", "2001-01-01T00:00:00Z"],
            "a key's expiry must lie in the future",
        ),
        (["tenants", "update", "TID", "--allowed-models", "gpt-typo"], "no model named 'gpt-typo'"),
        (["report", "cost", "--start", "yesterday"], "'start' must be an ISO 8601 date"),
        (["report", "cost", "--start", "2025-02-01", "--end", "2025-01-01"], "'end' must be after 'start'"),
    ],
)
def test_bad_input_is_refused_clearly_and_writes_nothing(
    cfg: str, db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    tid = str(tenant(capsys, cfg)["id"])
    key = as_json(capsys, "keys", "create", "--tenant", tid, "--config", cfg)
    assert isinstance(key, dict)
    before = rows(db, "tenants"), rows(db, "api_keys")
    given = [a.replace("TID", tid).replace("KID", str(key["id"])) for a in argv]
    code, out, err = call(capsys, *given, "--config", cfg)
    assert code == 2 and out == ""
    assert err.startswith("tiergate: ") and message in err and "Traceback" not in err
    assert (rows(db, "tenants"), rows(db, "api_keys")) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["tenants", "create", "acme", "--budget-period", "yearly"],
            "argument --budget-period: invalid choice",
        ),
        (
            ["keys", "update", "key_x", "--budget-period", "hourly"],
            "argument --budget-period: invalid choice",
        ),
        (["tenants", "create", "acme", "--rpm", "ten"], "argument --rpm: invalid int value"),
        (["keys", "create"], "the following arguments are required: --tenant"),
        (["report", "cost", "--group-by", "color"], "argument --group-by: invalid choice"),
        (["report", "cost", "--csv", "--json"], "not allowed with argument"),
    ],
)
def test_bad_options_are_usage_errors_that_write_nothing(
    cfg: str, db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    tenant(capsys, cfg)
    before = rows(db, "tenants"), rows(db, "api_keys")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--config", cfg])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert (rows(db, "tenants"), rows(db, "api_keys")) == before


def test_keys_lifecycle_and_the_secret_is_printed_by_create_and_rotate_only(
    cfg: str, db: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tid = str(tenant(capsys, cfg)["id"])
    code, out, err = call(
        capsys, "--log-level", "debug", "keys", "create", "--tenant", tid, "--name", "ci",
        "--rpm", "7", "--budget-usd", "2", "--config", cfg,
    )  # fmt: skip
    assert code == 0
    secret = next(w for w in out.split() if w.startswith(KEY_PREFIX))
    assert "shown once" in out and secret not in err
    kid = next(line.split()[0] for line in out.splitlines() if line.startswith("key_"))
    seen = [secret]

    shown = as_json(capsys, "keys", "show", kid, "--config", cfg)
    assert isinstance(shown, dict) and "key" not in shown
    assert shown["name"] == "ci" and shown["rpm"] == 7 and shown["status"] == "active"
    assert secret.startswith(str(shown["prefix"])) and len(str(shown["prefix"])) < len(secret) // 2
    listed = as_json(capsys, "keys", "list", "--tenant", tid, "--config", cfg)
    assert isinstance(listed, list) and [k["id"] for k in listed] == [kid]
    updated = as_json(capsys, "keys", "update", kid, "--no-rpm", "--tpm", "100", "--config", cfg)
    assert isinstance(updated, dict) and updated["rpm"] is None and updated["tpm"] == 100

    rotated = as_json(capsys, "keys", "rotate", kid, "--grace-s", "60", "--config", cfg)
    assert isinstance(rotated, list)
    new, old = rotated
    assert new["key"].startswith(KEY_PREFIX) and new["rotated_from"] == kid and "key" not in old
    assert old["id"] == kid and old["expires_at"] is not None and old["status"] == "active"
    seen.append(new["key"])
    code, out, _ = call(capsys, "keys", "rotate", new["id"], "--grace-s", "0", "--config", cfg)
    assert code == 0 and f"the old key {new['id']} keeps working until" in out
    seen.append(next(w for w in out.split() if w.startswith(KEY_PREFIX)))

    revoked = as_json(capsys, "keys", "revoke", kid, "--config", cfg)
    assert isinstance(revoked, dict) and revoked["status"] == "revoked"
    code, _, err = call(capsys, "keys", "update", kid, "--rpm", "1", "--config", cfg)
    assert code == 2 and "is revoked and cannot be changed" in err
    code, _, err = call(capsys, "keys", "rotate", kid, "--config", cfg)
    assert code == 2 and "is revoked and cannot be rotated" in err

    code, out, err = call(capsys, "--log-level", "debug", "keys", "list", "--config", cfg)
    assert code == 0 and len(out.splitlines()) == 4
    everything = (
        out + err + "\n".join(r.getMessage() for r in caplog.records) + db.read_bytes().decode("latin-1")
    )
    assert len(set(seen)) == 3 and not any(s in everything for s in seen)


def test_report_cost_as_table_csv_and_json(cfg: str, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tid = str(tenant(capsys, cfg)["id"])
    asyncio.run(migrate.upgrade(f"sqlite:///{db}"))

    def entry(
        n: int, tier: str, day: str, prompt: int, completion: int, cost: int, **extra: str
    ) -> LedgerEntry:
        return LedgerEntry(
            entry_id=f"e{n}", request_id=f"r{n}", ts_ms=0, day=day, tenant_id=tid, key_id="key_a",
            endpoint="chat", requested_model="auto", tier=tier, model=tier, prompt_tokens=prompt,
            completion_tokens=completion, cost_nano=cost, status="ok", **extra,
        )  # fmt: skip

    async def seed() -> None:
        from datetime import datetime

        from sqlalchemy.ext.asyncio import AsyncSession

        def at(day: str) -> int:
            return int(datetime.fromisoformat(day + "T12:00:00+00:00").timestamp() * 1000)

        engine = open_engine(f"sqlite:///{db}")
        async with AsyncSession(engine) as session:
            for e in [
                entry(1, "student", "2025-01-01", 100, 50, 200_000),
                entry(2, "student", "2025-01-02", 100, 50, 0, cache="exact"),
                entry(3, "teacher", "2025-01-02", 10, 20, 500_000),
                entry(4, "student", "2025-01-02", 5, 5, 7_000, kind="evaluation"),
            ]:
                e.ts_ms = at(e.day)
                session.add(e)
            await session.commit()
        await engine.dispose()

    asyncio.run(seed())
    code, out, _ = call(capsys, "report", "cost", "--group-by", "tier", "--config", cfg)
    lines = [line.split() for line in out.splitlines()]
    assert code == 0 and lines[0][:3] == ["tier", "requests", "prompt_tokens"]
    assert [line[:4] for line in lines[1:]] == [
        ["student", "2", "200", "100"],
        ["teacher", "1", "10", "20"],
        ["TOTAL", "3", "210", "120"],
    ]

    code, out, _ = call(capsys, "report", "cost", "--group-by", "day", "--csv", "--config", cfg)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["day"] for r in table] == ["2025-01-01", "2025-01-02", "TOTAL"]
    total = table[-1]
    # teacher price: 10/M in, 2/M out over all 210 + 120 tokens
    assert total["cost_usd"] == "0.0007" and total["cost_if_teacher_usd"] == "0.00234"
    assert (
        total["cache_hits"] == "1"
        and total["evaluation_calls"] == "1"
        and total["evaluation_cost_usd"] == "0.000007"
    )

    report = as_json(capsys, "report", "cost", "--start", "2025-01-02", "--tenant", tid, "--config", cfg)
    assert (
        isinstance(report, dict) and report["start"] == "2025-01-02T00:00:00Z" and report["tenant_id"] == tid
    )
    assert report["total"]["requests"] == 2 and "_raw" not in report["total"]
    assert report["teacher_price"] == {"input_per_mtok": 10.0, "output_per_mtok": 2.0}
    other = as_json(capsys, "report", "cost", "--tenant", "ten_other", "--config", cfg)
    assert isinstance(other, dict) and other["rows"] == [] and other["total"]["requests"] == 0


def test_db_upgrade_migrates_once_then_reports_it_is_current(
    cfg: str, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = migrate.head()
    code, out, _ = call(capsys, "db", "upgrade", "--config", cfg)
    assert code == 0 and out.strip() == f"sqlite:///{db}: migrated empty -> {head}"
    assert {"tenants", "api_keys", "ledger"} <= {r[1] for r in rows(db, "sqlite_master")}
    code, out, _ = call(capsys, "db", "upgrade", "--config", cfg)
    assert code == 0 and out.strip() == f"sqlite:///{db}: already at {head}"
    broken = tmp_path / "broken.yaml"
    broken.write_text("master_key: [unclosed")
    code, out, err = call(capsys, "db", "upgrade", "--config", str(broken))
    assert (
        code == 2
        and out == ""
        and err.startswith("tiergate: configuration error:")
        and "not valid YAML" in err
    )


def test_db_upgrade_on_postgres_hides_the_password(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_url.replace("postgres@", "postgres:s3cret@")
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump({"master_key": "m", "database_url": url}))
    code, out, _ = call(capsys, "db", "upgrade", "--config", str(path))
    assert code == 0 and "s3cret" not in out and ":***@" in out and f"-> {migrate.head()}" in out
    code, out, _ = call(capsys, "db", "upgrade", "--config", str(path))
    assert code == 0 and "already at" in out


def test_the_admin_api_and_the_cli_accept_the_same_budget_periods() -> None:
    assert get_args(Period) == PERIODS  # the CLI's --budget-period choices are PERIODS themselves


def test_a_command_that_creates_a_database_or_a_master_key_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERGATE_CONFIG", raising=False)
    monkeypatch.delenv("TIERGATE_MASTER_KEY", raising=False)
    code, _, err = call(capsys, "tenants", "list")
    assert code == 0 and err.splitlines() == [
        "tiergate: created a new master key in ./tiergate.master_key (no config file found; set "
        "TIERGATE_MASTER_KEY to choose your own)",
        "tiergate: created a new database ./tiergate.db (config: embedded default)",
    ]
    code, _, err = call(capsys, "tenants", "list")
    assert code == 0 and err == ""  # nothing new the second time
