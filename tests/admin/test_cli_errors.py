"""A user's mistake on the command line is one line on stderr (`tiergate: ...`) and exit status 2, never a
traceback, from the real entry point (`python -m tiergate`); a database that cannot be reached now is one line
and exit status 1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import free_port, run_tiergate

GOOD = "master_key: m\ntiers:\n  student:\n    - model: small\n      api_base: http://up/v1\n"


def refused(done: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The one line a refused command printed (after argparse's usage line, for a usage error)."""
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, done.stderr
    return lines[0]


CONFIGS = {
    "missing": (None, "cannot read config {dir}/missing.yaml: No such file or directory"),
    "malformed": ("tiers: [\n", "is not valid YAML"),
    "invalid": (
        "upstream: {max_retrys: 2}\n",
        "upstream.max_retrys: unknown field; did you mean max_retries?",
    ),
    "mysql": (
        "database_url: mysql://u:secret@db/x\n",
        "database_url: the scheme 'mysql' is not supported: write sqlite:///FILE or postgresql://",
    ),
    "no-directory": (
        "database_url: sqlite:///./nowhere/t.db\n",
        "database_url: the directory ./nowhere of the SQLite file does not exist",
    ),
}


@pytest.mark.parametrize("case", CONFIGS)
@pytest.mark.parametrize("command", [["tenants", "list"], ["report", "cost"], ["serve"]])
def test_a_config_it_cannot_use_is_one_line_and_exit_2(tmp_path: Path, case: str, command: list[str]) -> None:
    text, message = CONFIGS[case]
    path = tmp_path / f"{case}.yaml"
    if text is not None:
        path.write_text(text)
    extra = ["--port", str(free_port())] if command == ["serve"] else []
    line = refused(run_tiergate(*command, "--config", str(path), *extra, cwd=tmp_path))
    assert line.startswith("tiergate: configuration error: ") and message.format(dir=tmp_path) in line
    assert "secret" not in line
    assert not (tmp_path / "tiergate.db").exists()


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "pg.yaml").write_text(f"database_url: postgresql://u:secret@127.0.0.1:{free_port()}/db\n")
    line = refused(run_tiergate("tenants", "list", "--config", "pg.yaml", cwd=tmp_path), status=1)
    assert line.startswith("tiergate: cannot reach the database postgresql://u:***@127.0.0.1:")


@pytest.mark.parametrize("port", ["81535", "0", "-1", "http"])
@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_outside_1_to_65535_is_a_usage_error(tmp_path: Path, command: str, port: str) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    config = ["--config", "good.yaml"] if command == "serve" else []
    line = refused(run_tiergate(command, *config, f"--port={port}", cwd=tmp_path))
    assert (
        line
        == f"tiergate {command}: error: argument --port: {port!r} is not a port: give a number from 1 to 65535"
    )


@pytest.mark.parametrize(("variable", "value"), [("TIERGATE_PORT", "81535"), ("TIERGATE_WORKERS", "none")])
def test_a_bad_serve_default_from_the_environment_is_a_usage_error(
    tmp_path: Path, variable: str, value: str
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    line = refused(run_tiergate("serve", "--config", "good.yaml", cwd=tmp_path, env={variable: value}))
    assert f"{value!r} is not" in line
    # Other commands do not read it and are not disturbed by it.
    listed = run_tiergate("tenants", "list", "--config", "good.yaml", cwd=tmp_path, env={variable: value})
    assert listed.returncode == 0, listed.stderr
