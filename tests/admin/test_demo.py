"""`tiergate demo` as a real process, used by the official `openai` SDK like the banner says."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import httpx
import openai

from tests.support import free_port, running


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
        proc.send_signal(signal.SIGINT)  # Ctrl+C, as the banner says
        assert proc.wait(timeout=20) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert (tmp_path / "tiergate-demo.db").exists()
    # The next run keeps the master key (scripts and SDK clients made with it go on working) and says so.
    with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=tmp_path, output=log) as proc:
        assert f"Master key: {found.group(1)}\n  (the same as in the last run;" in log.read_text()
        models = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {found.group(1)}"})
        assert models.status_code == 200
