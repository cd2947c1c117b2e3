"""Replay the learning loop on RouteLLM's MMLU and GSM8K outcomes over several seeds; write the figures.

    python -m bench.routellm.run --data ../shared/data/routellm --seeds 5

Converts the outcomes (bench/routellm/convert.py, subject names withheld), embeds the prompts once with the
local MiniLM (cached under ~/.cache/tiergate/embeddings), runs `tiergate replay`'s job with `--shuffle` for
each seed, and writes `bench/routellm/results/routellm.{json,md}` and `docs/learning-curve-<name>.png`.
Reference points computed on the same files: an oracle that knows each embedding cluster's true gap, and
(MMLU) one that knows each subject's, both spending the same 5% budget greedily by gap per dollar.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.routellm.convert import convert
from tiergate.admin.jobs.embedding_cache import cached_embedder
from tiergate.admin.jobs.outcomes import Record, load_outcomes
from tiergate.admin.jobs.replay import ReplayResult, replay
from tiergate.admin.jobs.replay_config import ReplayConfig
from tiergate.admin.jobs.replay_plot import plot_learning_curve
from tiergate.policies.domains import cluster

ROOT = Path(__file__).resolve().parents[2]
# Promotion runs every 500 requests on MMLU (28 runs); GSM8K's 1,307 requests get one every 100.
INTERVALS = {"mmlu": 500, "gsm8k": 100}
KEYS = (
    "cost_saved_fraction",
    "quality_ratio",
    "steady_saved_fraction",
    "steady_quality_ratio",
    "evaluation_cost",
    "promotions",
    "false_promotions",
)


def oracle_saving(records: list[Record], groups: np.ndarray, budget: float = 0.05) -> float:
    """Cost saved by an oracle that knows each group's true gap and spends the budget by gap per dollar."""
    teacher = np.array([r.outcomes["teacher"].score for r in records])
    student = np.array([r.outcomes["student"].score for r in records])
    t_cost = np.array([r.outcomes["teacher"].cost for r in records])
    s_cost = np.array([r.outcomes["student"].cost for r in records])
    k = int(groups.max()) + 1
    loss = np.bincount(groups, teacher - student, k)
    saving = np.bincount(groups, t_cost - s_cost, k)
    allowed, used, saved = budget * teacher.sum(), 0.0, 0.0
    for g in np.argsort(loss / np.where(saving > 0, saving, np.inf)):
        if saving[g] > 0 and used + loss[g] <= allowed:
            used += loss[g]
            saved += saving[g]
    return float(saved / t_cost.sum())


def references(
    name: str, records: list[Record], vectors: np.ndarray, subjects: dict[str, str]
) -> dict[str, float]:
    out = {}
    for k in (32, 64):
        labels, _ = cluster(vectors, k, seed=0)
        out[f"oracle_{k}_clusters"] = oracle_saving(records, labels)
    if name == "mmlu":
        names = sorted(set(subjects.values()))
        groups = np.array([names.index(subjects[r.id]) for r in records])
        out["oracle_subjects"] = oracle_saving(records, groups)
    return out


def run_dataset(
    path: Path, seeds: int, config: ReplayConfig, cache: Path
) -> tuple[list[ReplayResult], np.ndarray]:
    records = load_outcomes(path)
    embed = cached_embedder(
        cache, progress=lambda d, n: print(f"\rembedding {d}/{n}", end="", file=sys.stderr)
    )
    vectors = embed([r.prompt for r in records])
    lookup = {r.prompt: v for r, v in zip(records, vectors, strict=True)}
    results = []
    for seed in range(seeds):
        started = time.monotonic()
        result = replay(
            records,
            lambda texts: np.stack([lookup[t] for t in texts]),
            dataclasses.replace(config, seed=seed, shuffle=True),
        )
        m = result.metrics
        print(
            f"{path.stem} seed {seed}: saved {m['cost_saved_fraction']:.1%} at {m['quality_ratio']:.1%}, "
            f"second half {m['steady_saved_fraction']:.1%} at {m['steady_quality_ratio']:.1%}, "
            f"{m['promotions']} promotions ({m['false_promotions']} false), "
            f"{time.monotonic() - started:.0f}s",
            file=sys.stderr,
        )
        results.append(result)
    return results, vectors


def _mean(results: list[ReplayResult], key: str) -> float:
    return statistics.fmean(float(r.metrics[key]) for r in results)


def _row(label: str, m: dict[str, Any], promotions: str) -> str:
    cells = [
        label,
        f"{m['cost_saved_fraction']:.1%}",
        f"{m['quality_ratio']:.1%}",
        f"{m['steady_saved_fraction']:.1%}",
        f"{m['steady_quality_ratio']:.1%}",
        f"{m['evaluation_cost'] / m['teacher_cost']:.1%}",
        promotions,
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(all_results: dict[str, list[ReplayResult]], refs: dict[str, dict[str, float]]) -> str:
    lines = []
    for name, results in all_results.items():
        requests = results[0].metrics["requests"]
        lines += [
            f"**{name.upper()}** ({requests} requests, domains inferred, evaluation included)",
            "",
            "| seed | saved (whole run) | quality | saved (second half) | quality (second half) "
            "| evaluation spend | promotions (false) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for seed, r in enumerate(results):
            m = r.metrics
            lines.append(_row(str(seed), m, f"{m['promotions']} ({m['false_promotions']})"))
        promotions = sum(r.metrics["promotions"] for r in results)
        false = sum(r.metrics["false_promotions"] for r in results)
        mean = {k: _mean(results, k) for k in (*KEYS, "teacher_cost")}
        lines.append(_row("**mean**", mean, f"{promotions} ({false}, {false / max(promotions, 1):.1%})"))
        ref = ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in refs[name].items())
        lines += ["", f"Reference points (same budget, no evaluation cost, true gaps known): {ref}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/routellm"))
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "routellm" / "work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "routellm" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", default="mmlu,gsm8k")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tiergate" / "embeddings")
    args = parser.parse_args(argv)
    if not (args.data / "routellm" / "evals").is_dir():
        print(f"skipped: {args.data} has no RouteLLM outcomes", file=sys.stderr)
        return 0
    files = convert(args.data, args.work)
    config = ReplayConfig()
    all_results: dict[str, list[ReplayResult]] = {}
    refs: dict[str, dict[str, float]] = {}
    report: dict[str, Any] = {"config": dataclasses.asdict(config), "intervals": INTERVALS}
    for name in args.datasets.split(","):
        dataset_config = dataclasses.replace(config, interval=INTERVALS.get(name, config.interval))
        results, vectors = run_dataset(files[name], args.seeds, dataset_config, args.cache)
        all_results[name] = results
        subjects = json.loads((args.work / f"{name}.subjects.json").read_text(encoding="utf-8"))
        refs[name] = references(name, load_outcomes(files[name]), vectors, subjects)
        plot_learning_curve(
            results,
            args.docs / f"learning-curve-{name}.png",
            title=f"tiergate replay on RouteLLM {name.upper()} ({args.seeds} seeds, domains inferred)",
            labels=[f"seed {s}" for s in range(args.seeds)],
        )
        report[name] = {
            "seeds": [r.metrics for r in results],
            "mean": {k: _mean(results, k) for k in KEYS},
            "references": refs[name],
            "promotion_events": [
                [
                    {
                        "after": e.request,
                        "domain": e.decision.name,
                        "gap": e.decision.gap,
                        "bound": e.decision.bound,
                        "true_gap": e.true_gap,
                        "false": e.false,
                    }
                    for e in r.events
                ]
                for r in results
            ],
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routellm.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    table = markdown(all_results, refs)
    (args.out / "routellm.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
