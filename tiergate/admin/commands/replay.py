"""`tiergate replay --outcomes FILE.jsonl`: the learning loop on recorded outcomes (admin/jobs/replay.py)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TextIO

from tiergate.admin.jobs.replay_config import ReplayConfig

DEFAULTS = ReplayConfig()
DEFAULT_CACHE = Path.home() / ".cache" / "tiergate" / "embeddings"


class ProgressBar:
    """A one-line progress bar on a terminal stream, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self.stream, self.label, self.width = stream, label, width
        self.started = time.monotonic()
        self.drawn_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.drawn_at < 0.1:
            return
        self.drawn_at = now
        filled = self.width * done // max(total, 1)
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {elapsed:.0f}s elapsed, {eta:.0f}s left ")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _print_report(metrics: dict[str, object], events: list[dict[str, object]]) -> None:
    m = metrics
    print(f"requests            {m['requests']}")
    print(f"all-teacher cost    ${m['teacher_cost']:.4f}")
    print(f"serving cost        ${m['serving_cost']:.4f}")
    kinds, tiers = m["evaluation_by_kind"], m["evaluation_by_tier"]
    assert isinstance(kinds, dict) and isinstance(tiers, dict)
    print(f"evaluation cost     ${m['evaluation_cost']:.4f}", end="")
    print(f" (shadow ${kinds['shadow']:.4f}, judge ${kinds['judge']:.4f}; ", end="")
    print(", ".join(f"{t} ${c:.4f}" for t, c in tiers.items()) + ")")
    print(f"total cost          ${m['total_cost']:.4f}  ({m['cost_saved_fraction']:.1%} saved)")
    print(f"quality             {m['quality']:.4f} vs teacher {m['teacher_quality']:.4f}", end="")
    print(f" ({m['quality_ratio']:.1%})")
    print(f"second half         {m['steady_saved_fraction']:.1%} saved", end="")
    print(f" at {m['steady_quality_ratio']:.1%} quality")
    print(f"promotions          {m['promotions']} ({m['false_promotions']} false)")
    if m["first_promotion"] is not None:
        print(f"first promotion   after {m['first_promotion']} requests")
    for e in events:
        flag = "  FALSE" if e["false"] else ""
        print(
            f"  after {e['after_requests']:>6}: {e['name']} [{e['domain']}] {e['from']} -> {e['to']}, "
            f"{e['samples']} verdicts, gap {e['gap']:+.3f} bound {e['bound']:+.3f} "
            f"(true {e['true_gap']:+.3f}){flag}"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    import orjson

    from tiergate.admin.jobs.embedding_cache import cached_embedder
    from tiergate.admin.jobs.outcomes import OutcomesError, load_outcomes
    from tiergate.admin.jobs.replay import replay, summary
    from tiergate.policies.promotion import PromotionConfig

    try:
        records = load_outcomes(args.outcomes)
    except OutcomesError as exc:
        print(f"tiergate replay: {exc}", file=sys.stderr)
        return 2
    cap_ok = args.evaluation_budget is None or args.evaluation_budget >= 0
    if not (
        0 < args.budget < 1
        and (args.explore is None or 0 <= args.explore <= 1)
        and 0 <= args.monitor <= 1
        and args.interval > 0
        and cap_ok
    ):
        print(
            "tiergate replay: --budget must be in (0, 1), fractions in [0, 1], --interval positive, "
            "--evaluation-budget not negative",
            file=sys.stderr,
        )
        return 2
    config = ReplayConfig(
        seed=args.seed,
        shuffle=args.shuffle,
        interval=args.interval,
        explore=args.explore,
        exploration=dataclasses.replace(DEFAULTS.exploration, monitor=args.monitor),
        clusters=args.clusters,
        evaluation_budget=args.evaluation_budget,
        promotion=PromotionConfig(quality_budget=args.budget),
    )
    embed = None
    if records[0].domain is None:
        embed = cached_embedder(
            None if args.no_cache else args.cache_dir, progress=ProgressBar(sys.stderr, "embedding")
        )
    try:
        result = replay(records, embed, config, progress=ProgressBar(sys.stderr, "replay"))
    except ValueError as exc:
        print(f"tiergate replay: {exc}", file=sys.stderr)
        return 2
    report = dict(summary(result))
    if args.plot:
        from tiergate.admin.jobs.replay_plot import plot_learning_curve

        plot_learning_curve([result], args.plot, title=f"tiergate replay: {args.outcomes.name}")
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        events = report.pop("promotion_events")
        _print_report(report, events)
        if args.plot:
            print(f"learning curve      {args.plot}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="run the learning loop on recorded outcomes instead of live models")
    p.add_argument("--outcomes", type=Path, required=True, help="JSONL of recorded outcomes per request")
    p.add_argument("--seed", type=int, default=0, help="seed of shadow sampling (and of --shuffle)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument(
        "--plot", type=Path, help="write the learning curve (cumulative cost and quality) to this PNG"
    )
    p.add_argument("--shuffle", action="store_true", help="replay in a seeded random order, not the file's")
    p.add_argument("--interval", type=int, default=DEFAULTS.interval, help="requests between promotion runs")
    p.add_argument(
        "--explore",
        type=float,
        help="a fixed shadow share of unpromoted traffic (default: value of information decides)",
    )
    p.add_argument(
        "--monitor", type=float, default=DEFAULTS.exploration.monitor, help="shadow share of promoted traffic"
    )
    p.add_argument(
        "--budget", type=float, default=0.05, help="allowed quality loss versus the teacher (0.05 = 5%%)"
    )
    p.add_argument(
        "--evaluation-budget",
        type=float,
        default=DEFAULTS.evaluation_budget,
        help="cap shadow and judge spend at this share of the serving spend so far (default: %(default)s)",
    )
    p.add_argument(
        "--clusters", type=int, help="number of domains to discover (default: grows with the traffic)"
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where prompt embeddings are cached")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.set_defaults(func=cmd_replay)
