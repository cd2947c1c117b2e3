"""Running one scenario once: start its process, put each workload's load on it, measure, stop it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import profile
from bench.harness.load import request_body, run_wrk
from bench.harness.procs import Server, cpu_seconds, free_port, rss_bytes, start
from bench.harness.scenario import Scenario, ScenarioError, Workload, fill
from bench.harness.ttft import TTFT, measure_ttft
from bench.harness.upstream import SSE_PATH

REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Options:
    duration_s: float
    warmup_s: float
    headline_connections: int
    sweep: bool  # every workload's `connections`, else the headline concurrency only
    ttft_requests: int
    ttft_concurrency: tuple[int, ...]
    target_core: int | None
    load_core: int | None
    litellm_python: str
    profile_dir: Path | None  # record a py-spy profile of each workload at the headline concurrency


@dataclass
class Measurement:
    workload: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    requests: int
    errors: int


@dataclass
class ScenarioRun:
    scenario: str
    startup_s: float | None = None
    rss_mb: float | None = None
    measurements: list[Measurement] = field(default_factory=list)
    ttft: dict[str, list[TTFT]] = field(default_factory=dict)  # per workload
    skipped: str | None = None  # why the scenario could not run
    busy_cores_before: float | None = None  # CPU other work used just before this run (noise indicator)


def _values(upstream: str, port: int, config: Path | None, workdir: Path, options: Options) -> dict[str, str]:
    values = {
        "UPSTREAM": upstream,
        "PORT": str(port),
        "PYTHON": sys.executable,
        "REPO": str(REPO),
        "LITELLM_PYTHON": options.litellm_python,
        "WORKDIR": str(workdir),
    }
    if config is not None:
        values["CONFIG"] = str(config)
    return values


def check_scenario(scenario: Scenario, values: Mapping[str, str]) -> str | None:
    """None when the scenario's `check` command succeeds (or it has none), else why it cannot run."""
    if scenario.check is None:
        return None
    where = scenario.source.name
    args = [fill(a, values, f"{where}:bench.check") for a in scenario.check]
    env = {**os.environ, **{k: fill(v, values, f"{where}:bench.env") for k, v in scenario.env.items()}}
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"check {args[0]} failed: {exc}"
    if done.returncode == 0:
        return None
    output = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return "check failed: " + (output[-1] if output else f"exit code {done.returncode}")


def run_setup(scenario: Scenario, values: dict[str, str], cwd: Path) -> None:
    """Run the scenario's setup commands; each JSON object printed adds its fields to `values`."""
    where = scenario.source.name
    env = {**os.environ, **{k: fill(v, values, f"{where}:bench.env") for k, v in scenario.env.items()}}
    for n, command in enumerate(scenario.setup, start=1):
        args = [fill(a, values, f"{where}:bench.setup[{n - 1}]") for a in command]
        done = subprocess.run(
            args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            output = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise ScenarioError(
                f"{where}: setup command {n} failed: " + (output[-1] if output else f"exit {done.returncode}")
            )
        try:
            printed = json.loads(done.stdout) if done.stdout.strip() else {}
        except json.JSONDecodeError:
            printed = {}
        if isinstance(printed, dict):
            for field, value in printed.items():
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    values[f"SETUP{n}_{field.upper()}"] = str(value)


def _measure(
    server: Server, url: str, workload: Workload, connections: int, env: Mapping[str, str], options: Options
) -> Measurement:
    if options.warmup_s > 0:
        run_wrk(url, script=workload.lua, connections=connections, duration_s=options.warmup_s, env=env)
    before = cpu_seconds(server.pid)
    result = run_wrk(
        url, script=workload.lua, connections=connections, duration_s=options.duration_s, env=env
    )
    used = cpu_seconds(server.pid) - before
    return Measurement(
        workload=workload.name,
        connections=connections,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        cpu_us_per_request=used / result.requests * 1e6 if result.requests else None,
        requests=result.requests,
        errors=result.errors,
    )


def _profile(
    server: Server, scenario: Scenario, url: str, workload: Workload, env: Mapping[str, str], options: Options
) -> None:
    assert options.profile_dir is not None
    raw = options.profile_dir / f"profile-{scenario.name}-{workload.name}.txt"
    recorder = profile.start_recording(server.pid, options.duration_s + 1, raw)
    time.sleep(0.5)  # let py-spy attach before the load starts
    before = cpu_seconds(server.pid)
    result = run_wrk(
        url,
        script=workload.lua,
        connections=options.headline_connections,
        duration_s=options.duration_s,
        env=env,
    )
    cpu_us = (cpu_seconds(server.pid) - before) / max(1, result.requests) * 1e6
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not raw.exists():
        print(f"    py-spy failed: {err.decode(errors='replace').strip()[-500:]}", file=sys.stderr)
        return
    summary = raw.with_name(raw.stem + "-summary.txt")
    summary.write_text(profile.report(raw.read_text(), cpu_us_per_request=cpu_us))
    print(f"    profile: {summary}", file=sys.stderr)


def run_scenario(
    scenario: Scenario,
    upstream: str,
    upstream_server: Server,
    workdir: Path,
    options: Options,
    log: Callable[[str], None],
) -> ScenarioRun:
    run = ScenarioRun(scenario.name)
    port = free_port()
    config = workdir / f"{scenario.name}.config.yaml" if scenario.process_config is not None else None
    values = _values(upstream, port, config, workdir, options)
    where = scenario.source.name
    skipped = check_scenario(scenario, values)
    if skipped:
        run.skipped = skipped
        return run
    if scenario.command is None:
        server, base = upstream_server, upstream
        run.startup_s = upstream_server.startup_s
    else:
        if config is not None and scenario.process_config is not None:
            config.write_text(fill(scenario.process_config, values, where))
        run_setup(scenario, values, workdir)
        base = f"http://127.0.0.1:{port}"
        server = start(
            scenario.name,
            [fill(a, values, f"{where}:bench.command") for a in scenario.command],
            health_url=base + scenario.health,
            log=workdir / f"{scenario.name}.log",
            env={k: fill(v, values, f"{where}:bench.env") for k, v in scenario.env.items()},
            cwd=workdir,
            core=options.target_core,
            timeout=scenario.startup_timeout_s,
        )
        run.startup_s = server.startup_s
    key = fill(scenario.key, values, f"{where}:bench.key") if scenario.key else ""
    try:
        for workload in scenario.workloads:
            url = base + workload.path
            body = request_body(workload.api, workload.model, stream=workload.stream, fields=workload.fields)
            env = {"BENCH_BODY": body.decode(), "BENCH_KEY": key}
            levels = workload.connections if options.sweep else (options.headline_connections,)
            for connections in levels:
                m = _measure(server, url, workload, connections, env, options)
                run.measurements.append(m)
                cpu = f"{m.cpu_us_per_request:.0f}" if m.cpu_us_per_request is not None else "-"
                log(
                    f"    {workload.name:<8} c={connections:<3} {m.rps:8.0f} req/s  p50 {m.p50_ms:6.2f} ms  "
                    f"p99 {m.p99_ms:6.2f} ms  cpu {cpu} us/req  errors {m.errors}"
                )
            if workload.ttft:
                headers = {"authorization": f"Bearer {key}"} if key else {}
                for concurrency in options.ttft_concurrency:
                    t = measure_ttft(
                        direct_url=upstream + SSE_PATH,
                        target_url=url,
                        target_headers=headers,
                        body=body,
                        requests=options.ttft_requests,
                        concurrency=concurrency,
                    )
                    run.ttft.setdefault(workload.name, []).append(t)
                    log(
                        f"    {workload.name:<8} TTFT c={concurrency:<3} direct {t.direct_ms:.3f} ms, "
                        f"through {t.target_ms:.3f} ms: +{t.added_ms:.3f} ms ({t.errors} errors)"
                    )
            if options.profile_dir is not None and scenario.command is not None:
                _profile(server, scenario, url, workload, env, options)
        run.rss_mb = rss_bytes(server.pid) / 2**20
    finally:
        if server is not upstream_server:
            server.stop()
    return run
