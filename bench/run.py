"""Run every scenario in bench/configs/ against a static upstream; print the figures and save them as JSON.

    python bench/run.py                 # everything, 3 repeats, concurrency sweep
    python bench/run.py --quick         # 1 repeat, short runs, headline concurrency only
    python bench/run.py --only gateway  # one scenario (repeatable; the direct floor is always measured too)

See bench/README.md for what each column means and how to add a scenario.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import report
from bench.harness.load import wrk_binary
from bench.harness.procs import StartupFailed, busy_cores, set_niceness
from bench.harness.profile import py_spy_binary
from bench.harness.runner import Options, ScenarioRun, run_scenario
from bench.harness.scenario import ScenarioError, load_scenarios
from bench.harness.upstream import nginx_binary, static_upstream

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_LITELLM_PYTHON = Path.home() / ".cache" / "tiergate-bench" / "litellm-venv" / "bin" / "python"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="tiergate benchmark harness (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="1 repeat, 3 s runs, headline concurrency only")
    p.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only this scenario (repeatable)"
    )
    p.add_argument(
        "--repeat", type=int, help="runs of each scenario; the tables show medians (default 3, quick 1)"
    )
    p.add_argument("--duration", type=float, help="seconds of load per measurement (default 10, quick 3)")
    p.add_argument(
        "--warmup", type=float, help="seconds of unmeasured load before each measurement (default 2, quick 1)"
    )
    p.add_argument("--connections", type=int, default=8, help="the headline concurrency (default 8)")
    p.add_argument("--no-sweep", action="store_true", help="measure the headline concurrency only")
    p.add_argument("--ttft-requests", type=int, help="TTFT samples per side (default 400, quick 100)")
    p.add_argument(
        "--ttft-concurrency", default="1,8", help="comma-separated TTFT client counts (default 1,8)"
    )
    p.add_argument("--target-core", type=int, default=0, help="core of the process under test (default 0)")
    p.add_argument("--load-core", type=int, default=1, help="core of nginx, wrk and the harness (default 1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to cores")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling niceness of the harness and everything it starts (e.g. -10 on a machine shared with "
        "other work, so that they take less of the measured cores; negative values need root)",
    )
    p.add_argument(
        "--litellm-python",
        default=os.environ.get("TIERGATE_BENCH_LITELLM_PYTHON", str(DEFAULT_LITELLM_PYTHON)),
        help="interpreter with the LiteLLM proxy's server dependencies "
        f"(default: $TIERGATE_BENCH_LITELLM_PYTHON or {DEFAULT_LITELLM_PYTHON})",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also record a py-spy profile of each workload (bench/results/)",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        metavar="CORES",
        help="before each scenario, wait until other work uses at most CORES cores (sampled over 2 s)",
    )
    p.add_argument("--wait-max", type=float, default=900, help="longest wait for --wait-idle, s")
    p.add_argument(
        "--output", type=Path, help="JSON results file (default bench/results/<time>.json and latest.json)"
    )
    return p


def _missing_tools(profile: bool) -> list[str]:
    missing = []
    if nginx_binary() is None:
        missing.append("nginx (the static upstream): apt-get install -y nginx")
    if wrk_binary() is None:
        missing.append("wrk (the load generator): apt-get install -y wrk")
    if profile and py_spy_binary() is None:
        missing.append("py-spy (for --profile): pip install py-spy")
    return missing


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cores(args: argparse.Namespace) -> tuple[int | None, int | None]:
    if args.no_pin:
        return None, None
    available = os.sched_getaffinity(0)
    if {args.target_core, args.load_core} <= available and args.target_core != args.load_core:
        return args.target_core, args.load_core
    print(
        f"warning: cores {args.target_core} and {args.load_core} are not both usable ({sorted(available)}); "
        "running unpinned, figures are not comparable",
        file=sys.stderr,
    )
    return None, None


def _wait_idle(limit: float | None, wait_max: float) -> float:
    """Cores' worth of CPU used by other work now; with `limit`, first wait (up to `wait_max` s) for quiet."""
    busy = busy_cores()
    deadline = time.monotonic() + wait_max
    while limit is not None and busy > limit and time.monotonic() < deadline:
        print(f"    waiting: other work uses {busy:.2f} cores (> {limit:g})", file=sys.stderr)
        time.sleep(10)
        busy = busy_cores()
    return busy


def _interrupted(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # unwinds through every `finally`, which stops what the harness started


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    missing = _missing_tools(args.profile)
    if missing:
        print("bench: missing tools:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    try:
        scenarios = load_scenarios()
    except ScenarioError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    unknown = set(args.only) - {s.name for s in scenarios}
    if unknown:
        print(
            f"bench: unknown scenario(s) {', '.join(sorted(unknown))}; "
            f"have {', '.join(s.name for s in scenarios)}",
            file=sys.stderr,
        )
        return 2
    if args.only:
        scenarios = [s for s in scenarios if s.name in args.only or s.command is None]
    if args.nice:
        try:
            set_niceness(args.nice)  # inherited by every process the harness starts
        except OSError:
            print(
                f"warning: cannot set niceness {args.nice} (needs root); running at the default",
                file=sys.stderr,
            )
        else:
            # The session's autogroup outlives the harness: give it back its default when the run ends.
            atexit.register(set_niceness, 0)
    target_core, load_core = _cores(args)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})  # the harness (TTFT client, polling) stays off the measured core
    quick = args.quick
    options = Options(
        duration_s=args.duration or (3.0 if quick else 10.0),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if quick else 2.0),
        headline_connections=args.connections,
        sweep=not (quick or args.no_sweep),
        ttft_requests=args.ttft_requests or (100 if quick else 400),
        ttft_concurrency=tuple(int(c) for c in args.ttft_concurrency.split(",") if c.strip()),
        target_core=target_core,
        load_core=load_core,
        litellm_python=args.litellm_python,
        profile_dir=RESULTS if args.profile else None,
    )
    repeat = args.repeat or (1 if quick else 3)
    signal.signal(signal.SIGTERM, _interrupted)
    RESULTS.mkdir(exist_ok=True)
    load_before = _loadavg()
    print(
        f"load average before: {load_before}; {repeat} repeat(s), {options.duration_s:g} s per measurement",
        file=sys.stderr,
    )
    runs: list[ScenarioRun] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-") as tmp:
        workdir = Path(tmp)
        with static_upstream(workdir, load_core) as (upstream, nginx):
            # Repeats go round all scenarios so that a busy moment on the shared machine hits every one alike.
            for r in range(repeat):
                for scenario in scenarios:
                    busy = _wait_idle(args.wait_idle, args.wait_max)
                    print(
                        f"[{r + 1}/{repeat}] {scenario.name}: {scenario.description} "
                        f"(machine busy before: {busy:.2f} cores)",
                        file=sys.stderr,
                    )
                    try:
                        run = run_scenario(
                            scenario, upstream, nginx, workdir, options, lambda m: print(m, file=sys.stderr)
                        )
                    except (StartupFailed, RuntimeError, ValueError, OSError) as exc:
                        # One broken scenario (a crash, a wrk failure) must not lose the others' figures.
                        run = ScenarioRun(scenario.name, skipped=f"failed: {str(exc).splitlines()[0]}")
                        print(f"    {exc}", file=sys.stderr)
                    if run.skipped:
                        print(f"    skipped: {run.skipped}", file=sys.stderr)
                    run.busy_cores_before = busy
                    runs.append(run)
    load_after = _loadavg()
    rows, ttfts, processes = report.aggregate(runs)
    ttft_c = options.ttft_concurrency[0] if options.ttft_concurrency else 1
    head = report.headline(rows, ttfts, processes, options.headline_connections, ttft_c)
    checks = report.check_targets(scenarios, rows, ttfts, processes, options.headline_connections, ttft_c)
    print()
    print(f"At {options.headline_connections} connections (median of {repeat}; +TTFT at {ttft_c} client(s)):")
    print(report.text_table(report.HEADLINE_COLUMNS, head))
    if options.sweep:
        print("\nConcurrency sweep:")
        print(report.text_table(report.SWEEP_COLUMNS, report.sweep(rows)))
    if ttfts:
        print("\nTime to first token (median, through the process minus straight at nginx):")
        print(report.text_table(report.TTFT_COLUMNS, report.ttft_table(ttfts)))
    if checks:
        print("\nTargets:")
        for name, what, ok in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {what}")
    print(f"\nload average before {load_before}, after {load_after}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    doc = {
        "started": stamp,
        "machine": _machine(),
        "load_average": {"before": load_before, "after": load_after},
        "options": {
            **dataclasses.asdict(options),
            "repeat": repeat,
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "profile_dir": str(options.profile_dir or ""),
        },
        **report.as_json(rows, ttfts, processes),
        "targets": [{"scenario": s, "check": w, "met": ok} for s, w, ok in checks],
        "runs": [dataclasses.asdict(r) for r in runs],
        "markdown": {
            "headline": report.markdown_table(report.HEADLINE_COLUMNS, head),
            "sweep": report.markdown_table(report.SWEEP_COLUMNS, report.sweep(rows)),
            "ttft": report.markdown_table(report.TTFT_COLUMNS, report.ttft_table(ttfts)),
        },
    }
    outputs = [args.output] if args.output else [RESULTS / f"{stamp}.json", RESULTS / "latest.json"]
    for path in outputs:
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"results: {', '.join(str(p) for p in outputs)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
