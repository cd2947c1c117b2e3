"""Aggregating repeated runs (medians) into rows, and printing them as text and markdown tables."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.harness.runner import ScenarioRun
from bench.harness.scenario import Scenario


@dataclass(frozen=True)
class Row:
    scenario: str
    workload: str
    connections: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    errors: int
    runs: int


@dataclass(frozen=True)
class TTFTRow:
    scenario: str
    workload: str
    concurrency: int
    direct_ms: float
    target_ms: float
    added_ms: float
    added_min_ms: float
    added_max_ms: float
    runs: int


@dataclass(frozen=True)
class ProcessRow:
    scenario: str
    startup_s: float | None
    rss_mb: float | None
    runs: int
    skipped: str | None


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(runs: Sequence[ScenarioRun]) -> tuple[list[Row], list[TTFTRow], list[ProcessRow]]:
    """Medians over repeated runs, per scenario x workload x concurrency, in first-seen order."""
    rows: list[Row] = []
    ttfts: list[TTFTRow] = []
    processes: list[ProcessRow] = []
    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    for name in scenarios:
        mine = [r for r in runs if r.scenario == name]
        done = [r for r in mine if r.skipped is None]
        processes.append(
            ProcessRow(
                name,
                _median([r.startup_s for r in done]),
                _median([r.rss_mb for r in done]),
                len(done),
                mine[0].skipped if not done else None,
            )
        )
        keys = list(dict.fromkeys((m.workload, m.connections) for r in done for m in r.measurements))
        for workload, connections in keys:
            ms = [
                m
                for r in done
                for m in r.measurements
                if (m.workload, m.connections) == (workload, connections)
            ]
            rows.append(
                Row(
                    name,
                    workload,
                    connections,
                    rps=statistics.median(m.rps for m in ms),
                    rps_min=min(m.rps for m in ms),
                    rps_max=max(m.rps for m in ms),
                    p50_ms=statistics.median(m.p50_ms for m in ms),
                    p99_ms=statistics.median(m.p99_ms for m in ms),
                    cpu_us_per_request=_median([m.cpu_us_per_request for m in ms]),
                    errors=sum(m.errors for m in ms),
                    runs=len(ms),
                )
            )
        tkeys = list(dict.fromkeys((w, t.concurrency) for r in done for w, ts in r.ttft.items() for t in ts))
        for workload, concurrency in tkeys:
            ts = [t for r in done for t in r.ttft.get(workload, ()) if t.concurrency == concurrency]
            ttfts.append(
                TTFTRow(
                    name,
                    workload,
                    concurrency,
                    direct_ms=statistics.median(t.direct_ms for t in ts),
                    target_ms=statistics.median(t.target_ms for t in ts),
                    added_ms=statistics.median(t.added_ms for t in ts),
                    added_min_ms=min(t.added_ms for t in ts),
                    added_max_ms=max(t.added_ms for t in ts),
                    runs=len(ts),
                )
            )
    return rows, ttfts, processes


def _capacity(cpu_us_per_request: float | None) -> float | None:
    """Requests per second one core would serve if it did nothing else: a figure robust to a busy machine."""
    return 1e6 / cpu_us_per_request if cpu_us_per_request else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADLINE_COLUMNS = (
    "scenario",
    "workload",
    "conns",
    "req/s",
    "(min-max)",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "1 core req/s",
    "+TTFT ms",
    "startup s",
    "RSS MB",
    "errors",
)


def headline(
    rows: Sequence[Row],
    ttfts: Sequence[TTFTRow],
    processes: Sequence[ProcessRow],
    connections: int,
    ttft_concurrency: int,
) -> list[list[str]]:
    """One line per scenario x workload at the headline concurrency, with its process's startup and RSS."""
    by_process = {p.scenario: p for p in processes}
    out = []
    for row in rows:
        if row.connections != connections:
            continue
        p = by_process[row.scenario]
        ttft = next(
            (
                t
                for t in ttfts
                if (t.scenario, t.workload, t.concurrency) == (row.scenario, row.workload, ttft_concurrency)
            ),
            None,
        )
        out.append(
            [
                row.scenario,
                row.workload,
                str(row.connections),
                f"{row.rps:,.0f}",
                f"{row.rps_min:,.0f}-{row.rps_max:,.0f}",
                f"{row.p50_ms:.2f}",
                f"{row.p99_ms:.2f}",
                _fmt(row.cpu_us_per_request, ".0f"),
                _fmt(_capacity(row.cpu_us_per_request), ",.0f"),
                _fmt(ttft.added_ms if ttft else None, "+.2f"),
                _fmt(p.startup_s, ".2f"),
                _fmt(p.rss_mb, ".0f"),
                str(row.errors),
            ]
        )
    for p in processes:
        if p.skipped:
            out.append([p.scenario, "skipped: " + p.skipped, *[""] * (len(HEADLINE_COLUMNS) - 2)])
    return out


SWEEP_COLUMNS = (*HEADLINE_COLUMNS[: HEADLINE_COLUMNS.index("CPU µs/req") + 1], "errors")


def sweep(rows: Sequence[Row]) -> list[list[str]]:
    return [
        [
            r.scenario,
            r.workload,
            str(r.connections),
            f"{r.rps:,.0f}",
            f"{r.rps_min:,.0f}-{r.rps_max:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            _fmt(r.cpu_us_per_request, ".0f"),
            str(r.errors),
        ]
        for r in rows
    ]


TTFT_COLUMNS = ("scenario", "workload", "clients", "direct ms", "through ms", "added ms", "(min-max)")


def ttft_table(ttfts: Sequence[TTFTRow]) -> list[list[str]]:
    return [
        [
            t.scenario,
            t.workload,
            str(t.concurrency),
            f"{t.direct_ms:.3f}",
            f"{t.target_ms:.3f}",
            f"{t.added_ms:+.3f}",
            f"{t.added_min_ms:+.3f}..{t.added_max_ms:+.3f}",
        ]
        for t in ttfts
    ]


def check_targets(
    scenarios: Sequence[Scenario],
    rows: Sequence[Row],
    ttfts: Sequence[TTFTRow],
    processes: Sequence[ProcessRow],
    connections: int,
    ttft_concurrency: int,
) -> list[tuple[str, str, bool]]:
    """(scenario, what was required and measured, met) for every target a scenario file sets.

    Throughput at the headline concurrency; added TTFT at `ttft_concurrency` clients (1: one request at a
    time, so queueing behind other requests on a busy core does not count as the gateway's overhead).
    """
    out = []
    by_process = {p.scenario: p for p in processes}
    for s in scenarios:
        p = by_process.get(s.name)
        if p is None or p.skipped:
            continue
        t = s.targets
        for workload, minimum in t.min_rps.items():
            for r in rows:
                if (r.scenario, r.workload, r.connections) == (s.name, workload, connections):
                    what = f"{workload} >= {minimum:,.0f} req/s at {connections} conns: {r.rps:,.0f}"
                    out.append((s.name, what, r.rps >= minimum))
        if t.max_ttft_added_ms is not None:
            for tt in ttfts:
                if tt.scenario == s.name and tt.concurrency == ttft_concurrency:
                    limit, added = t.max_ttft_added_ms, tt.added_ms
                    what = (
                        f"{tt.workload} TTFT <= +{limit:g} ms at {tt.concurrency} client(s): {added:+.3f} ms"
                    )
                    out.append((s.name, what, added <= limit))
        if t.max_startup_s is not None and p.startup_s is not None:
            what = f"startup <= {t.max_startup_s:g} s: {p.startup_s:.2f} s"
            out.append((s.name, what, p.startup_s <= t.max_startup_s))
        if t.max_rss_mb is not None and p.rss_mb is not None:
            out.append((s.name, f"RSS <= {t.max_rss_mb:g} MB: {p.rss_mb:.0f} MB", p.rss_mb <= t.max_rss_mb))
    return out


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    aligns = ["---" if i < 2 else "---:" for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(lines)


def as_json(rows: Sequence[Row], ttfts: Sequence[TTFTRow], processes: Sequence[ProcessRow]) -> dict[str, Any]:
    return {
        "throughput": [asdict(r) for r in rows],
        "ttft": [asdict(t) for t in ttfts],
        "processes": [asdict(p) for p in processes],
    }
