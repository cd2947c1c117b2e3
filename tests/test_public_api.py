"""The declared public API: `from tiergate import ...`, and the `__all__` of the modules others import from.

A change to either is a change to what users and the other packages rely on: these tests make it a
deliberate one (edit the lists below in the same commit).
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tiergate

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tiergate"

PUBLIC = {
    "Deployment": "tiergate.gateway.config.deployments.Deployment",
    "GatewayError": "tiergate.gateway.errors.GatewayError",
    "Settings": "tiergate.gateway.config.settings.Settings",
    "create_app": "tiergate.gateway.app.create_app",
    "load_settings": "tiergate.gateway.config.settings.load_settings",
}


def test_the_public_names_and_where_they_live() -> None:
    assert sorted(tiergate.__all__) == sorted([*PUBLIC, "__version__"])
    for name, where in PUBLIC.items():
        value = getattr(tiergate, name)
        assert f"{value.__module__}.{value.__qualname__}" == where, name
    assert tiergate.__version__ == importlib.import_module("tiergate._version").__version__
    assert set(tiergate.__all__) <= set(dir(tiergate))
    with pytest.raises(AttributeError, match="no attribute 'Resources'"):
        tiergate.Resources  # noqa: B018


def test_importing_tiergate_loads_nothing_else_of_it() -> None:
    code = "import sys, tiergate; print(sorted(m for m in sys.modules if m.startswith('tiergate')))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['tiergate', 'tiergate._version']"


def _declared() -> dict[str, list[str]]:
    """{module: its __all__} for every module of the package that declares one."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "__all__" for t in node.targets
            ):
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                out[module] = ast.literal_eval(node.value)
    return out


def test_each_declared_all_names_what_the_module_defines_and_what_others_import() -> None:
    declared = _declared()
    assert {"tiergate", "tiergate.gateway.app", "tiergate.gateway.errors", "tiergate.admin.server"} <= set(
        declared
    )
    wrong = []
    for module, names in declared.items():
        loaded = importlib.import_module(module)
        wrong += [
            f"{module}.__all__ names {n}, which it does not define" for n in names if not hasattr(loaded, n)
        ]
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in declared:
                wrong += [
                    f"{path.relative_to(ROOT)} imports {a.name} from {node.module}, not in its __all__"
                    for a in node.names
                    if a.name not in declared[node.module]
                ]
    assert not wrong, "\n".join(wrong)
