"""Sampling profiles of the process under test with py-spy, summarised by function.

py-spy's raw format is one collapsed stack per line (`frame;frame;...;leaf count`, root first). The summary
gives each function's share of all samples where it is the leaf (self) and where it is anywhere on the
stack (inclusive), which is what points at the per-request CPU.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def py_spy_binary() -> str | None:
    return shutil.which("py-spy")


def start_recording(pid: int, duration_s: float, out: Path, rate: int = 500) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` and its subprocesses for `duration_s`, without pausing them; raw stacks."""
    binary = py_spy_binary()
    if binary is None:
        raise FileNotFoundError("py-spy")
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration_s))),
            "--rate",
            str(rate),
            "--nonblocking",
            "--subprocesses",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass(frozen=True)
class FunctionShare:
    function: str
    self_pct: float
    inclusive_pct: float


def _function(frame: str) -> str:
    # Frames read `name (path:line)`; the line number is dropped so one function is one row.
    name, _, location = frame.partition(" (")
    path = location.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "lib/python3", "/tiergate/", "/bench/"):
        if marker in path:
            path = path[path.index(marker) :].removeprefix("site-packages/")
            break
    return f"{name} ({path})" if path else name


def summarise(collapsed: str) -> tuple[int, list[FunctionShare]]:
    """Total samples and every function's self and inclusive share, most inclusive first."""
    total = 0
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_samples[frames[-1]] += count
        for function in set(frames):
            inclusive[function] += count
    shares = (
        [FunctionShare(f, 100 * self_samples[f] / total, 100 * inclusive[f] / total) for f in inclusive]
        if total
        else []
    )
    return total, sorted(shares, key=lambda s: (-s.inclusive_pct, -s.self_pct))


def module_of(function: str) -> str:
    """The package (or tiergate module) a summarised function belongs to, for grouping self time."""
    _, _, path = function.partition(" (")
    path = path.rstrip(")")
    if path.startswith("tiergate/") or path.startswith("/tiergate/"):
        return path.strip("/").removesuffix(".py").replace("/", ".")
    if path.startswith("lib/python3"):
        rest = path.split("/", 2)[-1]
        return "stdlib " + rest.split("/")[0].removesuffix(".py")
    return path.split("/")[0].removesuffix(".py") if path else "(no frame)"


def report(collapsed: str, *, cpu_us_per_request: float | None = None, top: int = 30) -> str:
    """Functions by inclusive and by self share, and self time by package; in µs per request when known.

    Time spent in C (orjson, uvloop, the socket calls) is counted against the Python frame that called it:
    `Runner.run` self time is the event loop and its I/O.
    """
    total, shares = summarise(collapsed)
    scale = (cpu_us_per_request or 0.0) / 100

    def row(s: FunctionShare) -> str:
        micro = f"{s.self_pct * scale:7.1f} {s.inclusive_pct * scale:7.1f}  " if scale else ""
        return f"{s.self_pct:6.1f} {s.inclusive_pct:6.1f}  {micro}{s.function}"

    unit = "  self µs  incl µs" if scale else ""
    head = f"  self%  incl%{unit}  function"
    cpu = f", {cpu_us_per_request:.0f} µs CPU per request" if cpu_us_per_request else ""
    lines = [f"{total} samples{cpu}", "", "by inclusive time:", head, *(row(s) for s in shares[:top])]
    lines += ["", "by self time:", head, *(row(s) for s in sorted(shares, key=lambda s: -s.self_pct)[:top])]
    packages: dict[str, float] = {}
    for s in shares:
        packages[module_of(s.function)] = packages.get(module_of(s.function), 0.0) + s.self_pct
    lines += [
        "",
        "self time by package / tiergate module:",
        "  self%" + ("  self µs" if scale else "") + "  package",
    ]
    lines += [
        f"{pct:6.1f}" + (f" {pct * scale:8.1f}" if scale else "") + f"  {name}"
        for name, pct in sorted(packages.items(), key=lambda item: -item[1])
    ]
    return "\n".join(lines) + "\n"
