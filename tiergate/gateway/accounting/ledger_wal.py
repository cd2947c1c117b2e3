"""The ledger's write-ahead file: every row is on local disk before its response completes.

`append` writes one orjson line to this process's current segment with a single `os.write` on an O_APPEND
descriptor: once it returns, the row is in the kernel's page cache, so it survives a kill of the process
(SIGKILL, OOM). `sync` fsyncs the segments written since the last pass, called every
`accounting.ledger_fsync_s` (a group commit, off the event loop), so a crash of the *machine* loses at most
the rows of that last interval (plus the time the fsync takes).

Segments: `tiergate-ledger-wal-<pid>-<token>-<n>.jsonl` in `accounting.spill_dir`. The ledger writer rotates
to a new one now and then (`rotate(upto)`, `upto` = rows queued so far) and reports how many queued rows are
written or spilled (`finished(done)`, in queue order): a segment is deleted only once every row queued
while it was current is done. `close` at a clean shutdown leaves none behind.

Recovery: a process holds an exclusive `flock` on each of its segments for as long as it lives (a segment
is created under a `.tmp` name and locked before it is given its `.jsonl` name, so no one ever sees it
unlocked). A segment whose lock can be taken (`LOCK_EX|LOCK_NB`) therefore belongs to a process that died:
`claim_orphans` renames it (`tiergate-ledger-wal-replaying-*.jsonl`, still matching the glob, so a replay that
dies half-way is retried), reads it under the lock and hands back its rows; the ledger inserts them (inserts
ignore `entry_id`s already there, so a row both in the database and in a segment is harmless) and
`Claimed.done` removes the file. A trailing partial line (the process was killed inside a write) or any
other line that does not parse is skipped with a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("tiergate.ledger")
WAL_GLOB = "tiergate-ledger-wal-*.jsonl"
OVERFLOW = "overflow-"
_TMP_GLOB = "tiergate-ledger-wal-*.tmp"
_STALE_TMP_S = 60.0  # a `.tmp` segment is renamed within microseconds: one this old was left by a crash
ROTATE_EVERY_S = 1.0  # the writer rotates after a batch once the current segment is this old...
ROTATE_BYTES = 8 << 20  # ...or holds this much (~17,000 rows)
_NEWLINE = orjson.OPT_APPEND_NEWLINE


@dataclass
class _Segment:
    path: Path
    fd: int
    upto: int = 0  # rows queued (the writer's count) when it stopped being current
    synced: int = 0  # its size at its last fsync


def _sync(fds: list[int]) -> None:
    """In a thread: fsync and close `fds` (duplicates, so that closing a segment meanwhile is harmless)."""
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            log.error("fsync of the ledger's write-ahead file failed: %s", exc)
        finally:
            os.close(fd)


class LedgerWal:
    def __init__(self, directory: Path, *, overflow: bool = False) -> None:
        self._dir = directory
        # An overflow file's rows are in no queue: its segments are named so, for the replays' logs.
        self._token = f"{OVERFLOW if overflow else ''}{os.getpid()}-{os.urandom(4).hex()}"
        self._numbers = itertools.count(1)
        self._rotated: list[_Segment] = []  # oldest first, waiting for their rows to be done
        self._dir_dirty = False
        self.failed = 0  # rows that could not be appended (disk full, ...): they live in memory only
        self._open()

    def _open(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        name = f"tiergate-ledger-wal-{self._token}-{next(self._numbers):06d}"
        tmp, path = self._dir / f"{name}.tmp", self._dir / f"{name}.jsonl"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, path)
        self._current = _Segment(path, fd)
        self._fd, self._opened = fd, time.monotonic()
        self._dir_dirty = True

    def append(self, row: dict[str, Any]) -> None:
        """One `write`, no bookkeeping (the segment's size says what is in it): ~3 us, orjson and the write."""
        try:
            data = orjson.dumps(row, option=_NEWLINE)
        except TypeError:  # what orjson cannot write (an integer over 64 bits; the database refuses it too)
            data = json.dumps(row, default=str).encode() + b"\n"
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # short writes do not happen on local files, but never tear a line
                self._write_rest(data, written)
        except OSError as exc:
            self._append_failed(exc, data)

    def _write_rest(self, data: bytes, written: int) -> None:
        while written < len(data):
            written += os.write(self._fd, data[written:])

    def _append_failed(self, exc: OSError, data: bytes) -> None:
        # A row after `close` (a straggler at shutdown): a new segment, replayed at the next start.
        if self._fd < 0:
            with contextlib.suppress(OSError):
                self._open()
                self._write_rest(data, 0)
                return
        self.failed += 1
        if self.failed == 1 or self.failed % 1000 == 0:
            log.error(
                "ledger rows could not be written ahead to %s (%s; %d so far): they are in memory only",
                self._dir,
                exc.__class__.__name__,
                self.failed,
            )

    def hand_over(self, *, final: bool = False) -> None:
        """Unlock the current segment without deleting it (and, unless `final`, start a new one): to every
        replay, this process's own included, it is then a dead process's segment, whose rows it writes.

        For rows that are in no queue (the ledger's overflow), so nothing but a replay will write them."""
        if self._fd < 0 or os.fstat(self._fd).st_size == 0:
            return
        current = self._current
        if final:
            self._fd = -1
        else:
            try:
                self._open()
            except OSError as exc:  # no new file (the disk is full): keep appending to this one
                log.error("the ledger's overflow file could not rotate: %s", exc)
                return
        try:  # rare (one rotation a second at most): fsync'd here rather than by the group commit
            os.fsync(current.fd)
        finally:
            os.close(current.fd)

    def segments(self) -> list[Path]:
        """This process's segments still on disk, oldest first."""
        return [s.path for s in self._rotated] + ([self._current.path] if self._fd >= 0 else [])

    def due(self) -> bool:
        """Whether the current segment should be rotated: it holds rows and is old or large enough."""
        size = os.fstat(self._fd).st_size
        return size > 0 and (size >= ROTATE_BYTES or time.monotonic() - self._opened >= ROTATE_EVERY_S)

    def rotate(self, upto: int) -> None:
        """Start a new segment; the current one is done once the first `upto` queued rows are."""
        current = self._current
        try:
            self._open()
        except OSError as exc:  # no new file (the disk is full): keep appending to this one
            log.error("the ledger's write-ahead file could not rotate: %s", exc)
            return
        current.upto = upto
        self._rotated.append(current)

    def finished(self, done: int) -> None:
        """The first `done` queued rows are written (or spilled): delete the segments holding only those."""
        while self._rotated and self._rotated[0].upto <= done:
            segment = self._rotated.pop(0)
            segment.path.unlink(missing_ok=True)  # unlinked before unlocked: no one claims a finished segment
            os.close(segment.fd)

    def close(self, done: int, queued: int) -> None:
        """At shutdown, once the writer has stopped: delete every segment whose rows are all done."""
        if self._fd < 0:
            return
        self._current.upto = queued
        self._rotated.append(self._current)
        self._fd = -1
        self.finished(done)
        # Rows still owed (never the case after a drain): those segments are kept for the next start.
        for segment in self._rotated:
            os.close(segment.fd)
        self._rotated.clear()

    async def sync(self) -> None:
        """Group commit (the ledger calls it every `ledger_fsync_s`): fsync the segments (and the directory)
        written since last time."""
        fds = []
        for segment in (*self._rotated, self._current) if self._fd >= 0 else self._rotated:
            size = os.fstat(segment.fd).st_size
            if size != segment.synced:  # written since its last fsync
                segment.synced = size
                fds.append(os.dup(segment.fd))
        if self._dir_dirty:
            self._dir_dirty = False
            fds.append(os.open(self._dir, os.O_RDONLY | os.O_CLOEXEC))
        if fds:  # shielded: the thread closes what it syncs, also when this task is cancelled meanwhile
            await asyncio.shield(asyncio.to_thread(_sync, fds))


@dataclass
class Claimed:
    path: Path
    fd: int
    rows: list[dict[str, Any]]
    overflow: bool  # an overflow segment (handed over by a live process), not a dead process's

    def done(self) -> None:
        """Every row is in the database: remove the segment (then unlock it)."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _read(path: Path, fd: int) -> list[dict[str, Any]]:
    with open(fd, "rb", closefd=False) as segment:
        data = segment.read()
    lines = data.split(b"\n")
    if lines[-1]:
        log.warning(
            "skipped a partial last line in %s (%d bytes: the process died inside a write)",
            path,
            len(lines[-1]),
        )
    rows = []
    for number, line in enumerate(lines[:-1], 1):
        try:  # the standard json: exact for every integer (orjson reads one over 64 bits as a float)
            rows.append(json.loads(line))
        except ValueError:
            log.error("skipped line %d of %s: not a ledger row (%d bytes)", number, path, len(line))
    return rows


def _take(path: Path) -> Claimed | None:
    """Lock a segment whose owner is gone, rename it, read it; None when it is alive or taken already."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its process is alive, or another replay has it
            os.close(fd)
            return None
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
        claimed = path.with_name(f"tiergate-ledger-wal-replaying-{os.urandom(6).hex()}.jsonl")
        os.rename(path, claimed)
        overflow = path.name.startswith(f"tiergate-ledger-wal-{OVERFLOW}")
        return Claimed(claimed, fd, _read(claimed, fd), overflow)
    except FileNotFoundError:  # finished (deleted) or claimed by another process since we listed it
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise


def claim_orphans(directory: Path) -> Iterator[Claimed]:
    """The segments of processes that died, one at a time; the caller must `done` each or close its fd."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(WAL_GLOB)):
        taken = _take(path)
        if taken is not None:
            yield taken
    for path in directory.glob(_TMP_GLOB):  # a crash between creating a segment and naming it: empty
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime > _STALE_TMP_S:
                path.unlink()


def orphans_possible(directory: Path, own: list[Path]) -> bool:
    """Whether the directory holds segments that are not this process's (cheap: no file is opened)."""
    if not directory.is_dir():
        return False
    mine = set(own)
    return any(path not in mine for path in directory.glob(WAL_GLOB))
