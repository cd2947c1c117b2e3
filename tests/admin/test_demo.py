"""`tiergate demo` as a real process, used by the official `openai` SDK like the banner says."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.support import ROOT, free_port, running, wait_for
from tiergate.admin.commands.demo import demo_document, write_demo_config


def test_demo_answers_an_sdk_call_with_a_labelled_stand_in_and_stops(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    args = [sys.executable, "-m", "tiergate", "demo", "--port", str(port)]
    # The demo keeps its SQLite file in the working directory: the test's own.
    with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=tmp_path, output=log) as proc:
        banner = log.read_text()
        url = f"http://127.0.0.1:{port}/v1"
        assert url in banner
        found = re.search(r"Bearer (sk-tg-master-[\w-]+)", banner)
        assert found is not None, banner
        assert f"Master key: {found.group(1)}\n  (created now; kept in ./tiergate-demo.master_key" in banner
        client = openai.OpenAI(base_url=url, api_key=found.group(1), max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="teacher", messages=[{"role": "user", "content": "hi there"}]
        )
        completion = raw.parse()
        assert (
            completion.choices[0].message.content
            == "[stand-in teacher model, not a real LLM] You asked: hi there"
        )
        assert completion.model == "standin-teacher" and raw.headers["x-tiergate-tier"] == "teacher"
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        client.close()
        proc.send_signal(signal.SIGINT)  # Ctrl+C, as the banner says
        assert proc.wait(timeout=20) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert (tmp_path / "tiergate-demo.db").exists()
    # The next run keeps the master key (scripts and SDK clients made with it go on working) and says so.
    with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=tmp_path, output=log) as proc:
        assert f"Master key: {found.group(1)}\n  (the same as in the last run;" in log.read_text()
        models = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {found.group(1)}"})
        assert models.status_code == 200


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A `tiergate` command as a user types it in the demo's folder: no --config."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIERGATE_CONFIG", "TIERGATE_MASTER_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "tiergate", *argv],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_the_cli_in_the_demos_folder_works_on_the_demos_database(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    args = [sys.executable, "-m", "tiergate", "demo", "--port", str(port)]
    with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=tmp_path, output=log):
        assert "The CLI: the demo's config is ./tiergate.yaml (written now)" in log.read_text()
        made = cli("tenants", "create", "acme", "--json", cwd=tmp_path)
        assert made.returncode == 0 and made.stderr == "", made.stderr  # nothing new was created
        tenant = json.loads(made.stdout)["id"]
        key = cli(
            "keys",
            "create",
            "--tenant",
            tenant,
            "--allowed-models",
            "standin-student",
            "--json",
            cwd=tmp_path,
        )
        assert key.returncode == 0, key.stderr
        secret = json.loads(key.stdout)["key"]
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0) as client:
            # The running demo sees the new key at its next key poll.
            answer = wait_for(
                lambda: _answered(client), what="the demo to accept the key made by the CLI", timeout=20
            )
            assert answer.startswith("[stand-in student model")
        report = wait_for(
            lambda: json.loads(cli("report", "cost", "--tenant", tenant, "--json", cwd=tmp_path).stdout)[
                "total"
            ]["requests"],
            what="the demo's request in the CLI's cost report",
        )
        assert report == 1
    assert not (tmp_path / "tiergate.db").exists() and not (tmp_path / "tiergate.master_key").exists()


def _answered(client: openai.OpenAI) -> str | None:
    try:
        reply = client.chat.completions.create(
            model="standin-student", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.AuthenticationError:
        return None
    return reply.choices[0].message.content


def test_a_tiergate_yaml_of_the_users_own_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    own = "master_key: env:MINE\n"
    (tmp_path / "tiergate.yaml").write_text(own)
    written = write_demo_config(demo_document(1234, "sk-tg-master-x"))
    assert written == Path("tiergate-demo.yaml") and (tmp_path / "tiergate.yaml").read_text() == own
    assert written.stat().st_mode & 0o077 == 0  # it holds the master key
    assert yaml.safe_load(written.read_text())["database_url"] == "sqlite:///./tiergate-demo.db"
    # A ./tiergate.yaml the demo wrote is its own to rewrite.
    (tmp_path / "tiergate.yaml").unlink()
    assert write_demo_config(demo_document(1234, "k")) == Path("tiergate.yaml")
    assert write_demo_config(demo_document(5678, "k")) == Path("tiergate.yaml")
    assert "127.0.0.1:5678" in (tmp_path / "tiergate.yaml").read_text()
