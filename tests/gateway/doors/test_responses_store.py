"""Stored responses on both databases: `store`, `previous_response_id`, GET / DELETE / input_items, tenant walls,
the chain bound and retention."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select, update
from starlette.responses import Response

from tests.admin.conftest import ADMIN, Served, config, serve
from tests.gateway.doors.test_responses import CHAT_STREAM, _events
from tiergate.gateway.accounting.auth import MASTER, Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.responses import ResponsesPolicy
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.db.models import StoredResponse
from tiergate.gateway.doors.door import through
from tiergate.gateway.doors.responses import ResponsesDoor
from tiergate.gateway.doors.responses_output import RequestEcho
from tiergate.gateway.doors.responses_store import ResponseStore
from tiergate.gateway.doors.responses_stream import ResponsesStream

_T = StoredResponse.__table__  # type: ignore[attr-defined]


def _echo_answer(request: httpx.Request) -> httpx.Response:
    """A chat answer naming how many messages it was sent: `seen N`."""
    body = orjson.loads(request.content)
    return httpx.Response(200, json={
        "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"seen {len(body['messages'])}"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })  # fmt: skip


def _sent(s: Served) -> list[list[dict[str, Any]]]:
    return [orjson.loads(call.request.content)["messages"] for call in s.router.calls]


async def _key(s: Served) -> dict[str, str]:
    tenant = await s.new_tenant()
    return {"authorization": f"Bearer {(await s.new_key(tenant['id']))['key']}"}


async def _create(s: Served, auth: dict[str, str], **fields: Any) -> httpx.Response:
    return await s.client.post("/v1/responses", json={"model": "student", **fields}, headers=auth)


async def _rows(s: Served) -> int:
    async with s.gateway.accounting.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(_T))).scalar_one())


async def test_a_stored_conversation_is_continued_retrieved_listed_and_deleted(
    empty_database_url: str,
) -> None:
    await migrate.upgrade(empty_database_url)
    async with serve(config(empty_database_url), _echo_answer) as s:
        auth = await _key(s)
        first = await _create(s, auth, input="one", instructions="Be brief.")
        assert first.status_code == 200, first.text
        r1 = first.json()
        assert re.fullmatch(r"resp_[0-9a-f]{32}", r1["id"]) and r1["store"] is True
        assert r1["output"][0]["id"] == f"msg_{r1['id'][5:]}_0"
        second = (await _create(s, auth, input=[{"role": "user", "content": "two"}], previous_response_id=r1["id"],
                                instructions="Be kind.")).json()  # fmt: skip
        assert second["previous_response_id"] == r1["id"] and second["instructions"] == "Be kind."
        third = (await _create(s, auth, input="three", previous_response_id=second["id"])).json()
        # The stored chain, oldest first, then the new input; only this request's instructions.
        assert _sent(s) == [
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"}],
            [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "one"},
             {"role": "assistant", "content": "seen 2"}, {"role": "user", "content": "two"}],
            [{"role": "user", "content": "one"}, {"role": "assistant", "content": "seen 2"},
             {"role": "user", "content": "two"}, {"role": "assistant", "content": "seen 4"},
             {"role": "user", "content": "three"}],
        ]  # fmt: skip
        got = await s.client.get(f"/v1/responses/{second['id']}", headers=auth)
        assert got.status_code == 200 and got.json() == second
        items = (await s.client.get(f"/v1/responses/{second['id']}/input_items", headers=auth)).json()
        assert items == {
            "object": "list", "has_more": False, "first_id": f"msg_{second['id'][5:]}_in0",
            "last_id": f"msg_{second['id'][5:]}_in0",
            "data": [{"id": f"msg_{second['id'][5:]}_in0", "type": "message", "role": "user", "content": "two"}],
        }  # fmt: skip
        deleted = await s.client.delete(f"/v1/responses/{second['id']}", headers=auth)
        assert deleted.json() == {"id": second["id"], "object": "response", "deleted": True}
        assert (await s.client.get(f"/v1/responses/{second['id']}", headers=auth)).status_code == 404
        assert (await s.client.delete(f"/v1/responses/{second['id']}", headers=auth)).status_code == 404
        # The third continues the deleted second: its conversation cannot be rebuilt.
        broken = await _create(s, auth, input="four", previous_response_id=third["id"])
        assert broken.status_code == 404 and broken.json()["error"]["param"] == "previous_response_id"
        assert second["id"] in broken.json()["error"]["message"] and len(s.router.calls) == 3


async def test_another_tenants_or_an_unknown_id_is_a_404_that_changes_nothing(
    empty_database_url: str,
) -> None:
    await migrate.upgrade(empty_database_url)
    async with serve(config(empty_database_url), _echo_answer) as s:
        mine, theirs = await _key(s), await _key(s)
        stored = (await _create(s, mine, input="secret")).json()["id"]
        for rid in (stored, "resp_unknown"):
            refused = await _create(s, theirs, input="x", previous_response_id=rid)
            assert refused.status_code == 404
            assert refused.json()["error"]["type"] == "invalid_request_error"
            assert refused.json()["error"]["param"] == "previous_response_id"
            for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/input_items")):
                answer = await s.client.request(method, f"/v1/responses/{rid}{path}", headers=theirs)
                assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        assert len(s.router.calls) == 1 and await _rows(s) == 1  # no upstream call, nothing stored or deleted
        assert (await s.client.get(f"/v1/responses/{stored}", headers=mine)).status_code == 200
        assert (await s.client.get(f"/v1/responses/{stored}", headers=ADMIN)).status_code == 200
        assert (await s.client.get("/v1/responses/resp_x")).status_code == 401


async def test_store_false_stores_nothing_and_cannot_be_continued(sqlite_url: str) -> None:
    async with serve(config(sqlite_url), _echo_answer) as s:
        auth = await _key(s)
        answer = (await _create(s, auth, input="one", store=False)).json()
        assert answer["store"] is False and answer["id"] == "resp_c1"  # named after the chat completion
        refused = await _create(s, auth, input="two", previous_response_id=answer["id"])
        assert refused.status_code == 404 and refused.json()["error"]["param"] == "previous_response_id"
        assert (await s.client.get(f"/v1/responses/{answer['id']}", headers=auth)).status_code == 404
        assert await _rows(s) == 0


async def test_a_streamed_response_is_stored_and_continued(sqlite_url: str) -> None:
    def stream(request: httpx.Request) -> httpx.Response:
        if orjson.loads(request.content).get("stream"):
            return httpx.Response(200, content=CHAT_STREAM, headers={"content-type": "text/event-stream"})
        return _echo_answer(request)

    async with serve(config(sqlite_url), stream) as s:
        auth = await _key(s)
        streamed = await _create(s, auth, input="weather?", stream=True)
        final = _events(streamed.content)[-1]
        assert final["type"] == "response.completed" and final["response"]["store"] is True
        stored = (await s.client.get(f"/v1/responses/{final['response']['id']}", headers=auth)).json()
        assert stored == final["response"]
        await _create(s, auth, input=[{"type": "function_call_output", "call_id": "call_1", "output": "sun"}],
                      previous_response_id=stored["id"])  # fmt: skip
        assert _sent(s)[1] == [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
        ]  # fmt: skip


async def test_a_stored_streams_last_event_waits_until_the_response_is_stored() -> None:
    kept: list[dict[str, Any]] = []

    async def keep(response: dict[str, Any]) -> bool:
        kept.append(response)
        return len(kept) == 1  # the first is stored, the second could not be

    for stored in (True, False):
        translator = ResponsesStream(RequestEcho({}, "abc"), keep)
        body = translator.feed(CHAT_STREAM) + translator.close()
        assert b"response.completed" not in body and len(kept) == (0 if stored else 1)
        final = _events(await translator.release())
        assert [e["type"] for e in final] == ["response.completed"] and kept[-1]["id"] == "resp_abc"
        assert final[0]["response"]["store"] is stored and await translator.release() == b""


async def test_a_response_the_database_refused_is_answered_as_not_stored(sqlite_url: str) -> None:
    async with serve(config(sqlite_url), _echo_answer) as s:
        auth = await _key(s)
        async with s.gateway.accounting.engine.begin() as conn:
            await conn.run_sync(_T.drop)
        answer = await _create(s, auth, input="one")
        assert answer.status_code == 200 and answer.json()["store"] is False
        assert answer.json()["output"][0]["content"][0]["text"] == "seen 1"


async def test_a_conversation_longer_than_max_chain_is_refused(sqlite_url: str) -> None:
    async with serve(config(sqlite_url, responses={"max_chain": 2}), _echo_answer) as s:
        auth = await _key(s)
        previous = None
        for _ in range(3):  # the third continues a chain of two: the most it may bring in
            previous = (await _create(s, auth, input="x", previous_response_id=previous)).json()["id"]
        refused = await _create(s, auth, input="x", previous_response_id=previous)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "previous_response_id"
        assert "responses.max_chain" in refused.json()["error"]["message"] and len(s.router.calls) == 3


async def test_input_items_are_paged_in_openais_list_shape(sqlite_url: str) -> None:
    async with serve(config(sqlite_url), _echo_answer) as s:
        auth = await _key(s)
        items = [{"role": "user", "content": str(i)} for i in range(3)]
        rid = (await _create(s, auth, input=items)).json()["id"]

        async def page(query: str) -> Any:
            return (await s.client.get(f"/v1/responses/{rid}/input_items?{query}", headers=auth)).json()

        newest = await page("limit=2")
        assert [i["content"] for i in newest["data"]] == ["2", "1"] and newest["has_more"] is True
        rest = await page(f"limit=2&after={newest['last_id']}")
        assert [i["content"] for i in rest["data"]] == ["0"] and rest["has_more"] is False
        assert [i["content"] for i in (await page("order=asc"))["data"]] == ["0", "1", "2"]
        for bad, param in (("limit=0", "limit"), ("order=up", "order"), ("after=nope", "after")):
            assert (await page(bad))["error"]["param"] == param


async def test_responses_past_their_retention_are_deleted_in_the_background(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)
    settings = config(empty_database_url, responses={"retention_days": 7, "prune_interval_s": 0.05})
    async with serve(settings, _echo_answer) as s:
        auth = await _key(s)
        old, new = [(await _create(s, auth, input="x")).json()["id"] for _ in range(2)]
        eight_days_ago = int(time.time() * 1000) - 8 * 86_400_000
        async with s.gateway.accounting.engine.begin() as conn:
            await conn.execute(update(_T).where(_T.c.id == old).values(created_ms=eight_days_ago))

        async def gone() -> bool:
            return (await s.client.get(f"/v1/responses/{old}", headers=auth)).status_code == 404

        deadline = time.monotonic() + 10
        while not await gone():
            assert time.monotonic() < deadline, "the old response was never deleted"
            await asyncio.sleep(0.02)  # poll: the pruning task runs every 50 ms
        assert (await s.client.get(f"/v1/responses/{new}", headers=auth)).status_code == 200


async def test_a_replayed_stream_through_the_door_is_stored_before_its_last_event() -> None:
    saved: list[dict[str, Any]] = []

    class Store:
        async def save(self, principal: Any, response: dict[str, Any], items: Any, previous: Any) -> bool:
            saved.append(response)
            return True

    door = ResponsesDoor(Store())  # type: ignore[arg-type]
    await door.chat_body(MASTER, {}, orjson.dumps({"model": "m", "input": "hi", "stream": True}))
    record = CallRecord(
        request_id="r", endpoint="responses", principal=MASTER, requested_model="m", started_at=0
    )
    # A cache hit or a verified cascade answer: the whole chat stream at once, not a relay.
    replayed = await through(door, Response(CHAT_STREAM, media_type="text/event-stream"), record)
    final = _events(bytes(replayed.body))[-1]  # type: ignore[union-attr]
    assert final["type"] == "response.completed" and saved == [final["response"]]


async def test_responses_stored_at_once_are_committed_together_and_a_refused_one_alone(
    empty_database_url: str,
) -> None:
    await migrate.upgrade(empty_database_url)
    engine = open_engine(empty_database_url)
    store = ResponseStore(engine, ResponsesPolicy())
    batches: list[int] = []
    write = store._rows.write

    async def counted(rows: list[dict[str, Any]]) -> None:
        batches.append(len(rows))
        await write(rows)

    store._rows.write = counted  # type: ignore[method-assign]
    key = Principal("key", tenant_id="t1", key_id="k1")

    def save(i: int) -> Any:
        status = None if i == 5 else "completed"  # NOT NULL: the database refuses this one
        return store.save(key, {"id": f"resp_{i}", "status": status, "output": []}, [], None)

    try:
        first = asyncio.ensure_future(save(0))
        for _ in range(2):  # the first is queued, then the writer takes it and waits for the database
            await asyncio.sleep(0)
        saved = [await first, *await asyncio.gather(*(save(i) for i in range(1, 10)))]
        assert saved == [i != 5 for i in range(10)]
        # The first alone; the nine that came while it was written in one, refused; then each alone.
        assert batches == [1, 9, *[1] * 9]
        assert await store.conversation(key, "resp_9") == []
    finally:
        store.close()
        await engine.dispose()
