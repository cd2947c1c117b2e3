"""The cost ledger: one row per settled request, written in batches off the response path.

`sink` (a records.Sink) turns a finished call into a row, appends it to this process's write-ahead file
(`ledger_wal`: on local disk before the response completes, so a killed process loses no row) and queues
it; `run` writes batches of up to `ledger_batch_size` rows, at least every `ledger_flush_s`. A batch that
cannot be written after `ledger_retries` attempts (the database is away) is appended to a spill file. Spill
files are replayed at start and then every `REPLAY_EVERY_S` while any exist (so once the database is back,
without a restart) - every row carries its own id and inserts ignore rows already there, so a batch written
twice is harmless. A row that finds the queue full (the writer is behind) is never dropped and never held
in memory: it goes to a second write-ahead file, handed to the replays. A row the database refuses on its
own is kept in a rejected file beside them. `aclose` drains.

Several processes may share the spill directory (`--workers`): a replay first claims a file by renaming it,
then takes its lock, which a writer holds while appending; a writer that finds its file renamed under it
starts a new one. So no row is appended to a file after it was read. Write-ahead segments left by a process
that died are claimed and written by the same replays (see `ledger_wal`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.ledger_wal import LedgerWal, claim_orphans, orphans_possible
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.db.batches import log_refused, write_each
from tiergate.gateway.db.engine import database_unreachable
from tiergate.gateway.db.models import LedgerEntry

log = logging.getLogger("tiergate.ledger")
_STOP: dict[str, Any] = {}  # queued by `stop`: wakes the writer, which then finishes what is queued
SPILL_GLOB = "tiergate-ledger-spill-*.jsonl"
REPLAY_EVERY_S = 5.0
_TABLE = LedgerEntry.__table__  # type: ignore[attr-defined]


# Row ids: a random per-process prefix and a counter - unique across replicas, and ~7x cheaper than uuid4.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)
_DAY_S = 86_400
_day_cache: tuple[int, str] = (-1, "")


def _day(ts_s: float) -> str:
    """UTC date of `ts_s`; formatted once per day, not per row."""
    global _day_cache
    number = int(ts_s) // _DAY_S
    if number != _day_cache[0]:
        _day_cache = (number, time.strftime("%Y-%m-%d", time.gmtime(number * _DAY_S)))
    return _day_cache[1]


def entry_from(record: CallRecord, ts_s: float | None = None) -> dict[str, Any]:
    now = ts_s if ts_s is not None else time.time()
    ts_ms = int(now * 1000)
    ticket = record.ticket
    return {
        "entry_id": f"{_ID_PREFIX}{next(_ID_COUNTER):016x}",
        "request_id": record.request_id,
        "ts_ms": ts_ms,
        "day": _day(now),
        "tenant_id": record.principal.tenant_id,
        "key_id": record.principal.key_id,
        "kind": record.kind,
        "endpoint": record.endpoint,
        "requested_model": record.requested_model[:200],
        "tier": record.tier,
        "deployment_id": record.deployment_id,
        "model": record.model,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_nano": record.cost_nano,
        "reserved_nano": ticket.reserved_nano if ticket is not None else 0,
        "cache": record.cache,
        "latency_ms": round(record.latency_s * 1000, 3),
        "ttft_ms": round(record.ttft_s * 1000, 3) if record.ttft_s is not None else None,
        "status": record.outcome,
        "status_code": record.status_code,
        "usage_source": record.usage_source,
    }


@dataclass
class LedgerStats:
    written: int = 0
    spilled: int = 0  # rows that went to a spill file (the database away)
    overflowed: int = 0  # rows that found the queue full (written from the overflow file by a replay)
    replayed: int = 0
    recovered: int = 0  # rows written from the write-ahead segments of processes that died
    rejected: int = 0  # rows the database refused on their own (kept in the rejected file, not replayed)


class LedgerWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int,
        flush_s: float,
        retries: int,
        queue_size: int,
        spill_dir: str,
        fsync_s: float = 0.05,
    ) -> None:
        self._engine = engine
        self._dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
        self._batch_size = batch_size
        self._flush_s = flush_s
        self._retries = retries
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._stopping = False
        self._spill_dir = Path(spill_dir)
        self._spill_file = (
            self._spill_dir / f"tiergate-ledger-spill-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
        )
        self._writing: list[dict[str, Any]] = []
        # The write-ahead file, and the rows queued / written-or-spilled so far (in queue order): a segment is
        # deleted once the rows queued while it was current are done.
        self._wal = LedgerWal(self._spill_dir)
        self._fsync_s = fsync_s
        self._queued = self._done = 0
        self._overflow: LedgerWal | None = None  # rows that found the queue full
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = LedgerStats()

    # The queue as `metrics.QueueStats`. Overflow is not lost (it goes to the spill file) but is exported as
    # "dropped" from the queue, since it means the database writer is falling behind.
    name = "ledger"

    def depth(self) -> int:
        return self._queue.qsize()

    def dropped(self) -> int:
        return self.stats.overflowed

    def rejected(self) -> int:
        return self.stats.rejected

    def sink(self, record: CallRecord) -> None:
        entry = entry_from(record)
        self._wal.append(entry)
        try:
            self._queue.put_nowait(entry)
            self._queued += 1
            self._idle.clear()
        except asyncio.QueueFull:
            # The writer is behind: memory stays bounded; no fsync per row on the event loop either.
            self.stats.overflowed += 1
            if self._overflow is None:
                self._overflow = LedgerWal(self._spill_dir, overflow=True)
            self._overflow.append(entry)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        statement = self._dialect.insert(_TABLE).on_conflict_do_nothing(index_elements=["entry_id"])
        async with self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        """Insert with bounded retries; what still fails goes to the spill file. A batch the database refuses
        for any reason but being away (a value it cannot store) is written row by row, so one bad row never
        costs the others; a row refused alone goes to the rejected file."""
        for attempt in range(self._retries):
            try:
                await self._insert(rows)
                self.stats.written += len(rows)
                return
            except Exception as exc:  # any database failure: retry, then spill; never lose the rows
                if not database_unreachable(exc):
                    await self._write_one_by_one(rows)
                    return
                log.warning(
                    "ledger batch of %d failed (attempt %d): %s",
                    len(rows),
                    attempt + 1,
                    exc.__class__.__name__,
                )
                if attempt + 1 < self._retries:
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        self._spill(rows)

    async def _write_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        done = await write_each(rows, self._insert, database_unreachable)
        self.stats.written += done.written
        for row, exc in done.refused:
            self._reject(row, exc)
        if done.away:  # the database went away meanwhile: those rows wait in the spill file
            self._spill(done.away)

    def _reject(self, row: dict[str, Any], exc: Exception) -> None:
        # Money is never dropped: kept beside the spill files but not replayed (it would fail again), for a
        # person to look at.
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        with open(self._spill_dir / f"tiergate-ledger-rejected-{os.getpid()}.jsonl", "ab") as out:
            # The standard json: a refused row may hold what orjson cannot write (an integer over 64 bits).
            out.write(json.dumps(row, default=str).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        self.stats.rejected += 1
        log_refused(
            log,
            "ledger row",
            f"{row.get('entry_id')} (request {row.get('request_id')})",
            exc,
            f"kept in {self._spill_dir / 'tiergate-ledger-rejected-*.jsonl'}",
        )

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        while True:
            with open(self._spill_file, "ab") as out:
                fcntl.flock(out, fcntl.LOCK_EX)
                try:
                    if os.fstat(out.fileno()).st_ino != os.stat(self._spill_file).st_ino:
                        continue  # claimed by a replay between our open and our lock: write a new file
                except FileNotFoundError:
                    continue
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
                break
        self.stats.spilled += len(rows)
        log.error(
            "%d ledger rows spilled to %s; they are written once the database is back",
            len(rows),
            self._spill_file,
        )

    def _claim(self, path: Path) -> tuple[Path, list[dict[str, Any]]] | None:
        """Take a spill file for replay: renamed (so nothing is appended to it any more), then read."""
        claimed = path.with_name(f"tiergate-ledger-spill-replaying-{os.urandom(4).hex()}.jsonl")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:  # another process claimed it first
            return None
        with open(claimed, "rb") as spilled:
            fcntl.flock(spilled, fcntl.LOCK_EX)  # a writer that opened it before the rename has finished
            data = spilled.read()
        return claimed, [orjson.loads(line) for line in data.splitlines() if line.strip()]

    async def replay(self) -> int:
        """Write the rows of this directory's spill files (this process's own included) and remove them;
        raises when the database is still away (a file whose rows were not all written stays for the next)."""
        total = 0
        for path in sorted(self._spill_dir.glob(SPILL_GLOB)):
            taken = self._claim(path)
            if taken is None:
                continue
            claimed, rows = taken
            for i in range(0, len(rows), self._batch_size):
                await self._insert(rows[i : i + self._batch_size])
            claimed.unlink(missing_ok=True)
            total += len(rows)
            self.stats.replayed += len(rows)
        if total:
            log.warning("replayed %d spilled ledger rows", total)
        return total + await self._recover()

    async def _recover(self) -> int:
        """Write the rows of write-ahead segments whose process died (unlocked), then remove the segments.

        As batches are: a row the database refuses goes to the rejected file, rows it cannot take now (it is
        away) to a spill file; either way the segment is done."""
        total = 0
        for claimed in claim_orphans(self._spill_dir):
            try:
                for i in range(0, len(claimed.rows), self._batch_size):
                    await self._write(claimed.rows[i : i + self._batch_size])
            except BaseException:  # not even spilled (the disk failed): the segment stays for the next replay
                os.close(claimed.fd)
                raise
            claimed.done()
            if not claimed.rows:  # a segment that held nothing yet (or its rows were all written)
                continue
            total += len(claimed.rows)
            self.stats.recovered += len(claimed.rows)
            level = logging.DEBUG if claimed.overflow else logging.WARNING  # overflow: routine under load
            log.log(level, "recovered %d ledger rows from %s", len(claimed.rows), claimed.path)
        return total

    def wal_segments(self) -> list[Path]:
        """This process's write-ahead segments on disk."""
        return self._wal.segments()

    async def sync_periodically(self) -> None:
        """Fsync the write-ahead files every `fsync_s` (what a machine crash may lose)."""
        while True:
            await asyncio.sleep(self._fsync_s)
            for wal in (self._wal, self._overflow):
                if wal is not None:
                    await wal.sync()

    def spilled_files(self) -> int:
        return sum(1 for _ in self._spill_dir.glob(SPILL_GLOB)) if self._spill_dir.is_dir() else 0

    async def replay_periodically(self) -> None:
        """While spill files or others' write-ahead segments exist, try to write them every `REPLAY_EVERY_S`
        (until the database is back; a segment is taken only once its process died)."""
        while True:
            await asyncio.sleep(REPLAY_EVERY_S)
            if not self.spilled_files() and not orphans_possible(self._spill_dir, self._wal.segments()):
                continue
            try:
                await self.replay()
            except Exception as exc:  # the database is still away: keep the files, try again later
                log.warning("replaying spilled ledger rows failed (will retry): %s", exc.__class__.__name__)

    async def _next_batch(self) -> list[dict[str, Any]]:
        # Rows taken off the queue are in `_writing` at once: `flush` waits for them, `spill_pending` saves them.
        rows: list[dict[str, Any]] = []
        self._writing = rows
        if not self._stopping:
            rows.append(await self._queue.get())
        deadline = time.monotonic() + self._flush_s
        while len(rows) < self._batch_size:
            try:
                rows.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                try:
                    rows.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
        rows[:] = [r for r in rows if r is not _STOP]
        return rows

    async def run(self) -> None:
        """Write batches until `stop`, then what is still queued; never cancelled in the middle of a batch."""
        while True:
            rows = self._writing = await self._next_batch()
            if rows:
                await self._write(rows)
                self._done += len(rows)
                if self._wal.due():
                    self._wal.rotate(self._queued)
                self._wal.finished(self._done)
                if self._overflow is not None and self._overflow.due():
                    self._overflow.hand_over()
            self._writing = []
            if self._queue.empty():
                self._idle.set()
                if self._stopping:
                    self._wal.close(self._done, self._queued)
                    await self._write_overflow()
                    return

    async def _write_overflow(self) -> None:
        """At shutdown: the overflow's rows (and any dead process's segments) into the database now."""
        if self._overflow is not None:
            self._overflow.hand_over(final=True)
        try:
            await self._recover()
        except Exception as exc:  # the database is away: the segment waits for the next replay
            log.warning("writing the ledger's overflow at shutdown failed: %s", exc.__class__.__name__)

    def stop(self) -> None:
        self._stopping = True
        # A full queue: the writer is busy and sees the flag after its batch.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_STOP)

    async def flush(self) -> None:
        """Return once every queued row is written (or spilled)."""
        while not self._queue.empty() or self._writing:
            self._idle.clear()
            await self._idle.wait()

    def spill_pending(self) -> None:
        """The writer had to be cancelled (drain timeout): what it held or had queued goes to the spill file.

        A batch it was writing may be in the database already: replaying it is harmless (rows carry ids).
        """
        rows, self._writing = [r for r in self._writing if r is not _STOP], []
        while not self._queue.empty():
            row = self._queue.get_nowait()
            if row is not _STOP:
                rows.append(row)
        if rows:
            self._spill(rows)
        self._done = self._queued
        self._wal.close(self._done, self._queued)
        if self._overflow is not None:
            self._overflow.hand_over(final=True)
        self._idle.set()
