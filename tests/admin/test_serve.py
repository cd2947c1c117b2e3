"""`tiergate serve --workers 2` as a real process: metrics add up across workers, logs come from each."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict

from tests.support import fake_upstream, free_port, metric, parse_metrics, running, wait_for

pytestmark = pytest.mark.e2e
MASTER = "sk-serve-master-31337"
UPSTREAM_KEY = "sk-serve-upstream-SECRET"
PROMPT = "PROMPT-TEXT-2718 from a worker test"


def _config(
    upstream: str, metrics_port: int, workdir: Path, redis_url: str, redis_prefix: str
) -> dict[str, Any]:
    deployment = {
        "model": "student-1",
        "api_base": upstream,
        "api_key": UPSTREAM_KEY,
        "input_cost_per_mtok": 1,
    }
    return {
        "master_key": MASTER,
        "tiers": {"student": [deployment]},
        "access_log": True,
        "log_format": "json",
        "metrics_port": metrics_port,
        # Several workers must share limits and budgets: serve refuses --workers > 1 without Redis.
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "database_url": f"sqlite:///{workdir / 'tiergate.db'}",
    }


def _requests_per_worker(directory: Path) -> dict[str, float]:
    """tiergate_requests_total as each worker process wrote it to its own file."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        total = 0.0
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "tiergate_requests_total":
                total += value
        counts[path.stem.removeprefix("counter_")] = total
    return counts


class Drain:
    """Reads a child's output as it comes, so a chatty server never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._chunks.append(line)

    def stop(self) -> str:
        """SIGTERM the child, wait for it to exit and return everything it wrote."""
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self._thread.join(timeout=10)
        return b"".join(self._chunks).decode()


def _call(url: str) -> int:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
    # A fresh connection each time, so the kernel hands calls to whichever worker accepts first.
    with httpx.Client(timeout=10) as client:
        return client.post(url, json=body, headers={"authorization": f"Bearer {MASTER}"}).status_code


def test_two_workers_export_one_sum_on_the_main_and_the_metrics_port(
    tmp_path: Path, redis_server_url: str, redis_prefix: str
) -> None:
    metrics_dir, temp = tmp_path / "metrics", tmp_path / "tmp"
    metrics_dir.mkdir()
    temp.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale values of an earlier run")
    port, metrics_port = free_port(), free_port()
    sent = 0
    with fake_upstream() as upstream:
        config = tmp_path / "tiergate.yaml"
        config.write_text(
            yaml.safe_dump(_config(upstream, metrics_port, tmp_path, redis_server_url, redis_prefix))
        )
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port), "--workers", "2"]  # fmt: skip
        env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "TMPDIR": str(temp)}
        with running(args, url=f"http://127.0.0.1:{port}/healthz", env=env, timeout=60) as proc:
            drain = Drain(proc)
            assert not (metrics_dir / "counter_999999.db").exists()  # cleared at start
            url = f"http://127.0.0.1:{port}/v1/chat/completions"

            def both_workers_counted() -> bool:
                nonlocal sent
                with ThreadPoolExecutor(8) as pool:
                    statuses = list(pool.map(_call, [url] * 16))
                assert statuses == [200] * 16
                sent += 16
                return sum(1 for n in _requests_per_worker(metrics_dir).values() if n > 0) >= 2

            wait_for(both_workers_counted, timeout=60, interval=0, what="calls answered by both workers")
            per_worker = _requests_per_worker(metrics_dir)
            assert sum(per_worker.values()) == sent and min(per_worker.values()) < sent
            # Whichever worker answers the scrape, it reports every worker's calls.
            for _ in range(6):
                with httpx.Client() as client:
                    scraped = client.get(
                        f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {MASTER}"}
                    )
                m = parse_metrics(scraped.text)
                assert metric(m, "tiergate_requests_total", status="200") == sent
                assert metric(m, "tiergate_gateway_overhead_seconds_count") == sent
            unkeyed = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
            m = parse_metrics(unkeyed.text)
            assert metric(m, "tiergate_requests_total", status="200") == sent
            assert metric(m, "tiergate_tokens_total", type="input") > 0
            # A live gauge from each worker, summed: the deployment's breaker is closed in both.
            assert metric(m, "tiergate_upstream_circuit_open", deployment="student/student-1#0") == 0
            output = drain.stop()
    assert proc.returncode == 0
    assert "startup failed" not in output  # both workers started on the fresh database (migrated once)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "tiergate.access"]
    assert len(access) == sent
    assert Counter(line["status"] for line in access) == {200: sent}
    assert all(line["request_id"] and line["tier"] == "student" and "overhead_ms" in line for line in access)
    for secret in (MASTER, UPSTREAM_KEY, "PROMPT-TEXT-2718"):
        assert secret not in output
    assert not list(metrics_dir.glob("gauge_live*"))  # each worker withdrew its live gauges on shutdown
    assert list(temp.iterdir()) == []  # the given directory was used: no temporary one left behind


def test_without_a_multiprocess_dir_the_workers_share_a_temporary_one(
    tmp_path: Path, redis_server_url: str, redis_prefix: str
) -> None:
    port, temp = free_port(), tmp_path / "tmp"
    temp.mkdir()
    with fake_upstream() as upstream:
        config = tmp_path / "tiergate.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    **_config(upstream, free_port(), tmp_path, redis_server_url, redis_prefix),
                    "metrics_port": None,
                }
            )
        )
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port), "--workers", "2"]  # fmt: skip
        env = {"TIERGATE_LOG_FORMAT": "text", "TMPDIR": str(temp)}
        with running(args, url=f"http://127.0.0.1:{port}/healthz", env=env, timeout=60) as proc:
            drain = Drain(proc)
            (shared,) = temp.glob("tiergate-metrics-*")
            assert _call(f"http://127.0.0.1:{port}/v1/chat/completions") == 200
            assert list(shared.glob("counter_*.db"))
            scraped = httpx.get(
                f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {MASTER}"}
            )
            assert metric(parse_metrics(scraped.text), "tiergate_requests_total", status="200") == 1
            output = drain.stop()
    assert not shared.exists()  # removed at exit
    (line,) = [line for line in output.splitlines() if "tiergate.access" in line]
    assert " INFO tiergate.access: chat 200 " in line and "tier=student" in line  # the environment chose text
