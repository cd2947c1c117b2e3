"""The house a newcomer walks: small modules, a short top level, and a stated purpose for every package."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tiergate"
MAX_MODULE_LINES = 400
MAX_GATEWAY_TOP_LEVEL = 12  # modules directly in tiergate/gateway/: the request path; the rest by concern
GENERATED = PACKAGE / "gateway" / "db" / "migrations" / "versions"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if GENERATED not in p.parents)


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by concern (over {MAX_MODULE_LINES} lines): {long}"


def test_the_gateway_top_level_holds_only_the_request_path() -> None:
    top = sorted(p.name for p in (PACKAGE / "gateway").glob("*.py"))
    assert len(top) <= MAX_GATEWAY_TOP_LEVEL, top


def test_every_package_says_what_it_owns() -> None:
    silent = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if GENERATED in init.parents:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        if doc is None or len(doc.split()) < 8:
            silent.append(str(init.relative_to(PACKAGE)))
    assert not silent, f"packages without a docstring saying what they own: {silent}"


# Every command module answers the CLI's plugin protocol (`register(subparsers)`, `cmd(args)`): one name
# on purpose, each reached only through its module.
COMMAND_PROTOCOL = PACKAGE / "admin" / "commands"


def test_no_two_public_classes_or_functions_share_a_name() -> None:
    where: dict[str, list[str]] = {}
    for path in _modules():
        if path.parent == COMMAND_PROTOCOL:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(
                node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not shared, f"one name, several things: {shared}"
