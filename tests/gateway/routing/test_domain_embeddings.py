"""Domain inference by an upstream embeddings deployment (`routing.domains.embeddings`): seeds and queries
embedded by it, identical texts embedded once, failures routed as `general`, its spend booked as `routing`,
and route tables of another vector space refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.admin.conftest import ADMIN, answer, config, serve
from tests.support import metric, parse_metrics, until
from tiergate.admin.jobs import promote
from tiergate.admin.jobs.promote_evidence import TraceRow, Window
from tiergate.admin.reports import ReportQuery, cost_report
from tiergate.gateway.accounting.auth import MASTER
from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.routing import DomainEmbeddings
from tiergate.gateway.errors import UpstreamFailed
from tiergate.gateway.routing.domain_embeddings import EmbeddingUnavailable, UpstreamEmbedder
from tiergate.gateway.routing.local_embeddings import Embedder
from tiergate.gateway.routing.table_store import refresh
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.policies.route_table import RouteTableDoc

SEEDS = {
    "billing": ["How do I update my credit card?", "Why was I charged twice on my invoice?"],
    "cooking": ["How long should I boil an egg?", "What temperature should I roast a chicken at?"],
}
WORDS = {
    0: ("refund", "charged", "card", "invoice", "billed"),
    1: ("boil", "roast", "bake", "egg", "chicken"),
}
DIMS = 4


def vector(text: str) -> list[float]:
    """The fake deployment's embedding: one axis per topic's words, a constant third so none is zero."""
    lower = text.lower()
    return [sum(w in lower for w in WORDS[0]), sum(w in lower for w in WORDS[1]), 0.5, 0.0]


class Upstream:
    """Chat answers as `answer`; `/embeddings` from `vector`, or 500 while `failing`."""

    def __init__(self) -> None:
        self.inputs: list[list[str]] = []
        self.failing = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/embeddings"):
            return answer(request)
        inputs = orjson.loads(request.content)["input"]
        self.inputs.append(inputs)
        if self.failing:
            return httpx.Response(500, json={"error": {"message": "down", "type": "server_error"}})
        data = [{"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(inputs)]
        return httpx.Response(200, json={"object": "list", "data": data, "usage": {"prompt_tokens": 7}})

    def embedded(self, text: str) -> int:
        return sum(inputs == [text] for inputs in self.inputs)


def routed(database_url: str, cache: dict[str, Any] | None = None, **domains: Any) -> Any:
    embeddings = {"deployment": "embedder", "dimensions": DIMS, **domains.pop("embeddings", {})}
    return config(
        database_url,
        routing={
            "strategy": "promotion",
            "route_table": {"billing": "student"},
            "refresh_s": 0.05,
            "domains": {"floor": 0.6, "seed": SEEDS, "embeddings": embeddings, **domains},
        },
        cache=cache or {"exact": {"enabled": False}},
    )


def ask(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


async def test_domains_are_inferred_by_the_deployment_and_its_calls_booked_as_routing(
    sqlite_url: str,
) -> None:
    upstream = Upstream()
    async with serve(routed(sqlite_url), upstream) as s:
        assert s.gateway.embedder is None  # the local model is not loaded: nothing else needs it
        assert upstream.inputs == [SEEDS["billing"], SEEDS["cooking"]]  # the seeds, at startup
        billing = await s.client.post(
            "/v1/chat/completions", json=ask("I was billed twice, refund me"), headers=ADMIN
        )
        cooking = await s.client.post("/v1/chat/completions", json=ask("How do I bake bread?"), headers=ADMIN)
        other = await s.client.post("/v1/chat/completions", json=ask("Explain entanglement"), headers=ADMIN)
        assert billing.headers["x-tiergate-tier"] == "student"
        assert cooking.headers["x-tiergate-tier"] == other.headers["x-tiergate-tier"] == "teacher"
        await s.flushed()
        report = await cost_report(s.gateway.accounting.engine, s.gateway.settings, ReportQuery())
    # Two seed calls and three query calls, 7 tokens each at $0.5/Mtok; not client spend.
    assert report["total"]["routing_calls"] == 5 and report["total"]["requests"] == 3
    assert report["total"]["routing_cost_usd"] == pytest.approx(5 * 7 * 0.5e-6)
    assert report["total"]["evaluation_calls"] == 0


async def test_the_trace_vector_is_the_deployments_and_requests_without_a_domain_embed_nothing(
    sqlite_url: str,
) -> None:
    upstream = Upstream()
    async with serve(routed(sqlite_url), upstream) as s:
        records: list[Any] = []
        s.gateway.sinks.append(records.append)
        await s.client.post("/v1/chat/completions", json=ask("refund my card"), headers=ADMIN)
        calls = len(upstream.inputs)
        await s.client.post("/v1/chat/completions", json={**ask("refund"), "model": "student"}, headers=ADMIN)
        assert len(upstream.inputs) == calls  # a tier alias needs no domain
    assert records[0].domain == "billing" and len(records[0].query_vector) == DIMS
    assert records[1].query_vector is None


async def test_identical_texts_are_embedded_once(sqlite_url: str) -> None:
    upstream = Upstream()
    async with serve(routed(sqlite_url), upstream) as s:
        for _ in range(2):
            r = await s.client.post("/v1/chat/completions", json=ask("Where is my invoice?"), headers=ADMIN)
            assert r.headers["x-tiergate-tier"] == "student"
        together = await asyncio.gather(
            *(
                s.client.post("/v1/chat/completions", json=ask("roast a chicken"), headers=ADMIN)
                for _ in range(3)
            )
        )
        assert all(r.status_code == 200 for r in together)
    assert upstream.embedded("Where is my invoice?") == 1
    assert upstream.embedded("roast a chicken") == 1  # three at once share one call


async def test_a_failing_deployment_routes_as_general_and_the_seeds_are_retried(sqlite_url: str) -> None:
    upstream = Upstream()
    upstream.failing = True
    async with serve(routed(sqlite_url), upstream) as s:  # starts although the seeds could not be embedded
        records: list[Any] = []
        s.gateway.sinks.append(records.append)
        r = await s.client.post("/v1/chat/completions", json=ask("refund my card"), headers=ADMIN)
        assert r.status_code == 200 and r.headers["x-tiergate-tier"] == "teacher"
        assert records[0].domain == "general"
        assert (
            "domain embedding failed: embedder: every upstream deployment failed" in records[0].route_reason
        )
        # The routing call's failed attempts are counted like a client request's, though its record is not.
        (embedder,) = (d.id for d in s.gateway.fleet.snapshot.deployments if d.model == "embedder")
        scraped = parse_metrics((await s.client.get("/metrics", headers=ADMIN)).text)
        # At least the seeds' call at startup and the query's; the seeds are retried in the background.
        assert metric(scraped, "tiergate_upstream_errors_total", deployment=embedder, kind="500") >= 2
        upstream.failing = False
        await until(lambda: s.gateway.router.seed_centroids or None, what="the seeds embedded on a retry")
        again = await s.client.post("/v1/chat/completions", json=ask("refund my card"), headers=ADMIN)
        assert again.headers["x-tiergate-tier"] == "student"


async def test_route_tables_of_another_dimension_are_refused(sqlite_url: str) -> None:
    upstream = Upstream()
    async with serve(routed(sqlite_url), upstream) as s:
        local = {"routes": {"cooking": "student"}, "centroids": {"cooking": [1.0] + [0.0] * 383}}
        refused = await s.client.put("/admin/route-table", json=local, headers=ADMIN)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "centroids.cooking" and f"list of {DIMS} finite numbers" in error["message"]
        assert await s.gateway.control.route_tables.latest_version() == 0
        ok = await s.client.put(
            "/admin/route-table",
            json={"routes": {"cooking": "student"}, "centroids": {"cooking": [0, 1, 0, 0]}},
            headers=ADMIN,
        )
        assert ok.status_code == 201
        cooking = await s.client.post("/v1/chat/completions", json=ask("boil an egg"), headers=ADMIN)
        assert cooking.headers["x-tiergate-tier"] == "student"
        # A version written by another process (an older config's promote) is not installed when loaded.
        await s.gateway.control.route_tables.append(
            RouteTableDoc({"cooking": "teacher"}, {"cooking": tuple(local["centroids"]["cooking"])}),
            author="other",
            base_version=None,
        )
        assert await refresh(s.gateway.control.route_tables, s.gateway.router) is False
        assert s.gateway.router.snapshot.table.version == 1 and s.gateway.router.refused_version == 2
        back = await s.client.post("/admin/route-table/rollback", json={"to_version": 2}, headers=ADMIN)
        assert back.status_code == 400 and "has 384 dimensions" in back.json()["error"]["message"]
        with pytest.raises(
            promote.PromoteError, match="route table v2: centroid 'cooking' has 384 dimensions"
        ):
            await promote.run_promote(
                s.gateway.accounting.engine, s.gateway.control.route_tables, s.gateway.settings
            )


def test_promote_leaves_out_vectors_of_another_embedder() -> None:
    def row(n: int) -> TraceRow:
        return TraceRow(None, f"r{n}", "billing", "student", 1, "t", np.ones(n, dtype=np.float32))

    window = promote.in_space(Window(0, [row(DIMS), row(384)], [], []), DIMS)
    assert [t.vector is not None for t in window.traces] == [True, False]


async def test_the_semantic_cache_keeps_the_local_model(sqlite_url: str) -> None:
    settings = routed(sqlite_url, cache={"exact": {"enabled": False}, "semantic": {"enabled": True}})
    upstream = Upstream()
    async with serve(settings, upstream) as s:
        assert isinstance(s.gateway.embedder, Embedder) and s.gateway.domain_embedder is not None
        assert s.gateway.caches.semantic is not None
        records: list[Any] = []
        s.gateway.sinks.append(records.append)
        await s.client.post("/v1/chat/completions", json=ask("refund my card"), headers=ADMIN)
    assert records[0].domain == "billing" and len(records[0].query_vector) == DIMS


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        (
            {"deployment": "nope", "dimensions": 4},
            'routing.domains.embeddings.deployment: "nope" is neither a configured model name nor a configured tier',
        ),
        (
            {"deployment": "embedder"},
            "routing.domains.embeddings.dimensions: required, missing (the length of the vectors it returns)",
        ),
        (
            {"deployment": "embedder", "dimensions": 0},
            "routing.domains.embeddings.dimensions: 0 is not an integer >= 1",
        ),
        (
            {"deployment": "embedder", "dimensions": 4, "model": "x"},
            "routing.domains.embeddings.model: unknown field (allowed: cache_size, deployment, dimensions, timeout_s)",
        ),
    ],
)
def test_config_errors(embeddings: dict[str, Any], message: str, sqlite_url: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(sqlite_url, routing={"domains": {"embeddings": embeddings}})
    assert str(info.value) == message


def test_a_tier_may_serve_the_embeddings(sqlite_url: str) -> None:
    settings = config(
        sqlite_url, routing={"domains": {"embeddings": {"deployment": "student", "dimensions": 8}}}
    )
    assert settings.routing.domains.dimensions == 8
    assert config(sqlite_url).routing.domains.dimensions == 384  # the local MiniLM


class Stalled:
    """An upstream client whose calls wait until released: in-flight sharing and the deadline."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def embeddings(self, plan: Any, request: Any, **_: Any) -> Any:
        self.calls += 1
        await self.release.wait()
        raise UpstreamFailed("released")


async def test_a_slow_deployment_misses_the_deadline_and_waiters_share_one_call(sqlite_url: str) -> None:
    settings = config(sqlite_url)
    stalled = Stalled()
    embedder = UpstreamEmbedder(
        DomainEmbeddings("embedder", DIMS, timeout_s=0.05),
        stalled,  # type: ignore[arg-type]
        Fleet(settings.deployments),
        lambda record: None,
        None,  # type: ignore[arg-type]
    )
    results = await asyncio.gather(
        *(embedder.avector("same", MASTER, "r") for _ in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, EmbeddingUnavailable) and "within 0.05 s" in str(r) for r in results)
    assert stalled.calls == 1
    stalled.release.set()  # the shared call ends; its failure is retrieved though no one waits any more
    await until(lambda: not embedder._flying or None, what="the shared call to end")
