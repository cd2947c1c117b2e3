"""What the learning loop costs on the request path, in µs per call, each hook timed in isolation.

    python bench/learning_sinks.py                 # default 20,000 calls per timing, best of 5
    python bench/learning_sinks.py --number 100000

On the request path: the trace sink (every answered call), the trace refusal hook (every error response),
and the shadow sink (every answered call: a seeded draw per candidate, a queue put when sampled). Off it,
for scale: building one trace row in the writer (content policy, redaction, the embedding's bytes), which
happens in a worker thread before a batch insert.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import replace
from itertools import cycle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord, Phase
from tiergate.gateway.config.learning import ShadowPolicy, ShadowSection, TraceSettings
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.errors import RateLimited
from tiergate.gateway.learning.evaluation_budget import EvaluationBudget
from tiergate.gateway.learning.shadow import ShadowEvaluator
from tiergate.gateway.learning.trace_writer import TraceWriter, trace_row

PROMPT = (
    "Our invoice INV-2291 was charged twice on the card ending 4242; please refund the duplicate and confirm "
    "by e-mail to billing@example.com. " * 6
)


def _records(n: int = 60) -> list[CallRecord]:
    """Answered chat calls of 20 tenants, with a ~700-character prompt and answer each."""
    out = []
    for i in range(n):
        record = CallRecord(
            request_id=f"req_{i:08x}", endpoint="chat", principal=Principal("key", f"tenant-{i % 20}", f"key-{i}"),
            requested_model="auto", started_at=time.time(), started_perf=time.perf_counter(), tier="teacher",
            model="gpt-4o", deployment_id="teacher/gpt-4o#0", prompt_tokens=180, completion_tokens=120,
            cost_nano=1_650_000, latency_s=0.8, upstream_s=0.7995, route_reason="promotion: domain billing",
            domain="billing",
        )  # fmt: skip
        record.request_body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
        record.answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": PROMPT}, "finish_reason": "stop"}]}  # fmt: skip
        record.query_vector = np.full(384, 0.05, dtype=np.float32)
        record.phases.append(Phase("auth", 1.0, 2.0))
        out.append(record)
    return out


def _per_call_us(fn: Callable[[], object], number: int, reset: Callable[[], None]) -> float:
    def timed() -> float:
        reset()
        return timeit.Timer(fn).timeit(number)

    return min(timed() for _ in range(5)) / number * 1e6


def _shadow(policy: ShadowPolicy, number: int) -> ShadowEvaluator:
    catalog = SimpleNamespace(configured_tiers=("student", "ta", "teacher"))
    fleet: Any = SimpleNamespace(snapshot=SimpleNamespace(catalog=catalog, candidate_tiers={}))
    engine = open_engine("sqlite:///unused.db")
    calls: Any = SimpleNamespace(budget=EvaluationBudget(engine))  # the sink makes no call, counts spend
    settings = replace(ShadowSection().settings(), policy=policy, queue_size=number + 1)
    return ShadowEvaluator(
        settings, engine, calls,
        fleet=fleet, router=None, embedder=None, default_content="full",  # type: ignore[arg-type]
    )  # fmt: skip


def measure(number: int) -> dict[str, float]:
    records = cycle(_records())
    writer = TraceWriter(
        open_engine("sqlite:///unused.db"), TraceSettings(queue_size=number + 1, batch_size=10**9)
    )

    def empty_writer() -> None:
        writer._pending.clear()

    refused = next(records)
    error = RateLimited("slow down", retry_after_s=1)
    results = {
        "trace sink (answered call)": _per_call_us(lambda: writer.sink(next(records)), number, empty_writer),
        "trace refusal hook (authenticated)": _per_call_us(
            lambda: writer.refusal(refused, error), number, empty_writer
        ),
    }
    for label, policy in (
        ("shadow sink, shadowing off for the tenant", ShadowPolicy(fraction=0.0)),
        ("shadow sink, 5% sampled", ShadowPolicy(fraction=0.05)),
        ("shadow sink, 100% sampled (queue put)", ShadowPolicy(fraction=1.0)),
    ):
        shadow = _shadow(policy, number)

        def empty_queue(shadow: ShadowEvaluator = shadow) -> None:
            while not shadow._queue.empty():
                shadow._queue.get_nowait()

        results[label] = _per_call_us(lambda shadow=shadow: shadow.sink(next(records)), number, empty_queue)  # type: ignore[misc]
    rows = max(1, number // 20)
    for content in ("full", "redacted", "none"):
        results[f"trace row built by the writer, {content} [off path]"] = _per_call_us(
            lambda content=content: trace_row(next(records), content),
            rows,
            lambda: None,  # type: ignore[misc]
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing (best of 5 timings)")
    args = parser.parse_args()
    print(f"{'hook':<56} {'µs/call':>8}")
    for name, us in measure(args.number).items():
        print(f"{name:<56} {us:>8.2f}")


if __name__ == "__main__":
    main()
