"""`tiergate distill`: accepted teacher/supervisor answers as OpenAI fine-tuning and preference files, every
written line valid, filtered and deduplicated as the manifest says, reproducible from its seed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.admin.learning_rows import evaluation, feedback, trace, write
from tiergate.admin.cli import main
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.policies.distill import chat_row_errors, preference_row_errors

TOOLS = [
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
]
CALL = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a maths tutor."}, {"role": "user", "content": text}]


def said(text: str | None, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **extra}


async def seed(url: str) -> None:
    await migrate.upgrade(url)
    engine = open_engine(url)
    math = {"tenant_id": "ten_a", "domain": "math"}
    rows = [
        trace(ts_ms=1, request_id="plain", messages=ask("What is 2+2?"), answer=said("4"), **math),
        trace(ts_ms=2, request_id="twin", messages=ask("What is 2 + 2?"), answer=said("Four."), **math),
        trace(ts_ms=3, request_id="paired", messages=ask("Solve x + 3 = 5."), answer=said("x = 2"), **math),
        trace(ts_ms=4, request_id="masked", content="redacted", messages=ask("Mail [EMAIL]"), **math),
        trace(ts_ms=5, request_id="secret", content="none", messages=None, answer=None, **math),
        trace(ts_ms=6, request_id="cut", finish_reason="length", messages=ask("Prove Fermat's last theorem."), **math),
        trace(ts_ms=7, request_id="disliked", messages=ask("What is 7 x 6?"), answer=said("48"), **math),
        trace(ts_ms=8, request_id="beaten", messages=ask("What is 9 - 4?"), answer=said("6"), **math),
        trace(ts_ms=9, request_id="cheap", tier="student", messages=ask("What is 1+1?"), **math),
        trace(ts_ms=10, request_id="tool", messages=ask("Add 2 and 3 with the tool."), params={"tools": TOOLS},
              answer=said(None, tool_calls=CALL), finish_reason="tool_calls", **math),
        # Calls from the Messages and Completions doors teach as chat calls do; embeddings calls never do.
        trace(ts_ms=11, request_id="code", tenant_id="ten_a", domain="code", tier="supervisor", endpoint="messages",
              messages=ask("Reverse a list in Python."), answer=said("Use `xs[::-1]`.")),
        trace(ts_ms=12, request_id="nodomain", tenant_id="ten_a", endpoint="completions", messages=ask("Hello!"),
              answer=said("Hi!")),
        trace(ts_ms=13, request_id="other", tenant_id="ten_b", domain="math", messages=ask("What is 3+3?")),
        trace(ts_ms=14, request_id="embedded", endpoint="embeddings", messages=ask("Embed me"), answer=said("[]"),
              **math),
    ]  # fmt: skip
    await write(engine, "traces", rows)
    await write(engine, "evaluations", [
        evaluation("ten_a", "paired", 20, candidate_answer={"content": "x = 8"}, rationale="x = 8 does not solve it"),
        evaluation("ten_a", "paired", 21, verdict="as_good", agreed=True, candidate_answer={"content": "x=2"}, rationale=None),
        evaluation("ten_a", "beaten", 22, verdict="better", candidate_answer={"content": "5"}),
    ])  # fmt: skip
    await write(
        engine, "feedback", [feedback("ten_a", "disliked", 30, 0.0), feedback("ten_a", "plain", 31, 1.0)]
    )
    await engine.dispose()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def cfg(tmp_path: Path, sqlite_url: str) -> str:
    asyncio.run(seed(sqlite_url))
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"master_key": "m", "database_url": sqlite_url}))
    return str(path)


def distill(cfg: str, out: Path, *args: str) -> dict[str, Any]:
    assert main(["distill", *args, "--out", str(out), "--tenant", "ten_a", "--config", cfg]) == 0
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_every_domain_exported_valid_filtered_and_deduplicated(cfg: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = distill(cfg, out, "--all", "--validation-fraction", "0.5", "--seed", "3")
    assert set(manifest["domains"]) == {"math", "code", "unassigned"}
    assert manifest["filtered"] == {
        "redacted": 1, "no_content": 1, "truncated": 1, "negative_feedback": 1, "beaten_by_candidate": 1,
        "duplicates": 1, "invalid_rows": 0,
    }  # fmt: skip
    assert manifest["source_route_table_version"] is None and manifest["tenant_id"] == "ten_a"
    math = manifest["domains"]["math"]
    assert math["duplicates_removed"] == 1 and math["train"] + math["validation"] == 3  # plain, paired, tool
    assert math["preference_train"] + math["preference_validation"] == 1
    sft, pairs = [], []
    for folder in (out / d["directory"] for d in manifest["domains"].values()):
        for side in ("train", "validation"):
            for row in lines(folder / f"{side}.jsonl"):
                assert chat_row_errors(row) == [], row
                sft.append(row)
            for row in lines(folder / f"preferences_{side}.jsonl"):
                assert preference_row_errors(row) == [], row
                pairs.append(row)
    assert len(sft) == 5 and manifest["totals"]["train"] + manifest["totals"]["validation"] == 5
    answers = {row["messages"][-1].get("content") for row in sft}
    assert answers == {"4", "x = 2", None, "Use `xs[::-1]`.", "Hi!"}  # the twin "Four." was the duplicate
    (tool_row,) = [r for r in sft if r["messages"][-1].get("tool_calls")]
    assert tool_row["tools"] == TOOLS and tool_row["messages"][-1]["tool_calls"] == CALL
    (pair,) = pairs
    assert pair["preferred_output"] == [{"role": "assistant", "content": "x = 2"}]
    assert pair["non_preferred_output"] == [{"role": "assistant", "content": "x = 8"}]
    assert pair["judge_rationale"] == "x = 8 does not solve it"
    assert pair["input"]["messages"] == ask("Solve x + 3 = 5.")
    paired_sft = next(r for r in sft if r["messages"][-1].get("content") == "x = 2")
    assert paired_sft["judge_rationale"] == "x = 8 does not solve it"
    # The preference pair lands on the same side of the split as its prompt's supervised row.
    for side in ("train", "validation"):
        prompts = {json.dumps(r["messages"][:-1]) for r in lines(out / "math" / f"{side}.jsonl")}
        for row in lines(out / "math" / f"preferences_{side}.jsonl"):
            assert json.dumps(row["input"]["messages"]) in prompts


def test_one_domain_and_the_same_seed_give_the_same_files(cfg: str, tmp_path: Path) -> None:
    first = distill(cfg, tmp_path / "a", "--domain", "math", "--seed", "7", "--validation-fraction", "0.34")
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"routes": {"math": "student"}}))
    assert main(["route-table", "put", str(table), "--config", cfg]) == 0
    again = distill(cfg, tmp_path / "b", "--domain", "math", "--seed", "7", "--validation-fraction", "0.34")
    assert set(first["domains"]) == {"math"} and first["domain"] == "math"
    assert not (tmp_path / "a" / "code").exists()
    for name in (
        "train.jsonl",
        "validation.jsonl",
        "preferences_train.jsonl",
        "preferences_validation.jsonl",
    ):
        assert (tmp_path / "a" / "math" / name).read_text() == (tmp_path / "b" / "math" / name).read_text()
    assert first["domains"] == again["domains"] and first["domains"]["math"]["validation"] == 1
    # The manifest names the route table in force at export time.
    assert first["source_route_table_version"] is None and again["source_route_table_version"] == 1


def test_arguments_are_checked(cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["distill", "--out", str(tmp_path), "--config", cfg])  # neither --domain nor --all
    assert (
        main(["distill", "--all", "--validation-fraction", "1", "--out", str(tmp_path), "--config", cfg]) == 2
    )
    assert "--validation-fraction" in capsys.readouterr().err
