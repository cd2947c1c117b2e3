"""The ledger's write-ahead file: rows sunk by a process that dies are written by the next replay, exactly once;
a live process's segments are never taken; segments go only once their rows are written; a torn last line is
skipped; a clean shutdown leaves nothing behind."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.accounting.conftest import call_record
from tests.support import ROOT, until
from tiergate.gateway.accounting import ledger, ledger_wal
from tiergate.gateway.accounting.ledger import LedgerWriter, entry_from
from tiergate.gateway.accounting.ledger_wal import WAL_GLOB, LedgerWal
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.migrate import upgrade

pytestmark = pytest.mark.asyncio

# A process that sinks rows and then waits, its writer never running: every row is only queued (and written
# ahead). The test kills it with SIGKILL, as the kernel's OOM killer would.
_SINKER = """
import asyncio, sys
from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.ledger import LedgerWriter
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.db.engine import open_engine

async def main(url, spill_dir, n):
    writer = LedgerWriter(open_engine(url), batch_size=10, flush_s=60, retries=1, queue_size=1000,
                          spill_dir=spill_dir)
    for i in range(n):
        record = CallRecord(request_id=f"r{i}", endpoint="chat", principal=Principal("key", "t1", "k1"),
                            requested_model="student", started_at=0)
        record.cost_nano = 1000 + i
        writer.sink(record)
    print("sunk", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _writer(
    engine: AsyncEngine, spill_dir: Path, *, batch_size: int = 10, flush_s: float = 0.01
) -> LedgerWriter:
    return LedgerWriter(
        engine, batch_size=batch_size, flush_s=flush_s, retries=1, queue_size=100, spill_dir=str(spill_dir)
    )


async def _ledger(engine: AsyncEngine) -> dict[str, int]:
    """request_id -> its number of ledger rows."""
    async with engine.connect() as conn:
        query = text("SELECT request_id, COUNT(*) FROM ledger GROUP BY request_id")
        return {r: n for r, n in (await conn.execute(query)).all()}


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(WAL_GLOB))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    url: str = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    asyncio.run(upgrade(url))
    return url


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite database of the test's own."""
    await upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    yield engine
    await engine.dispose()


async def test_the_rows_of_a_killed_process_are_written_by_the_next_replay_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SINKER, database_url, str(spill), "7",
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
    )  # fmt: skip
    engine = open_engine(database_url)
    other = _writer(engine, spill)
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"sunk\n"
        (theirs,) = [p for p in _segments(spill) if p not in other.wal_segments()]
        assert len(theirs.read_bytes().splitlines()) == 7
        assert await other.replay() == 0  # alive: its segment is locked, so it is not taken
        assert theirs.exists() and await _ledger(engine) == {}
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert await other.replay() == 7  # dead: its lock went with it
    assert await other.replay() == 0
    assert other.stats.recovered == 7
    assert _segments(spill) == other.wal_segments()  # only the replaying process's own segment is left
    assert await _ledger(engine) == {f"r{i}": 1 for i in range(7)}
    await engine.dispose()


async def test_a_row_both_written_and_in_a_dead_segment_is_written_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    writer = _writer(engine, tmp_path / "spill")
    task = asyncio.ensure_future(writer.run())
    writer.sink(call_record(1))
    writer.stop()
    await task
    async with engine.connect() as conn:
        (row,) = [dict(r) for r in (await conn.execute(text("SELECT * FROM ledger"))).mappings()]
    # A process that had written it and died before its segment went.
    (tmp_path / "spill" / "tiergate-ledger-wal-1-dead-000001.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    assert await writer.replay() == 1
    assert await _ledger(engine) == {"r1": 1}


async def test_a_torn_last_line_and_a_garbled_line_are_skipped_with_a_log(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [orjson.dumps(entry_from(call_record(i))) for i in range(4)]
    # A dead process's segment: no lock held on it; killed inside the write of its last row.
    dead = tmp_path / "tiergate-ledger-wal-4242-0badc0de-000003.jsonl"
    dead.write_bytes(
        rows[0] + b"\n" + b"\x00\x00garbage\n" + rows[1] + b"\n" + rows[2] + b"\n" + rows[3][:40]
    )
    writer = _writer(engine, tmp_path)
    with caplog.at_level(logging.WARNING, logger="tiergate.ledger"):
        assert await writer.replay() == 3
    assert "skipped a partial last line" in caplog.text and "40 bytes" in caplog.text
    assert "skipped line 2" in caplog.text
    assert not dead.exists() and _segments(tmp_path) == writer.wal_segments()
    assert await _ledger(engine) == {"r0": 1, "r1": 1, "r2": 1}


async def test_a_segment_is_deleted_only_once_every_row_queued_while_it_was_current_is_done(
    tmp_path: Path,
) -> None:
    wal = LedgerWal(tmp_path)
    first = wal.segments()[0]
    for i in range(2):
        wal.append(entry_from(call_record(i)))
    wal.rotate(2)  # rows 1-2 are in the first segment
    second = wal.segments()[1]
    wal.append(entry_from(call_record(2)))
    wal.rotate(3)
    current = wal.segments()[2]
    wal.append(entry_from(call_record(3)))
    assert _segments(tmp_path) == sorted([first, second, current])
    wal.finished(1)  # row 2 is not done yet
    assert first.exists() and second.exists()
    wal.finished(2)
    assert not first.exists() and second.exists()
    wal.finished(3)
    assert not second.exists() and current.exists() and _segments(tmp_path) == [current]
    wal.close(3, 4)  # shutting down with row 4 not done: its segment stays for the next start
    assert _segments(tmp_path) == [current] and len(current.read_bytes().splitlines()) == 1
    again = LedgerWal(tmp_path)  # the closed segment is no one's any more: the next replay may take it
    (claimed,) = _claim_all(tmp_path)  # not `again`'s own: that one is locked
    assert claimed.path.name.startswith("tiergate-ledger-wal-replaying-") and len(claimed.rows) == 1
    again.close(0, 0)
    assert _segments(tmp_path) == []


def _claim_all(directory: Path) -> list[ledger_wal.Claimed]:
    taken = list(ledger_wal.claim_orphans(directory))
    for claimed in taken:
        claimed.done()
    return taken


async def test_the_running_writer_rotates_and_removes_what_it_wrote(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_wal, "ROTATE_EVERY_S", 0.0)  # rotate after every batch
    writer = _writer(engine, tmp_path / "spill", batch_size=2)
    first = writer.wal_segments()[0]
    task = asyncio.ensure_future(writer.run())
    for i in range(5):
        writer.sink(call_record(i))
    await writer.flush()
    # Every batch written: the segments holding them are gone; the current one holds nothing yet.
    (current,) = _segments(tmp_path / "spill")
    assert current != first and current.read_bytes() == b""
    writer.stop()
    await task
    assert await _ledger(engine) == {f"r{i}": 1 for i in range(5)}


async def test_a_clean_shutdown_leaves_no_segment_and_a_straggler_gets_a_new_one(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    writer = _writer(engine, tmp_path, flush_s=60)  # a partial batch would wait a minute: stop drains it
    task = asyncio.ensure_future(writer.run())
    for i in range(3):
        writer.sink(call_record(i))
    writer.stop()
    await task
    assert _segments(tmp_path) == [] and await _ledger(engine) == {"r0": 1, "r1": 1, "r2": 1}
    writer.sink(call_record(9))  # settled after the drain: nothing will write it now, the next start will
    (straggler,) = _segments(tmp_path)
    assert orjson.loads(straggler.read_bytes())["request_id"] == "r9"


async def test_rows_spilled_at_a_drain_timeout_leave_no_segment(engine: AsyncEngine, tmp_path: Path) -> None:
    writer = _writer(engine, tmp_path)  # its writer never ran (cancelled at the drain timeout)
    for i in range(3):
        writer.sink(call_record(i))
    writer.spill_pending()
    assert _segments(tmp_path) == [] and writer.spilled_files() == 1
    assert await writer.replay() == 3
    assert await _ledger(engine) == {"r0": 1, "r1": 1, "r2": 1}


async def test_a_group_commit_fsyncs_what_was_written_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    wal = LedgerWal(tmp_path)
    segment, directory = os.stat(wal.segments()[0]).st_ino, os.stat(tmp_path).st_ino
    await wal.sync()  # a new segment: its directory entry
    assert synced == [directory]
    wal.append(entry_from(call_record(0)))
    wal.append(entry_from(call_record(1)))
    await wal.sync()  # two rows, one fsync
    assert synced == [directory, segment]
    await wal.sync()  # nothing new
    assert synced == [directory, segment]
    wal.close(0, 0)


async def test_a_rotation_that_cannot_open_a_file_keeps_the_current_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = LedgerWal(tmp_path)
    (current,) = wal.segments()
    wal.append(entry_from(call_record(0)))
    real_open = os.open

    def disk_full(path: str | Path, flags: int, *args: int) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", disk_full)
    wal.rotate(1)
    monkeypatch.undo()
    assert "could not rotate" in caplog.text and wal.segments() == [current]
    wal.append(entry_from(call_record(1)))
    assert len(current.read_bytes().splitlines()) == 2
    wal.finished(1)  # nothing was rotated: the segment holds a row not done yet
    assert current.exists()
    wal.close(2, 2)
    assert _segments(tmp_path) == []


async def test_a_running_replica_takes_a_dead_neighbours_segment_at_its_periodic_replay(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "REPLAY_EVERY_S", 0.01)
    writer = _writer(engine, tmp_path)
    task = asyncio.ensure_future(writer.replay_periodically())
    try:
        # A worker sharing the directory died (no spill files anywhere: only its segment is left).
        dead = tmp_path / "tiergate-ledger-wal-77-0badc0de-000001.jsonl"
        dead.write_bytes(orjson.dumps(entry_from(call_record(5))) + b"\n")
        await until(lambda: writer.stats.recovered == 1, what="the periodic replay")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not dead.exists() and await _ledger(engine) == {"r5": 1}


async def test_rows_that_find_the_queue_full_are_held_on_disk_not_in_memory_and_written_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    writer = LedgerWriter(engine, batch_size=10, flush_s=0.01, retries=1, queue_size=3, spill_dir=str(spill))
    for i in range(8):
        writer.sink(call_record(i))
    assert writer.depth() == 3 and writer.stats.overflowed == 5  # the queue holds no more than its bound
    assert writer.stats.spilled == 0 and not list(spill.glob(ledger.SPILL_GLOB))  # no fsync'd spill per row
    overflow = [p for p in _segments(spill) if p not in writer.wal_segments()]
    assert len(overflow) == 1 and len(overflow[0].read_bytes().splitlines()) == 5
    other = _writer(engine, spill)
    assert await other.replay() == 0  # held by a live writer: no one else takes it yet
    task = asyncio.ensure_future(writer.run())
    await writer.flush()
    assert await _ledger(engine) == {f"r{i}": 1 for i in range(3)}  # the queue's rows
    writer.stop()
    await task  # a clean shutdown hands the overflow over and writes it
    assert await _ledger(engine) == {f"r{i}": 1 for i in range(8)}
    assert _segments(spill) == other.wal_segments()  # only the other writer's own (empty) segment


async def test_a_running_writer_hands_its_overflow_to_the_replays(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_wal, "ROTATE_EVERY_S", 0.0)  # every batch rotates and hands over
    spill = tmp_path / "spill"
    writer = LedgerWriter(engine, batch_size=2, flush_s=0.01, retries=1, queue_size=2, spill_dir=str(spill))
    for i in range(6):
        writer.sink(call_record(i))
    task = asyncio.ensure_future(writer.run())
    await writer.flush()
    # The overflow's segment is unlocked after the batch: any replay (here another writer's) writes it.
    assert await _writer(engine, spill).replay() == 4
    assert await _ledger(engine) == {f"r{i}": 1 for i in range(6)}
    writer.stop()
    await task
    assert await _ledger(engine) == {f"r{i}": 1 for i in range(6)}  # nothing written twice
