"""Call records: what one costs while it waits in a background queue."""

from __future__ import annotations

import tracemalloc

import pytest

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord

PRINCIPAL = Principal("key", tenant_id="ten_a", key_id="key_a")


def new_record(n: int) -> CallRecord:
    return CallRecord(f"req_{n}", "chat", PRINCIPAL, "auto", started_at=1_700_000_000.0 + n)


def test_a_record_holds_its_fields_in_slots_not_in_a_per_instance_dict() -> None:
    record = new_record(0)
    assert not hasattr(record, "__dict__")
    with pytest.raises(AttributeError):
        record.misspelt_field = 1  # type: ignore[attr-defined]


def test_ten_thousand_queued_records_cost_under_half_a_kilobyte_each_besides_their_content() -> None:
    # The trace queue holds up to `learning.traces.queue_size` (2,000 by default) records while its writer is
    # behind (bench/soak.py); each record's own fields, without the request and answer it points to, cost ~1.7 KB
    # before slots (the instance dict) and ~0.4 KB with them.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        queued = [new_record(n) for n in range(10_000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(queued) == 10_000
    assert held / 10_000 < 512
