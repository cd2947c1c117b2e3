"""The Dockerfile, read with Docker's own parser (no engine runs here): what it copies, runs and starts."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest

from tests.support import ROOT, free_port, running
from tiergate.admin.cli import build_parser

COMMANDS = dockerfile.parse_file(str(ROOT / "Dockerfile"))


def _stages() -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in COMMANDS:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def _args() -> dict[str, str]:
    """Default values of the ARGs declared anywhere (`ARG NAME=value`)."""
    out = {}
    for command in COMMANDS:
        if command.cmd == "ARG":
            name, _, value = command.value[0].partition("=")
            out[name] = value
    return out


def _expand(text: str) -> str:
    args = _args()
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


FINAL = _stages()[-1]


def _final(cmd: str) -> list[dockerfile.Command]:
    return [c for c in FINAL if c.cmd == cmd]


def _env() -> dict[str, str]:
    values = [v for c in _final("ENV") for v in c.value]
    return dict(zip(values[::2], values[1::2], strict=True))


def test_every_stage_is_a_slim_python_311_image_and_the_build_is_multi_stage() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = _expand(stage[0].value[0])
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), image
    copied = [c for c in FINAL if c.cmd == "COPY"]
    assert copied and all(c.flags == ("--from=build",) for c in copied)  # only the built venv, no sources


def _ignored(path: str) -> bool:
    """.dockerignore semantics: the last matching pattern wins; `!` re-includes; a directory covers its files."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = Path(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates
        ):
            ignored = not negate
    return ignored


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    sources = [src for c in COMMANDS if c.cmd == "COPY" and not c.flags for src in c.value[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
    package = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tiergate").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert package and not [p for p in package if _ignored(p)]  # the whole package, data files included
    for kept_out in ("tests/conftest.py", "tiergate.db", "tiergate.master_key", "helm/tiergate/Chart.yaml"):
        assert _ignored(kept_out)


def test_only_runtime_extras_are_installed() -> None:
    (install,) = [c for c in COMMANDS if c.cmd == "RUN" and "pip install" in c.value[0]]
    match = re.search(r'"\.\[([^\]]+)\]"', _expand(install.value[0]))
    assert match, install.original
    extras = set(match.group(1).split(","))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared) and "dev" not in extras
    assert {"otel", "semantic", "learning"} <= extras  # tracing, the semantic cache, the promote job


def test_the_process_runs_as_a_numeric_non_root_user() -> None:
    (user,) = _final("USER")
    uid = user.value[0].split(":")[0]
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit() and int(uid) != 0


def test_the_entry_point_is_tiergate_serve_on_all_interfaces_with_workers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (entry,) = _final("ENTRYPOINT")
    (cmd,) = _final("CMD")
    assert entry.json and entry.value == ("tiergate",)  # exec form: signals reach tiergate, not a shell
    env = _env()
    assert env["TIERGATE_HOST"] == "0.0.0.0" and "TIERGATE_WORKERS" in env
    for name, value in env.items():
        if name.startswith("TIERGATE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("TIERGATE_WORKERS", "3")  # as `docker run -e TIERGATE_WORKERS=3` would
    args = build_parser().parse_args(list(cmd.value))
    assert args.command == "serve"
    assert (args.host, args.port, args.workers) == ("0.0.0.0", int(env["TIERGATE_PORT"]), 3)
    exposed = {p for c in _final("EXPOSE") for p in c.value}
    assert env["TIERGATE_PORT"] in exposed


def _healthcheck() -> list[str]:
    (check,) = _final("HEALTHCHECK")
    assert check.value[0] == "CMD" and check.json
    assert "--interval=30s" in check.flags
    return list(check.value[1:])


def test_the_healthcheck_asks_healthz_and_fails_when_the_gateway_is_down(tmp_path: Path) -> None:
    command = _healthcheck()
    assert command[0] == "python" and "/healthz" in command[-1]
    port = free_port()
    env = {**os.environ, "TIERGATE_PORT": str(port)}
    local = [sys.executable, *command[1:]]
    down = subprocess.run(local, env=env, capture_output=True, timeout=30)
    assert down.returncode != 0
    serve = [sys.executable, "-m", "tiergate", "serve", "--port", str(port)]
    with running(
        serve, url=f"http://127.0.0.1:{port}/healthz", cwd=tmp_path, env={"TIERGATE_MASTER_KEY": "sk-x"}
    ):
        up = subprocess.run(local, env=env, capture_output=True, timeout=30)
    assert up.returncode == 0, up.stderr


def test_the_offline_checks_run_at_build_time_are_real(tmp_path: Path) -> None:
    checks = [c for c in FINAL if c.cmd == "RUN" and "--network=none" in c.flags]
    assert len(checks) == 2  # token counting and the embedding model, proven without a network
    for check in checks:
        argv = shlex.split(check.value[0])
        assert argv[0] == "python"
        done = subprocess.run(
            [sys.executable, *argv[1:]], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
