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
