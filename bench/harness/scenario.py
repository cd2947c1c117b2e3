"""Scenarios: one YAML file each in bench/configs/.

The file's `bench:` section tells the harness how to start the process under test and what load to put on
it; everything else in the file is that process's own config (a tiergate or LiteLLM config), written out after
`${NAME}` placeholders are filled in and handed to the process as `${CONFIG}`. See bench/README.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PLACEHOLDERS = ("UPSTREAM", "PORT", "CONFIG", "PYTHON", "REPO", "LITELLM_PYTHON", "WORKDIR")
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Workload:
    name: str
    path: str  # request path on the process under test
    model: str
    stream: bool
    lua: str
    connections: tuple[int, ...]
    ttft: bool  # also measure time to first token against the upstream (streams only)
    api: str = "chat"  # the request shape sent: chat | messages (Anthropic) | responses (OpenAI)
    fields: tuple[tuple[str, Any], ...] = ()  # top-level request fields set on the standard body (`store`)


APIS = ("chat", "messages", "responses")


@dataclass(frozen=True)
class Targets:
    """Thresholds checked on the median figures at the headline concurrency; None = not checked."""

    min_rps: Mapping[str, float] = field(default_factory=dict)  # per workload name
    max_ttft_added_ms: float | None = None
    max_startup_s: float | None = None
    max_rss_mb: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    order: int  # scenarios run and print in this order (then by name)
    source: Path
    command: tuple[str, ...] | None  # None: the static upstream itself is measured (the direct floor)
    health: str
    env: Mapping[str, str]
    key: str | None
    check: tuple[str, ...] | None  # a command that must succeed, else the scenario is skipped with its output
    # Commands run in order after the config is written, before the process starts (e.g. creating a key);
    # the fields of the JSON object the n-th prints become ${SETUPn_FIELD} for later commands and `key`.
    setup: tuple[tuple[str, ...], ...]
    startup_timeout_s: float
    workloads: tuple[Workload, ...]
    targets: Targets
    process_config: str | None  # the YAML handed to the process, placeholders still in


def fill(text: str, values: Mapping[str, str], where: str) -> str:
    """`text` with every `${NAME}` replaced; unknown or unavailable names are an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join(sorted(values))
            raise ScenarioError(f"{where}: ${{{name}}} is not available here (known: {known})")
        return values[name]

    return _PLACEHOLDER.sub(one, text)


def _get(
    doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None
) -> Any:
    value = doc.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise ScenarioError(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _workload(raw: Any, where: str) -> Workload:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} must be a mapping")
    unknown = set(raw) - {"name", "path", "model", "stream", "lua", "connections", "ttft", "api", "fields"}
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = _get(raw, "name", str, where)
    if not name:
        raise ScenarioError(f"{where}.name is required")
    connections = _get(raw, "connections", list, where, [8])
    if not connections or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in connections
    ):
        raise ScenarioError(f"{where}.connections must be a list of positive integers")
    stream = _get(raw, "stream", bool, where, False)
    ttft = _get(raw, "ttft", bool, where, False)
    if ttft and not stream:
        raise ScenarioError(f"{where}: ttft needs stream: true")
    api = _get(raw, "api", str, where, "chat")
    if api not in APIS:
        raise ScenarioError(f"{where}.api must be one of {', '.join(APIS)}")
    if ttft and api != "chat":
        raise ScenarioError(f"{where}: ttft is measured on chat streams only")
    fields = _get(raw, "fields", dict, where, {})
    if not all(isinstance(k, str) for k in fields):
        raise ScenarioError(f"{where}.fields must map field names to values")
    return Workload(
        name=name,
        path=_get(raw, "path", str, where, "/v1/chat/completions"),
        model=_get(raw, "model", str, where, "bench-model"),
        stream=stream,
        lua=_get(raw, "lua", str, where, "chat.lua"),
        connections=tuple(connections),
        ttft=ttft,
        api=api,
        fields=tuple(fields.items()),
    )


def _targets(raw: Any, where: str) -> Targets:
    if raw is None:
        return Targets()
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} must be a mapping")
    unknown = set(raw) - {"min_rps", "max_ttft_added_ms", "max_startup_s", "max_rss_mb"}
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    min_rps = _get(raw, "min_rps", dict, where, {})
    return Targets(
        min_rps={str(k): float(v) for k, v in min_rps.items()},
        max_ttft_added_ms=_get(raw, "max_ttft_added_ms", (int, float), where),
        max_startup_s=_get(raw, "max_startup_s", (int, float), where),
        max_rss_mb=_get(raw, "max_rss_mb", (int, float), where),
    )


def parse_scenario(text: str, source: Path) -> Scenario:
    where = source.name
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("bench"), dict):
        raise ScenarioError(f"{where} needs a 'bench:' mapping")
    bench = doc.pop("bench")
    known = {
        "description",
        "order",
        "command",
        "health",
        "env",
        "key",
        "check",
        "setup",
        "startup_timeout_s",
        "workloads",
        "targets",
    }
    unknown = set(bench) - known
    if unknown:
        raise ScenarioError(f"{where}: unknown bench field(s) {', '.join(sorted(unknown))}")
    command = _get(bench, "command", list, f"{where}:bench")
    check = _get(bench, "check", list, f"{where}:bench")
    workloads = [
        _workload(w, f"{where}:bench.workloads[{i}]") for i, w in enumerate(bench.get("workloads") or [])
    ]
    if not workloads:
        raise ScenarioError(f"{where}: bench.workloads must list at least one workload")
    if len({w.name for w in workloads}) != len(workloads):
        raise ScenarioError(f"{where}: workload names must be unique")
    env = _get(bench, "env", dict, f"{where}:bench", {})
    setup = _get(bench, "setup", list, f"{where}:bench", [])
    if not all(isinstance(c, list) and c for c in setup):
        raise ScenarioError(f"{where}: bench.setup must be a list of commands (non-empty lists)")
    # The rest of the file is the process's config; its `${NAME}` placeholders are filled in at run time.
    process_config = yaml.safe_dump(doc, sort_keys=False) if doc else None
    return Scenario(
        name=source.stem,
        description=_get(bench, "description", str, f"{where}:bench", ""),
        order=_get(bench, "order", int, f"{where}:bench", 50),
        source=source,
        command=tuple(str(a) for a in command) if command else None,
        health=_get(bench, "health", str, f"{where}:bench", "/healthz"),
        env={str(k): str(v) for k, v in env.items()},
        key=_get(bench, "key", str, f"{where}:bench"),
        check=tuple(str(a) for a in check) if check else None,
        setup=tuple(tuple(str(a) for a in c) for c in setup),
        startup_timeout_s=float(_get(bench, "startup_timeout_s", (int, float), f"{where}:bench", 60)),
        workloads=tuple(workloads),
        targets=_targets(bench.get("targets"), f"{where}:bench.targets"),
        process_config=process_config,
    )


def load_scenarios(directory: Path = CONFIG_DIR) -> list[Scenario]:
    """Every scenario file in `directory`, by `order` then name."""
    scenarios = [parse_scenario(path.read_text(encoding="utf-8"), path) for path in directory.glob("*.yaml")]
    return sorted(scenarios, key=lambda s: (s.order, s.name))
