"""A small interpreter for the subset of Helm's Go templates the chart uses, so tests can render it.

No `helm` binary runs here. This covers: text with `{{- -}}` trimming, comments, `define`/`include`,
`if`/`else if`/`else`, `with`, `range` (lists and maps, with `$i, $v :=`), variables, pipelines with
parentheses, and the Sprig functions listed in `FUNCTIONS`. It is deliberately strict where Helm is lax:
a `.Values` path that values.yaml does not declare is an error, not an empty string, so a typo in a template
fails the test instead of rendering nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    pass


class _Missing:
    """A lookup that found nothing: an error when printed or used, allowed only in tests of presence."""

    def __init__(self, path: str) -> None:
        self.path = path


# ---- lexing -------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.S)


def _split(source: str) -> list[tuple[str, str]]:
    """[("text", ...) | ("action", ...)] with Go's whitespace trimming applied."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if m.group(1) and m.group(2):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(3)))
        pos = m.end()
        if m.group(5) and m.group(4):
            rest = source[pos:]
            pos += len(rest) - len(rest.lstrip())
    parts.append(("text", source[pos:]))
    return parts


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<assign>:=|=)
  | (?P<punct>[()|,])
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot read {text[pos:]!r} in {{{{ {text} }}}}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# ---- parsing ------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    declare: list[str]  # variables assigned (`$x :=`, `$i, $v :=`)
    commands: list[list[Any]]  # each command: operands (tokens or nested Pipelines)


@dataclass
class Node:
    kind: str  # text | action | if | range | with
    text: str = ""
    pipeline: Pipeline | None = None
    branches: list[tuple[Pipeline, list[Node]]] = field(default_factory=list)
    otherwise: list[Node] = field(default_factory=list)


def _pipeline(tokens: list[tuple[str, str]]) -> Pipeline:
    declare: list[str] = []
    if any(k == "assign" for k, _ in tokens):
        i = next(i for i, (k, _) in enumerate(tokens) if k == "assign")
        if tokens[i][1] == "=":
            raise TemplateError("reassigning a variable (`=`) is not supported: compute it once with `:=`")
        declare = [v for k, v in tokens[:i] if k == "var"]
        tokens = tokens[i + 1 :]
    commands: list[list[Any]] = [[]]
    stack: list[list[list[Any]]] = []
    for kind, value in tokens:
        if kind == "punct" and value == "(":
            stack.append(commands)
            commands = [[]]
        elif kind == "punct" and value == ")":
            inner = Pipeline([], commands)
            commands = stack.pop()
            commands[-1].append(inner)
        elif kind == "punct" and value == "|":
            commands.append([])
        else:
            commands[-1].append((kind, value))
    if stack:
        raise TemplateError("unbalanced parentheses")
    return Pipeline(declare, commands)


def _parse(parts: list[tuple[str, str]], defines: dict[str, list[Node]]) -> list[Node]:
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node]]] = [(None, root)]
    for kind, value in parts:
        body = stack[-1][1]
        if kind == "text":
            if value:
                body.append(Node("text", text=value))
            continue
        if value.startswith("/*"):
            continue
        words = value.split(None, 1)
        keyword, rest = (words[0], words[1] if len(words) > 1 else "")
        if keyword in ("if", "range", "with"):
            node = Node(keyword)
            node.branches.append((_pipeline(_tokens(rest)), []))
            body.append(node)
            stack.append((node, node.branches[-1][1]))
        elif keyword == "define":
            name = json.loads(rest.strip())
            node = Node("define", text=name)
            defines[name] = node.otherwise
            stack.append((node, node.otherwise))
        elif keyword == "else":
            node = stack.pop()[0]
            if node is None:
                raise TemplateError("else without if")
            if rest.startswith("if "):
                node.branches.append((_pipeline(_tokens(rest[3:])), []))
                stack.append((node, node.branches[-1][1]))
            else:
                stack.append((node, node.otherwise))
        elif keyword == "end":
            if stack.pop()[0] is None:
                raise TemplateError("end without a block")
        else:
            body.append(Node("action", pipeline=_pipeline(_tokens(value))))
    if len(stack) != 1:
        raise TemplateError("a block is not closed with {{ end }}")
    return root


# ---- evaluation ---------------------------------------------------------------------------------------


def truthy(value: Any) -> bool:
    if isinstance(value, _Missing):
        raise TemplateError(f"{value.path} is not declared in values.yaml")
    return bool(value) if value is not None else False


def _show(value: Any) -> str:
    if isinstance(value, _Missing):
        raise TemplateError(f"{value.path} is not declared in values.yaml")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        raise TemplateError(f"printing a collection ({value!r}): use toYaml")
    return str(value)


def to_yaml(value: Any) -> str:
    if isinstance(value, _Missing):
        raise TemplateError(f"{value.path} is not declared in values.yaml")
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n").removesuffix("\n...")


def _indent(n: int, text: str) -> str:
    return "\n".join(" " * n + line for line in text.split("\n"))


def _required(message: str, value: Any) -> Any:
    if value is None or value == "" or isinstance(value, _Missing):
        raise TemplateError(f"required: {message}")
    return value


def _fail(message: str) -> None:
    raise TemplateError(f"fail: {message}")


def _printf(fmt: str, *args: Any) -> str:
    return re.sub(r"%[sdv]", "{}", fmt).format(*(_show(a) for a in args))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quote": lambda *v: " ".join(json.dumps(_show(x)) for x in v),
    "squote": lambda v: "'" + _show(v) + "'",
    "toYaml": to_yaml,
    "indent": lambda n, s: _indent(int(n), s),
    "nindent": lambda n, s: "\n" + _indent(int(n), s),
    "default": lambda d, v=None: v if (v is not None and not isinstance(v, _Missing) and truthy(v)) else d,
    "required": _required,
    "fail": _fail,
    "trunc": lambda n, s: s[: int(n)],
    "trimSuffix": lambda suffix, s: s.removesuffix(suffix),
    "replace": lambda old, new, s: s.replace(old, new),
    "printf": _printf,
    "print": lambda *v: "".join(_show(x) for x in v),
    "toString": _show,
    "int": lambda v: int(v or 0),
    "lower": lambda s: s.lower(),
    "contains": lambda sub, s: sub in s,
    "sha256sum": lambda s: hashlib.sha256(s.encode()).hexdigest(),
    "b64enc": lambda s: base64.b64encode(s.encode()).decode(),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "le": lambda a, b: a <= b,
    "not": lambda v: not truthy(v),
    "and": lambda *v: next((x for x in v if not truthy(x)), v[-1]),
    "or": lambda *v: next((x for x in v if truthy(x)), v[-1]),
    "empty": lambda v: not truthy(v),
    "hasKey": lambda d, k: k in d,
    "list": lambda *v: list(v),
    "dict": lambda *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
    "add": lambda *v: sum(int(x) for x in v),
    "concat": lambda *lists: [x for values in lists for x in values],
    "ternary": lambda yes, no, condition: yes if truthy(condition) else no,
}


class Renderer:
    def __init__(
        self, chart_dir: Path, values: dict[str, Any], release: str = "demo", namespace: str = "ai"
    ) -> None:
        chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        self.root = {
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
            "Chart": {
                "Name": chart["name"],
                "Version": chart["version"],
                "AppVersion": chart.get("appVersion", ""),
            },
        }
        self.defines: dict[str, list[Node]] = {}
        self.templates: dict[str, list[Node]] = {}
        for path in sorted((chart_dir / "templates").iterdir()):
            nodes = _parse(_split(path.read_text()), self.defines)
            if not path.name.startswith("_") and path.suffix in (".yaml", ".yml"):
                self.templates[path.name] = nodes

    def render_all(self) -> dict[str, str]:
        return {
            name: self._render(nodes, self.root, {"$": self.root}) for name, nodes in self.templates.items()
        }

    def _render(self, nodes: list[Node], dot: Any, scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                assert node.pipeline is not None
                value = self._pipe(node.pipeline, dot, scope)
                if not node.pipeline.declare:
                    out.append(_show(value))
            elif node.kind == "if":
                for pipeline, body in node.branches:
                    if truthy(self._pipe(pipeline, dot, scope)):
                        out.append(self._render(body, dot, dict(scope)))
                        break
                else:
                    out.append(self._render(node.otherwise, dot, dict(scope)))
            elif node.kind == "with":
                pipeline, body = node.branches[0]
                value = self._pipe(pipeline, dot, scope)
                out.append(
                    self._render(
                        body if truthy(value) else node.otherwise,
                        value if truthy(value) else dot,
                        dict(scope),
                    )
                )
            elif node.kind == "range":
                out.append(self._range(node, dot, scope))
        return "".join(out)

    def _range(self, node: Node, dot: Any, scope: dict[str, Any]) -> str:
        pipeline, body = node.branches[0]
        collection = self._pipe(Pipeline([], pipeline.commands), dot, scope)
        if isinstance(collection, _Missing):
            raise TemplateError(f"{collection.path} is not declared in values.yaml")
        items = (
            sorted(collection.items()) if isinstance(collection, dict) else list(enumerate(collection or []))
        )
        if not items:
            return self._render(node.otherwise, dot, dict(scope))
        out = []
        for key, value in items:
            inner = dict(scope)
            if len(pipeline.declare) == 2:
                inner[pipeline.declare[0]], inner[pipeline.declare[1]] = key, value
            elif len(pipeline.declare) == 1:
                inner[pipeline.declare[0]] = value
            out.append(self._render(body, value, inner))
        return "".join(out)

    def _pipe(self, pipeline: Pipeline, dot: Any, scope: dict[str, Any]) -> Any:
        value: Any = None
        for i, command in enumerate(pipeline.commands):
            value = self._command(command, dot, scope, None if i == 0 else [value])
        if pipeline.declare:
            scope[pipeline.declare[0]] = value
        return value

    def _command(self, command: list[Any], dot: Any, scope: dict[str, Any], piped: list[Any] | None) -> Any:
        head = command[0]
        if isinstance(head, tuple) and head[0] == "ident" and head[1] not in ("true", "false", "nil"):
            name = head[1]
            args = [self._operand(op, dot, scope) for op in command[1:]] + (piped or [])
            if name == "include":
                return self._render(self._define(args[0]), args[1], {"$": args[1]})
            if name not in FUNCTIONS:
                raise TemplateError(f"unknown function {name}")
            return FUNCTIONS[name](*args)
        if len(command) != 1 or piped:
            raise TemplateError(f"cannot call a value: {command}")
        return self._operand(head, dot, scope)

    def _define(self, name: str) -> list[Node]:
        if name not in self.defines:
            raise TemplateError(f"no template named {name!r}")
        return self.defines[name]

    def _operand(self, op: Any, dot: Any, scope: dict[str, Any]) -> Any:
        if isinstance(op, Pipeline):
            return self._pipe(op, dot, scope)
        kind, value = op
        if kind == "string":
            return json.loads(value) if value.startswith('"') else value[1:-1]
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}[value]
        if kind == "field":
            return dot if value == "." else _lookup(dot, value[1:].split("."), value)
        if kind == "var":
            name, *path = value.split(".")
            if name not in scope:
                raise TemplateError(f"undefined variable {name}")
            return _lookup(scope[name], path, value) if path else scope[name]
        raise TemplateError(f"unexpected {value!r}")


def _lookup(value: Any, path: list[str], text: str) -> Any:
    for part in path:
        if isinstance(value, _Missing):
            return value
        if not isinstance(value, dict):
            raise TemplateError(f"{text}: cannot look up {part!r} in {value!r}")
        value = value[part] if part in value else _Missing(text)
    return value


def render_chart(chart_dir: Path, values: dict[str, Any], **release: str) -> dict[str, list[dict[str, Any]]]:
    """Every template rendered and parsed: {template file name: [documents]} (empty documents dropped)."""
    rendered = Renderer(chart_dir, values, **release).render_all()
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}
