"""The route-table document's `sampling` field, table-driven: what is accepted, and what is refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.policies.route_table import RouteTableDoc, RouteTableError, Sampling, parse_route_table

ROUTES = {"billing": "student", "code": "teacher"}


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"billing": {"monitor": 0.03, "incumbent": "teacher"}}, {"billing": Sampling(0.03, "teacher")}),
        ({"billing": {"monitor": 1, "incumbent": "ta"}}, {"billing": Sampling(1.0, "ta")}),
        ({"code": {"explore": 0.3}}, {"code": Sampling(0.3)}),
        ({"cooking": {"explore": 0}}, {"cooking": Sampling(0.0)}),  # exploring needs no route
    ],
)
def test_sampling_accepted(sampling: Any, expected: dict[str, Sampling]) -> None:
    doc = parse_route_table({"routes": ROUTES, "sampling": sampling}, 2)
    assert doc.sampling == expected
    # What a store keeps (`as_json`) reads back as the same document.
    assert parse_route_table(doc.as_json(), 2) == doc


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        ([], "sampling"),
        ({"billing": 0.03}, "sampling.billing"),
        ({"billing": {}}, "sampling.billing"),
        ({"billing": {"monitor": 0.03}}, "sampling.billing"),  # monitoring names its incumbent
        ({"billing": {"explore": 0.3, "incumbent": "teacher"}}, "sampling.billing"),
        ({"billing": {"monitor": 0.1, "explore": 0.3, "incumbent": "teacher"}}, "sampling.billing"),
        ({"billing": {"explore": 1.5}}, "sampling.billing.explore"),
        ({"billing": {"explore": -0.1}}, "sampling.billing.explore"),
        ({"billing": {"explore": float("nan")}}, "sampling.billing.explore"),
        ({"billing": {"explore": True}}, "sampling.billing.explore"),
        ({"billing": {"explore": "0.3"}}, "sampling.billing.explore"),
        ({"billing": {"monitor": 2, "incumbent": "teacher"}}, "sampling.billing.monitor"),
        ({"billing": {"monitor": 0.03, "incumbent": "intern"}}, "sampling.billing.incumbent"),
        ({"billing": {"monitor": 0.03, "incumbent": "student"}}, "sampling.billing.incumbent"),  # not above
        ({"code": {"monitor": 0.03, "incumbent": "ta"}}, "sampling.code.incumbent"),  # below the route
        ({"cooking": {"monitor": 0.03, "incumbent": "teacher"}}, "sampling.cooking.incumbent"),  # unrouted
        ({"": {"explore": 0.3}}, "sampling."),
    ],
)
def test_bad_sampling_is_refused_by_name(sampling: Any, param: str) -> None:
    with pytest.raises(RouteTableError) as caught:
        parse_route_table({"routes": ROUTES, "sampling": sampling}, 2)
    assert caught.value.param == param


def test_a_document_without_sampling_shows_it_empty() -> None:
    assert RouteTableDoc({"billing": "student"}).as_json()["sampling"] == {}
