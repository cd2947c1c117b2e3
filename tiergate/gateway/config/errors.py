"""ConfigError, and the one line it says about the first problem pydantic found in a document.

The line names the field's full path, the value written and what is allowed, read from the JSON Schema of
the model at that path (the same schema `tiergate config schema` prints):

    upstream.max_retrys: unknown field; did you mean max_retries?
    upstream.max_retries: 2.7 is not an integer >= 0
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# The prefix of the error types our own validators raise (PydanticCustomError), e.g. `config.env_unset`.
OWN = "config."
_UNKNOWN = {"extra_forbidden", "unexpected_keyword_argument"}
_MISSING = {"missing", "missing_keyword_argument", "missing_argument"}
_KINDS = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


class ConfigError(ValueError):
    """The configuration cannot be used. `where` is the path of the field to blame (`cache.exact.ttl_s`),
    when one is; the admin API answers 400 with it as `param`."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


def shown_value(value: Any) -> str:
    """A value as YAML or JSON would write it, cut short."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def path(parts: tuple[int | str, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def from_validation_error(error: ValidationError, schema: dict[str, Any], where: str = "") -> ConfigError:
    """The first of pydantic's errors as a ConfigError; `schema` is the JSON Schema of the validated model,
    `where` the path of the validated document in the whole config."""
    first = error.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    key_error = loc[-1:] == ("[key]",)
    if key_error:
        loc = loc[:-1]
    field = (first.get("ctx") or {}).get("field")
    if field is not None:  # a rule over several fields, raised by their model, names the one to change
        loc = (*loc, field)
    full = path((*((where,) if where else ()), *loc)) or "the config"
    return ConfigError(f"{full}: {_problem(first, schema, loc, key_error)}", full)


def _problem(error: ErrorDetails, root: dict[str, Any], loc: tuple[int | str, ...], key_error: bool) -> str:
    kind = error["type"]
    if kind in _UNKNOWN:
        allowed = sorted(_properties(_node(root, loc[:-1]) or {}, root))
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            return f"unknown field; did you mean {close[0]}?"
        return f"unknown field (allowed: {', '.join(allowed)})" if allowed else "unknown field"
    node = _node(root, loc)
    if kind in _MISSING:
        meaning = (node or {}).get("description")
        return f"required, missing ({meaning})" if meaning else "required, missing"
    if kind.startswith(OWN):  # our own rules: their message says it all
        return error["msg"]
    if key_error:
        keys = [
            b["propertyNames"] for b in _branches(_node(root, loc[:-1]) or {}, root) if "propertyNames" in b
        ]
        node = keys[0] if keys else None
    expected = describe(node, root) if node is not None else error["msg"].lower()
    return f"{shown_value(error['input'])} is not {expected}"


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _branches(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    return [_resolve(n, root) for n in node["anyOf"]] if "anyOf" in node else [node]


def _node(root: dict[str, Any], loc: tuple[int | str, ...]) -> dict[str, Any] | None:
    """The schema of the value at `loc`, None where the schema does not say."""
    node: dict[str, Any] | None = root
    for part in loc:
        if node is None:
            return None
        node = _child(node, part, root)
    return node


def _child(node: dict[str, Any], part: int | str, root: dict[str, Any]) -> dict[str, Any] | None:
    for branch in _branches(node, root):
        if isinstance(part, int) and isinstance(branch.get("items"), dict):
            return branch["items"]  # type: ignore[no-any-return]
        if isinstance(part, str) and part in branch.get("properties", {}):
            return branch["properties"][part]  # type: ignore[no-any-return]
        if isinstance(part, str) and isinstance(branch.get("additionalProperties"), dict):
            return branch["additionalProperties"]  # type: ignore[no-any-return]
    return None


def _properties(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
    return {name for branch in _branches(node, root) for name in branch.get("properties", {})}


def describe(node: dict[str, Any], root: dict[str, Any]) -> str:
    """What a schema allows, in words: `an integer >= 0`, `one of text, json`, `a string or a mapping`.

    `null` is left out: it means "not written" everywhere (the field takes its default)."""
    return " or ".join(_one(b, root) for b in _branches(node, root) if b.get("type") != "null") or "null"


def _one(node: dict[str, Any], root: dict[str, Any]) -> str:
    if isinstance(node.get("items"), dict):
        return f"a list (each {describe(node['items'], root)})"
    values = node.get("additionalProperties")
    if isinstance(values, dict) and "properties" not in node:
        return f"a mapping (each value {describe(values, root)})"
    if "enum" in node:
        return "one of " + ", ".join(str(v) for v in node["enum"])
    text = _KINDS.get(node.get("type", ""), "a value")
    if node.get("minLength") == 1:
        text = "a non-empty string"
    if "minimum" in node and "maximum" in node:
        return f"{text} from {node['minimum']} to {node['maximum']}"
    bounds = [f"{sign} {node[key]}" for key, sign in _BOUNDS if key in node]
    return " ".join([text, " and ".join(bounds)]) if bounds else text
