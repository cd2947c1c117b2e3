"""`tiergate cache-eval`: precision and recall of the semantic cache's decision on labelled pairs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO


def _progress(stream: TextIO) -> Callable[[int, int], None]:
    """A progress line every two seconds or so, and one at the end."""
    started = time.monotonic()
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 2.0:
            return
        last[0] = now
        print(f"embedding: {done}/{total} texts ({now - started:.0f} s)", file=stream, flush=True)

    return report


def cmd_cache_eval(args: argparse.Namespace) -> int:
    from tiergate.admin.jobs.cache_eval import (
        PairsError,
        encode_texts,
        evaluate,
        format_report,
        load_pairs,
        select,
    )
    from tiergate.policies.semantic import SemanticPolicy

    try:
        policy = SemanticPolicy(
            **{
                k: v
                for k, v in (("threshold", args.threshold), ("align_threshold", args.align_threshold))
                if v is not None
            }
        )
        pairs = select(
            load_pairs(args.pairs), part=args.part, limit=args.limit, sample=args.sample, seed=args.seed
        )
    except (PairsError, ValueError) as exc:
        print(f"tiergate cache-eval: {exc}", file=sys.stderr)
        return 2
    try:
        from tiergate.gateway.routing.local_embeddings import Embedder

        embedder = Embedder(threads=args.threads, cache_size=1)
    except ImportError as exc:
        print(f"tiergate cache-eval: the local embedding model is not installed ({exc})", file=sys.stderr)
        return 2
    try:
        queries = encode_texts(
            [t for p in pairs for t in (p.text_a, p.text_b)], embedder, _progress(sys.stderr)
        )
    finally:
        embedder.close()
    report = evaluate(pairs, queries, policy)
    print(json.dumps(report.to_json()) if args.json else format_report(report))
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a cosine similarity in [-1, 1]")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive count")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cache-eval",
        help="measure the semantic cache's decision on labelled pairs",
        description="Precision, recall and false-positive rate of the semantic cache's decision on a JSON or "
        "JSON.gz list of {text_a, text_b, label} (label 1: the same question), with and without the verifier "
        "and a sweep of similarity thresholds.",
    )
    p.add_argument(
        "--pairs", required=True, metavar="FILE", help="JSON or JSON.gz list of {text_a, text_b, label}"
    )
    p.add_argument("--threshold", type=_fraction, help="minimum sentence similarity (default: the policy's)")
    p.add_argument(
        "--align-threshold", type=_fraction, help="minimum word-alignment cosine (default: the policy's)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument(
        "--part", choices=("all", "tune", "holdout"), default="all", help="a fixed half of the pairs"
    )
    p.add_argument("--limit", type=_count, help="only the first N pairs")
    p.add_argument("--sample", type=_count, help="a random sample of N pairs (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_count, default=1, help="model threads (default 1)")
    p.set_defaults(func=cmd_cache_eval)
