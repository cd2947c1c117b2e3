"""`write_each`: a batch written record by record, refused records set aside, and nothing tried once the
store is away."""

from __future__ import annotations

from tiergate.gateway.db.batches import write_each


class Away(Exception):
    pass


async def test_refused_records_are_set_aside_and_the_rest_written_until_the_store_goes_away() -> None:
    written: list[int] = []
    tried: list[int] = []

    async def write(records: list[int]) -> None:
        (record,) = records
        tried.append(record)
        if record in (2, 4):
            raise ValueError(f"cannot store {record}")
        if record == 6:
            raise Away
        written.append(record)

    done = await write_each([1, 2, 3, 4, 5, 6, 7, 8], write, lambda exc: isinstance(exc, Away))
    assert written == [1, 3, 5] and done.written == 3
    assert [(r, str(e)) for r, e in done.refused] == [(2, "cannot store 2"), (4, "cannot store 4")]
    assert done.away == [6, 7, 8] and tried == [1, 2, 3, 4, 5, 6]  # 7 and 8 never tried
