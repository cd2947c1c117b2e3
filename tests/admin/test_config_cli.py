"""`tiergate config schema | check | docs`, and a bad config as one line and exit status 2 (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import free_port, run_tiergate
from tiergate.admin.cli import main
from tiergate.gateway.config.reference import markdown

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("upstream: {max_retrys: 9}\n", "upstream.max_retrys: unknown field; did you mean max_retries?"),
        ("upstream: {max_retries: 2.7}\n", "upstream.max_retries: 2.7 is not an integer >= 0"),
        (
            "cache:\n  semantic:\n    threshold: high\n",
            'cache.semantic.threshold: "high" is not a number from 0.0 to 1.0',
        ),
    ],
)
def test_serve_with_a_bad_config_exits_2_with_one_line_naming_the_field(
    tmp_path: Path, text: str, line: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    done = run_tiergate("serve", "--config", str(bad), "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"tiergate: configuration error: {line}"]
    assert done.stdout == ""


def test_config_check_says_ok_or_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("master_key: m\ntiers:\n  student:\n    - model: gpt-4o-mini\n")
    bad.write_text("escalation:\n  deployment: true\n")
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: OK (1 deployments)\n"
    assert main(["config", "check", str(bad)]) == 2
    out = capsys.readouterr()
    assert (
        out.err
        == "tiergate: configuration error: escalation.deployment: unknown field; did you mean deployments?\n"
    )
    assert out.out == ""


def test_config_schema_prints_the_schema_and_docs_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False and "upstream" in schema["properties"]
    assert main(["config", "docs"]) == 0
    assert capsys.readouterr().out == markdown()
