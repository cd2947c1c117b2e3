"""Batch writes in which one record never costs another.

A background writer sends a batch to its store in one call. When the store refuses the batch for a reason
other than being away (a value it cannot hold, an entry it finds malformed), `write_each` writes the records
one at a time, so the record at fault is refused alone and every other one is written. Each writer decides
what becomes of a record refused alone (the ledger keeps it in a file, traces and cache entries are dropped),
counts it, and logs it by its ids with `log_refused` - never its content.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class EachWritten(Generic[T]):
    """What became of a batch written one record at a time."""

    written: int = 0
    refused: list[tuple[T, Exception]] = field(default_factory=list)  # refused alone, with the reason
    away: list[T] = field(default_factory=list)  # not written: the store went away meanwhile


async def write_each(
    records: Sequence[T],
    write: Callable[[list[T]], Awaitable[object]],
    unreachable: Callable[[BaseException], bool],
) -> EachWritten[T]:
    """Write `records` one by one with `write`; once the store is `unreachable`, the rest are not tried."""
    done: EachWritten[T] = EachWritten()
    for i, record in enumerate(records):
        try:
            await write([record])
        except Exception as exc:
            if unreachable(exc):
                done.away.extend(records[i:])
                return done
            done.refused.append((record, exc))
        else:
            done.written += 1
    return done


def log_refused(log: logging.Logger, what: str, ids: str, exc: Exception, fate: str) -> None:
    """One line for a record refused on its own: which one (`ids`), why (the error's class only: its message
    may quote the record's content), and what became of it (`fate`)."""
    log.error(
        "%s %s not written (%s), the rest of its batch was; %s", what, ids, exc.__class__.__name__, fate
    )
