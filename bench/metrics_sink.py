"""What observability costs on the request path, in µs per call, each hook timed in isolation.

    python bench/metrics_sink.py                 # every hook, single-process and multiprocess metrics
    python bench/metrics_sink.py --number 50000  # more calls per timing (default 20,000; best of 5)

The gateway's budget is ~650 µs of CPU per request (>= 1,500 req/s on one core); the metrics sink runs on
every answered call, the phases and the overhead header on every call, the access log and tracing only
when switched on. Multiprocess figures come from a child process started with PROMETHEUS_MULTIPROC_DIR set
(prometheus_client picks its value store at import), as `tiergate serve --workers N` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from itertools import cycle
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.responses import Response

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.app import _stamp_overhead
from tiergate.gateway.errors import RateLimited
from tiergate.gateway.telemetry.logs import AccessLog, configure_logging
from tiergate.gateway.telemetry.metrics import Metrics


def _records(n: int = 60) -> list[CallRecord]:
    """Answered calls spread over 20 tenants and 3 tier/model pairs, as a busy gateway sees them."""
    models = [("student", "gpt-4o-mini"), ("ta", "gpt-4.1-mini"), ("teacher", "gpt-4o")]
    out = []
    for i in range(n):
        tier, model = models[i % 3]
        out.append(
            CallRecord(
                request_id=f"req_{i}",
                endpoint="chat",
                principal=Principal("key", f"tenant-{i % 20}", f"key-{i}"),
                requested_model="auto",
                started_at=time.time(),
                started_perf=time.perf_counter(),
                tier=tier,
                model=model,
                deployment_id=f"{tier}/{model}#0",
                prompt_tokens=120 + i,
                completion_tokens=40,
                cost_nano=123_000,
                latency_s=0.8,
                upstream_s=0.7995,
                route_reason="cheapest tier",
            )
        )
    return out


def _per_call_us(fn: Callable[[], object], number: int) -> float:
    fn()  # first call creates the label children: steady state is what every later call pays
    return min(timeit.Timer(fn).repeat(repeat=5, number=number)) / number * 1e6


def measure(number: int) -> dict[str, float]:
    metrics = Metrics(
        deployments=["student/gpt-4o-mini#0", "ta/gpt-4.1-mini#0"],
        multiproc_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
    )
    records = cycle(_records())
    refused = CallRecord(
        request_id="r", endpoint="chat", principal=Principal("key", "tenant-1", "k"), requested_model="auto",
        started_at=time.time(), status_code=429, outcome="refused", error="rate_limit_exceeded",
    )  # fmt: skip
    error = RateLimited("slow down", retry_after_s=1)
    results = {
        "metrics sink (answered call)": _per_call_us(lambda: metrics.sink(next(records)), number),
        "metrics refusal hook": _per_call_us(lambda: metrics.refusal(refused, error), number),
    }
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return results

    def three_phases() -> None:
        record = next(records)
        for name in ("auth", "route", "upstream"):
            with record.phase(name):
                pass
        record.phases.clear()

    response = Response(b"{}")
    results["3 phases timed (auth, route, upstream)"] = _per_call_us(three_phases, number)
    results["x-tiergate-overhead-ms header"] = _per_call_us(
        lambda: _stamp_overhead(response, next(records)), number
    )

    with open(os.devnull, "w") as devnull:
        configure_logging("info", "json", devnull)
        access = AccessLog()
        results["access log line (json, when on)"] = _per_call_us(
            lambda: access.sink(next(records)), number // 4
        )
        configure_logging("info", "text", devnull)
        results["access log line (text, when on)"] = _per_call_us(
            lambda: access.sink(next(records)), number // 4
        )
        logging.getLogger().handlers.clear()
    results.update(_tracing(records, number // 10))
    return results


def _tracing(records: cycle[CallRecord], number: int) -> dict[str, float]:
    """The tracing sink with the SDK's batch processor and an exporter that drops everything."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        from tiergate.gateway.config.settings import Settings
        from tiergate.gateway.telemetry.otel import Tracing
    except ImportError:
        return {}

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    tracing = Tracing(provider, Settings())

    def traced() -> None:
        record = next(records)
        for name in ("auth", "route", "upstream"):
            with record.phase(name):
                pass
        tracing.sink(record)
        record.phases.clear()

    try:
        return {"tracing sink, 4 spans (when on)": _per_call_us(traced, number)}
    finally:
        provider.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing (best of 5 timings)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the multiprocess child
    args = parser.parse_args()
    results = measure(args.number)
    if args.json:
        print(json.dumps(results))
        return
    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.run(
            [sys.executable, __file__, "--json", "--number", str(args.number)],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    multi = json.loads(child.stdout)
    print(f"{'hook':<42} {'µs/call':>8}")
    for name, us in results.items():
        print(f"{name:<42} {us:>8.2f}")
    for name, us in multi.items():
        print(f"{name + ' [multiprocess]':<42} {us:>8.2f}")


if __name__ == "__main__":
    main()
