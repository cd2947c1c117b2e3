"""Two replicas versus one on this machine's two cores, and the overhead histogram versus measured overhead.

    python bench/replicas.py                              # 3 repeats, 10 s per measurement, 1/8/64 connections
    python bench/replicas.py --nice -10 --pin --repeat 5 --output /tmp/replicas.json

Production topology: `tiergate serve` processes on PostgreSQL (a database of the benchmark's own, dropped at
the end) and Redis (a key prefix of its own, deleted at the end), a virtual key with RPM, TPM and a budget
(every request runs the admission and settlement scripts and writes a ledger row), a static nginx upstream,
wrk as the client. Two replicas are two independent processes, one worker each, as two pods would be; the
client balances them (one wrk per replica, each with half the connections), so no load balancer process
costs CPU. The gateways share the two cores with nginx, wrk, Redis and PostgreSQL (and whatever else runs
on the machine), so the gain of a second replica is bounded by what the rest leaves free.

Overhead: each replica's `tiergate_gateway_overhead_seconds` histogram (time in the gateway minus time waiting
on the upstream) is read from /metrics before and after a measurement; its mean over the measurement is
compared with the overhead the client sees: mean latency through the gateway minus mean latency straight at
nginx, at the same concurrency, in the same repeat (means by Little's law: connections / request rate; wrk's
own mean is corrected for coordinated omission). The difference is split, with the duration histogram, into
what the gateway counts as waiting on the upstream beyond the upstream's own time, and what happens outside
the app (see `summarize`). A second reference is a bare pass-through proxy on the same HTTP stack (uvicorn,
one aiohttp session), pinned like one replica: gateway minus pass-through is what tiergate's own work adds
to a client's latency, which is what the histogram is meant to show. With many connections the client's
figures also hold the time requests queue for the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
MASTER = "sk-bench-master-0123456789"
# --pin: the client side (this script, wrk, nginx) on core 1; one replica alone on core 0, two on a core each.
CLIENT_CORE = 1
PINNED: dict[int, list[int | None]] = {1: [0], 2: [0, 1]}
ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1735689600, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A gateway routes each request to a tier."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 21, "completion_tokens": 12, "total_tokens": 33},
}, separators=(",", ":"))  # fmt: skip
BODY = json.dumps({
    "model": "student", "max_tokens": 64, "temperature": 0.2,
    "messages": [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Explain in one sentence what a tiered LLM gateway does."}],
}, separators=(",", ":"))  # fmt: skip
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests":%d,"duration_us":%d,"errors":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(99)))
end
"""
# The same HTTP plumbing as the gateway (uvicorn with uvloop and httptools, one aiohttp session to the
# upstream) and nothing else: the second reference for the overhead, with the gateway's hops but none of its work.
PASSTHROUGH = """
import os, aiohttp, uvicorn

UPSTREAM = os.environ["BENCH_UPSTREAM"] + "/v1/chat/completions"
session = None

async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await session.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    if scope["path"] == "/healthz":
        body = b"ok"
    else:
        chunks = [(await receive()).get("body", b"")]
        async with session.post(UPSTREAM, data=b"".join(chunks), headers={"content-type": "application/json"}) as r:
            body = await r.read()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
"""
HISTOGRAMS = ("tiergate_gateway_overhead_seconds", "tiergate_request_duration_seconds")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _get(url: str, key: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"} if key else {})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _post(url: str, doc: dict[str, Any]) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST", headers=headers)
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_niceness(nice: int) -> int:
    """This process's niceness and its session's autogroup's (with autogroup scheduling on, sessions compete
    with each other first); returns the autogroup's previous value."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    autogroup = Path("/proc/self/autogroup")
    if not autogroup.exists():
        return 0
    previous = int(autogroup.read_text().split()[-1])
    autogroup.write_text(str(nice))
    return previous


def _child_setup(core: int | None) -> Callable[[], None]:
    """For a child in a session of its own: on `core` (None: wherever this run may go), and with this run's
    niceness for its session's autogroup too."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)

    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        if nice:
            set_niceness(nice)

    return setup


class Process:
    """A child in its own session, stopped with its whole group; `cpu_s` sums it and its descendants."""

    def __init__(
        self, args: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None,
        core: int | None = None,
    ) -> None:  # fmt: skip
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
                env={**os.environ, **(env or {})}, preexec_fn=_child_setup(core),
            )  # fmt: skip
        self.log = log

    def wait_ready(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while _get(url)[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{url} never answered:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def cpu_s(self) -> float:
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                parents[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
        tree, frontier = {self.proc.pid}, {self.proc.pid}
        while frontier:
            frontier = {p for p, parent in parents.items() if parent in frontier and p not in tree}
            tree |= frontier
        return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def nginx(workdir: Path, core: int | None) -> Iterator[str]:
    """A static upstream answering every chat completion with the same answer (with usage)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = _free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""worker_processes 1; daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {prefix}/tmp; keepalive_requests 100000000; keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/chat/completions {{ default_type application/json; return 200 '{ANSWER}'; }}
    location = /healthz {{ return 200 "ok"; }}
  }}
}}
""")
    args = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    server = Process(args, prefix / "stdout.log", core=core)
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def wrk(url: str, key: str, connections: int, duration_s: float, script: Path) -> dict[str, float]:
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(duration_s)}s", "--timeout=10s", "-s", str(script), url],
        env={**os.environ, "BENCH_BODY": BODY, "BENCH_KEY": key}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT "))
    doc = json.loads(line.removeprefix("BENCH_RESULT "))
    rps = doc["requests"] / (doc["duration_us"] / 1e6)
    return {
        "rps": rps,
        "requests": doc["requests"],
        "errors": doc["errors"],
        # Every connection always has one request out, so by Little's law the mean latency is this.
        "mean_ms": connections / rps * 1000,
        "p99_ms": doc["p99_us"] / 1000,
    }


def histograms(base: str) -> dict[str, float]:
    """Sum (s) and count of the chat endpoint's overhead and duration histograms, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = _get(base + "/metrics", MASTER, timeout=10)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out = {f"{name}_{part}": 0.0 for name in HISTOGRAMS for part in ("sum", "count")}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.labels.get("endpoint") == "chat" and sample.name in out:
                out[sample.name] += sample.value
    return out


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def busy_cores(sample_s: float = 2.0) -> float:
    """Cores in use by anything over `sample_s` (taken while this run is idle), from /proc/stat."""

    def totals() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, all0 = totals()
    time.sleep(sample_s)
    busy1, all1 = totals()
    return (busy1 - busy0) / max(1, all1 - all0) * (os.cpu_count() or 1)


class Stack:
    """The benchmark's database, Redis prefix and gateway config; gateways started on demand."""

    def __init__(self, workdir: Path, postgres: str, redis_url: str) -> None:
        self.workdir = workdir
        base, _, _ = postgres.rpartition("/")
        self.admin_url, self.database = postgres, f"tiergate_bench_{uuid.uuid4().hex[:10]}"
        self.database_url = f"{base}/{self.database}"
        self.redis_url, self.prefix = redis_url, f"tgbench:{uuid.uuid4().hex[:10]}:"
        self.config = workdir / "tiergate.yaml"
        self.script = workdir / "chat.lua"
        self.script.write_text(WRK_SCRIPT)
        self.key = ""

    async def _sql(self, statement: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def open(self, upstream: str) -> None:
        asyncio.run(self._sql(f'CREATE DATABASE "{self.database}"'))
        self.config.write_text(yaml.safe_dump({
            "master_key": MASTER, "database_url": self.database_url, "redis_url": self.redis_url,
            "redis_prefix": self.prefix, "access_log": False,
            "tiers": {"student": [{"model": "bench-model", "api_base": upstream + "/v1",
                                   "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.6}]},
        }))  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "tiergate", "db", "upgrade", "--config", str(self.config)],
            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True,
        )  # fmt: skip

    def close(self) -> None:
        import redis

        asyncio.run(self._sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        client = redis.Redis.from_url(self.redis_url)
        names = list(client.scan_iter(f"{self.prefix}*"))
        if names:
            client.delete(*names)
        client.close()

    @contextlib.contextmanager
    def gateways(self, cores: list[int | None]) -> Iterator[list[tuple[str, Process]]]:
        """One replica per entry of `cores` (where it runs), each `tiergate serve` with one worker in a
        directory of its own."""
        started: list[tuple[str, Process]] = []
        try:
            for core in cores:
                port = _free_port()
                workdir = self.workdir / f"replica-{port}"
                workdir.mkdir()
                args = [sys.executable, "-m", "tiergate", "serve", "--config", str(self.config),
                        "--port", str(port)]  # fmt: skip
                server = Process(args, workdir / "output.log", env={"PYTHONPATH": str(REPO)}, cwd=workdir,
                                 core=core)  # fmt: skip
                started.append((f"http://127.0.0.1:{port}", server))
                server.wait_ready(started[-1][0] + "/readyz")
            if not self.key:
                base = started[0][0]
                tenant = _post(base + "/admin/tenants", {"name": "bench", "rpm": 10**8, "tpm": 10**11})
                self.key = _post(base + "/admin/keys", {
                    "tenant_id": tenant["id"], "rpm": 10**8, "tpm": 10**11, "budget_usd": 10**6,
                    "budget_period": "monthly",
                })["key"]  # fmt: skip
            yield started
        finally:
            for _, server in started:
                server.stop()


@contextlib.contextmanager
def passthrough(workdir: Path, upstream: str, core: int | None) -> Iterator[str]:
    script = workdir / "passthrough.py"
    script.write_text(PASSTHROUGH)
    port = _free_port()
    env = {"BENCH_UPSTREAM": upstream, "BENCH_PORT": str(port)}
    server = Process([sys.executable, str(script)], workdir / "passthrough.log", env=env, core=core)
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.stop()


def measure_gateways(
    stack: Stack, replicas: list[tuple[str, Process]], connections: int, duration_s: float
) -> dict[str, Any]:
    """wrk against every replica at once, the connections split between them; the figures added up."""
    shares = [connections // len(replicas) + (i < connections % len(replicas)) for i in range(len(replicas))]
    targets = [(base, server, share) for (base, server), share in zip(replicas, shares, strict=True) if share]
    before = [(histograms(base), server.cpu_s()) for base, server, _ in targets]

    def load(target: tuple[str, Process, int]) -> dict[str, float]:
        return wrk(target[0] + "/v1/chat/completions", stack.key, target[2], duration_s, stack.script)

    with ThreadPoolExecutor(len(targets)) as pool:
        loads = list(pool.map(load, targets))
    after = [(histograms(base), server.cpu_s()) for base, server, _ in targets]

    def delta(name: str) -> float:
        return sum(a[0][name] - b[0][name] for a, b in zip(after, before, strict=True))

    def mean_ms(histogram: str) -> float:
        return delta(histogram + "_sum") / max(1.0, delta(histogram + "_count")) * 1000

    requests = sum(x["requests"] for x in loads)
    rps = sum(x["rps"] for x in loads)
    cpu_s = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return {
        "rps": rps,
        "per_replica_rps": [x["rps"] for x in loads],
        "requests": requests,
        "errors": sum(x["errors"] for x in loads),
        "mean_ms": connections / rps * 1000,  # Little's law over all the connections
        "p99_ms": max(x["p99_ms"] for x in loads),
        "cpu_us_per_req": cpu_s / max(1, requests) * 1e6,
        "histogram_mean_ms": mean_ms("tiergate_gateway_overhead_seconds"),
        "duration_mean_ms": mean_ms("tiergate_request_duration_seconds"),
        "histogram_count": delta("tiergate_gateway_overhead_seconds_count"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    conns = [int(c) for c in args.connections.split(",")]
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="tiergate-replicas-") as tmp,
        nginx(Path(tmp), CLIENT_CORE if args.pin else None) as upstream,
    ):
        stack = Stack(Path(tmp), args.postgres, args.redis)
        stack.open(upstream)
        try:
            for repeat in range(args.repeat):
                one: dict[str, Any] = {"busy_cores_before": busy_cores(), "load_before": loadavg()}
                direct = upstream + "/v1/chat/completions"
                one["direct"] = {c: wrk(direct, "-", c, args.duration, stack.script) for c in conns}
                with passthrough(Path(tmp), upstream, PINNED[1][0] if args.pin else None) as proxy:
                    wrk(proxy, "-", 4, args.warmup, stack.script)
                    one["passthrough"] = {c: wrk(proxy, "-", c, args.duration, stack.script) for c in conns}
                for n in (1, 2):
                    with stack.gateways(PINNED[n] if args.pin else [None] * n) as replicas:
                        for base, _ in replicas:  # connections, caches and the tokenizer warmed up
                            wrk(base + "/v1/chat/completions", stack.key, 4, args.warmup, stack.script)
                        one[f"replicas_{n}"] = {
                            c: measure_gateways(stack, replicas, c, args.duration) for c in conns
                        }
                one["load_after"] = loadavg()
                runs.append(one)
                print(f"repeat {repeat + 1}/{args.repeat} done; load {one['load_after']}", file=sys.stderr)
        finally:
            stack.close()
    return {
        "connections": conns,
        "duration_s": args.duration,
        "runs": runs,
        "summary": summarize(runs, conns),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], conns: list[int]) -> dict[str, Any]:
    """Medians (and ranges) over the repeats; each repeat's gateway figures are paired with its own direct run.

    The measured overhead is split into what the histogram sees and what it cannot:
        gateway mean - direct mean  =  overhead histogram
            + upstream window beyond the upstream's own time (duration histogram - overhead histogram -
              direct mean): the gateway's own side of the upstream call - sending it, the HTTP client's
              work, being woken up - which it counts as time waiting on the upstream
            + outside the app (gateway mean - duration histogram): uvicorn's HTTP parsing and writing, the
              loopback hops to and from the client, waits for a core
    """
    out: dict[str, Any] = {}
    for c in conns:
        row: dict[str, Any] = {
            "direct_rps": _spread([r["direct"][c]["rps"] for r in runs]),
            "passthrough_rps": _spread([r["passthrough"][c]["rps"] for r in runs]),
            "passthrough_overhead_ms": _spread(
                [r["passthrough"][c]["mean_ms"] - r["direct"][c]["mean_ms"] for r in runs]
            ),
        }
        for n in (1, 2):
            k = f"replicas_{n}"
            pairs = [(r[k][c], r["direct"][c]) for r in runs]
            measured = [g["mean_ms"] - d["mean_ms"] for g, d in pairs]
            row[f"{k}_rps"] = _spread([g["rps"] for g, _ in pairs])
            row[f"{k}_cpu_us_per_req"] = _spread([g["cpu_us_per_req"] for g, _ in pairs])
            row[f"{k}_errors"] = sum(g["errors"] for g, _ in pairs)
            row[f"{k}_measured_overhead_ms"] = _spread(measured)
            row[f"{k}_histogram_overhead_ms"] = _spread([g["histogram_mean_ms"] for g, _ in pairs])
            row[f"{k}_histogram_over_measured"] = _spread(
                [g["histogram_mean_ms"] / m for (g, _), m in zip(pairs, measured, strict=True)]
            )
            row[f"{k}_upstream_window_ms"] = _spread(
                [g["duration_mean_ms"] - g["histogram_mean_ms"] - d["mean_ms"] for g, d in pairs]
            )
            row[f"{k}_outside_app_ms"] = _spread([g["mean_ms"] - g["duration_mean_ms"] for g, _ in pairs])
            beyond = [r[k][c]["mean_ms"] - r["passthrough"][c]["mean_ms"] for r in runs]
            row[f"{k}_beyond_passthrough_ms"] = _spread(beyond)
            row[f"{k}_histogram_over_beyond_passthrough"] = _spread(
                [g["histogram_mean_ms"] / b for (g, _), b in zip(pairs, beyond, strict=True)]
            )
        row["gain_2_over_1"] = _spread([r["replicas_2"][c]["rps"] / r["replicas_1"][c]["rps"] for r in runs])
        out[str(c)] = row
    return out


def _fmt(m: dict[str, float], digits: int = 0) -> str:
    return f"{m['median']:,.{digits}f} ({m['min']:,.{digits}f}-{m['max']:,.{digits}f})"


def print_table(result: dict[str, Any]) -> None:
    runs = result["runs"]
    print(f"nice {result['nice']}, pinned: {result['pinned']}, {result['duration_s']:g} s per measurement")
    print(f"load average before/after each repeat: {[(r['load_before'], r['load_after']) for r in runs]}")
    print(f"cores busy just before each repeat: {[round(r['busy_cores_before'], 2) for r in runs]}")
    print("\nthroughput, req/s: medians over the repeats, (min-max) beside them")
    print(
        "| conns | direct | pass-through | 1 replica | 2 replicas | 2 / 1 | CPU µs/req, 1 / 2 replicas | errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, row in result["summary"].items():
        cpu = f"{row['replicas_1_cpu_us_per_req']['median']:,.0f} / {row['replicas_2_cpu_us_per_req']['median']:,.0f}"
        print(f"| {c} | {_fmt(row['direct_rps'])} | {_fmt(row['passthrough_rps'])} | {_fmt(row['replicas_1_rps'])} "
              f"| {_fmt(row['replicas_2_rps'])} | {_fmt(row['gain_2_over_1'], 2)} | {cpu} "
              f"| {row['replicas_1_errors'] + row['replicas_2_errors']} |")  # fmt: skip
    print("\noverhead, ms per request (medians); ratios with their range over the repeats")
    print("| conns | replicas | histogram | gateway - direct | histogram / that | upstream window | outside the app "
          "| pass-through - direct | gateway - pass-through | histogram / that |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, row in result["summary"].items():
        for n in (1, 2):
            k = f"replicas_{n}"
            print(f"| {c} | {n} | {row[k + '_histogram_overhead_ms']['median']:.3f} "
                  f"| {row[k + '_measured_overhead_ms']['median']:.3f} | {_fmt(row[k + '_histogram_over_measured'], 2)} "
                  f"| {row[k + '_upstream_window_ms']['median']:.3f} | {row[k + '_outside_app_ms']['median']:.3f} "
                  f"| {row['passthrough_overhead_ms']['median']:.3f} | {row[k + '_beyond_passthrough_ms']['median']:.3f} "
                  f"| {_fmt(row[k + '_histogram_over_beyond_passthrough'], 2)} |")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description="Two replicas versus one; the overhead histogram versus measured")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load after each start")
    p.add_argument("--connections", default="1,8,64", help="comma-separated wrk connection counts")
    p.add_argument("--postgres", default=os.environ.get("TIERGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
                   help="a database to connect to for creating (and dropping) the benchmark's own")  # fmt: skip
    p.add_argument("--redis", default=os.environ.get("TIERGATE_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    p.add_argument("--pin", action="store_true",
                   help="the client side (this script, wrk, nginx) on core 1, one replica alone on core 0, two "
                        "replicas on a core each (default: nothing pinned)")  # fmt: skip
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of this run, what it starts and their sessions' autogroups (e.g. -10 on a "
                        "machine shared with other work; negative values need root)")  # fmt: skip
    p.add_argument("--output", type=Path, help="also write every figure as JSON here")
    args = p.parse_args()
    missing = [
        tool for tool in ("nginx", "wrk") if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())
    ]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install -y nginx wrk)", file=sys.stderr)
        return 2
    if args.pin:
        os.sched_setaffinity(0, {CLIENT_CORE})  # inherited by wrk
    restore = set_niceness(args.nice) if args.nice else None
    try:
        result = run(args)
    finally:
        if restore is not None:
            set_niceness(restore)
    result["nice"], result["pinned"] = args.nice, args.pin
    print_table(result)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
