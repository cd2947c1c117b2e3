"""Processes under test: started pinned to a core, timed to their first healthy answer, measured, stopped.

CPU time and memory are read from /proc for the process and every descendant (a server that forks workers
is measured whole). Every child is started in its own session so that stopping it also stops its children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants (every thread), in seconds."""
    ticks = 0
    for p in descendants(pid):
        fields = _stat_fields(p)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return ticks / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its live descendants."""
    total = 0
    for p in descendants(pid):
        try:
            resident = int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        total += resident * PAGE_SIZE
    return total


def busy_cores(sample_s: float = 2.0) -> float:
    """Cores' worth of CPU the whole machine used over `sample_s` (sampled while the harness idles)."""

    def totals() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, idle

    busy0, idle0 = totals()
    time.sleep(sample_s)
    busy1, idle1 = totals()
    total = (busy1 - busy0) + (idle1 - idle0)
    return (os.cpu_count() or 1) * (busy1 - busy0) / total if total else 0.0


def set_niceness(nice: int) -> None:
    """Niceness of this process and of its session's autogroup.

    With the kernel's autogroup scheduling on, processes compete as sessions: a process's own niceness only
    ranks it within its session, so the session's autogroup gets the same value. Raises PermissionError
    when a negative value needs root.
    """
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        autogroup.write_text(str(nice))


def child_setup(core: int | None, nice: int = 0) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child (and what it starts) to one core and sets its session's niceness."""
    if core is None and not nice:
        return None

    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        if nice:
            set_niceness(nice)

    return setup


# Loopback only: never route the health probe through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 0.5) -> int | None:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


class StartupFailed(RuntimeError):
    """The process exited or never answered its health URL; the message carries the end of its output."""


@dataclass
class Server:
    """A running process under test."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    startup_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the child's whole session, SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            # The leader is gone; children it left in its session must not outlive the run.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def start(
    name: str,
    args: Sequence[str],
    *,
    health_url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    core: int | None = None,
    timeout: float = 60.0,
) -> Server:
    """Start `args` and wait until `health_url` answers 200; `startup_s` is the time from spawn to then."""
    out = log.open("wb")
    began = time.perf_counter()
    proc = subprocess.Popen(
        list(args),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=child_setup(core, os.getpriority(os.PRIO_PROCESS, 0)),
    )
    out.close()
    server = Server(name, proc, log, 0.0)
    deadline = began + timeout
    while True:
        if http_status(health_url) == 200:
            server.startup_s = time.perf_counter() - began
            return server
        if proc.poll() is not None:
            server.stop()
            raise StartupFailed(
                f"{name} exited with {proc.returncode} before answering {health_url}:\n{server.tail()}"
            )
        if time.perf_counter() > deadline:
            server.stop()
            raise StartupFailed(f"{name} did not answer {health_url} within {timeout:.0f}s:\n{server.tail()}")
        time.sleep(0.01)
