"""Imports point one way: policies <- gateway <- admin (see DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tiergate"
# Libraries that do I/O (network, disk, databases, frameworks): decisions in policies/ must not need them.
IO_LIBRARIES = {
    "aiohttp", "httpx", "redis", "chromadb", "sqlmodel", "sqlalchemy", "asyncpg", "aiosqlite", "starlette",
    "uvicorn", "litellm", "onnxruntime", "tokenizers", "tiktoken", "alembic", "yaml", "socket", "requests",
    "prometheus_client", "opentelemetry", "subprocess", "pathlib", "os", "asyncio",
}  # fmt: skip
FORBIDDEN = {
    "policies": {"tiergate.gateway", "tiergate.admin"},
    "gateway": {"tiergate.admin"},
    "admin": set(),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_one_way(layer: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if layer == "policies" and name.split(".")[0] in IO_LIBRARIES:
                wrong.append(f"{path.relative_to(PACKAGE)} imports the I/O library {name}")
    assert not wrong, "layering broken:\n" + "\n".join(wrong)


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from tiergate.gateway.app import create_app\nimport httpx\n")
    assert {"tiergate.gateway.app", "httpx"} <= _imports(bad)


# The arrows between the gateway's parts that their `__init__.py` docstrings declare: a part may import the
# parts named here (and `tiergate.policies`), never the request path at `tiergate/gateway/` itself, which may
# import any part. `errors` is the exception tree every layer raises.
GATEWAY_PARTS: dict[str, set[str]] = {
    "errors": set(),
    "config": set(),
    "db": {"config", "errors"},
    "http": {"errors"},
    "upstream": {"config", "http", "errors"},
    "accounting": {"config", "db", "upstream", "errors"},
    "routing": {"config", "db", "http", "upstream", "accounting", "errors"},
    "cache": {"config", "db", "http", "upstream", "accounting", "routing", "errors"},
    "telemetry": {"config", "upstream", "accounting", "errors"},
    "learning": {"config", "db", "http", "upstream", "accounting", "routing", "errors"},
    "doors": {"config", "db", "http", "upstream", "accounting", "errors"},
}
REQUEST_PATH = "request path"


def gateway_part(module: str) -> str | None:
    """The part of the gateway a module belongs to (None: not in tiergate.gateway)."""
    parts = module.split(".")
    if parts[:2] != ["tiergate", "gateway"]:
        return None
    if len(parts) > 2 and parts[2] in GATEWAY_PARTS:
        return parts[2]
    return REQUEST_PATH


def part_arrows(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> the module imports that draw that arrow."""
    arrows: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        source = gateway_part(module)
        for target in targets:
            sink = gateway_part(target)
            if source is not None and sink is not None and source != sink:
                arrows.setdefault((source, sink), []).append(f"{module} -> {target}")
    return arrows


def wrong_arrows(arrows: dict[tuple[str, str], list[str]]) -> list[str]:
    return [
        f"{source} -> {sink}: {', '.join(sorted(why))}"
        for (source, sink), why in sorted(arrows.items())
        if source != REQUEST_PATH and sink not in GATEWAY_PARTS[source]
    ]


def test_the_gateway_parts_import_only_the_parts_below_them() -> None:
    from tests.test_import_cycles import import_graph

    wrong = wrong_arrows(part_arrows(import_graph(PACKAGE)))
    assert not wrong, "arrows the gateway's __init__ docstrings do not allow:\n" + "\n".join(wrong)


def test_the_declared_parts_form_a_dag() -> None:
    from tests.test_import_cycles import cycles

    assert cycles(GATEWAY_PARTS) == []


def test_the_part_checker_sees_a_part_importing_the_request_path() -> None:
    graph = {
        "tiergate.gateway.upstream.client": {"tiergate.gateway.pipeline", "tiergate.gateway.errors"},
        "tiergate.gateway.pipeline": {"tiergate.gateway.upstream.client"},
    }
    assert wrong_arrows(part_arrows(graph)) == [
        "upstream -> request path: tiergate.gateway.upstream.client -> tiergate.gateway.pipeline"
    ]
