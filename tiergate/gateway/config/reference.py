"""The config file's reference, made from the models: its JSON Schema and docs/configuration.md.

`tiergate config schema` prints the one, `tiergate config docs` the other; a test fails when the committed
docs/configuration.md is not what `markdown()` makes.
"""

from __future__ import annotations

import json
from typing import Any

from tiergate.gateway.config.errors import describe
from tiergate.gateway.config.fieldtypes import schema
from tiergate.gateway.config.settings import ConfigFile

_INTRO = """\
# Configuration reference

<!-- Generated from the config models (tiergate/gateway/config/): do not edit by hand. Regenerate with
     `tiergate config docs > docs/configuration.md`; tests/gateway/config/test_reference.py fails when this
     file is stale. -->

tiergate reads one YAML file once, at start-up: `--config FILE`, else `$TIERGATE_CONFIG`, else
`./tiergate.yaml` when the working directory has one (`tiergate demo` writes its config there, unless the
file is your own); without one it runs the embedded default (SQLite in the working directory, OpenAI tiers
when `OPENAI_API_KEY` is set). Every command (`serve`, `tenants`, `keys`, `report`, ...) finds it the same way. `tiergate config check FILE` validates a file, `tiergate config schema` prints its
JSON Schema (for editors).

- Every field is optional unless marked *required*; a field written `null`, or with nothing after it, takes
  its default.
- Types are strict: `2.7` is not an integer, `"yes"` is not a boolean, `"9464"` is not a port. An unknown
  field is an error, never ignored (LiteLLM's own keys inside `model_list` entries and its settings sections
  excepted, below).
- A string written `env:NAME` (or LiteLLM's `os.environ/NAME`) is read from the environment variable `NAME`
  (where the type says so: keys, URLs), so secrets never sit in the file; a variable that is not set is an
  error naming it.
- `<name>` in a path is a key you choose (a tenant id, a domain, a tier); `[]` is any item of a list.
- The master key: `$TIERGATE_MASTER_KEY`, when set, overrides `master_key` (a deployment's environment wins
  over the file baked into its image). Start-up logs which source is in force and the key's first few
  characters, never the key; with neither, it warns that `/admin` answers 401 (virtual keys still work).
- A LiteLLM proxy config starts as it is. `model_list` becomes deployments; of LiteLLM's settings sections
  tiergate reads what it has an equivalent for, and a value written the tiergate way wins:

  | LiteLLM | tiergate |
  |---|---|
  | `router_settings.num_retries` (else `litellm_settings.num_retries`) | `upstream.max_retries` |
  | `router_settings.timeout` (else `litellm_settings.request_timeout`) | `timeout_s` of each `model_list` entry without its own `timeout` |
  | `router_settings.retry_after` | `upstream.backoff_base_s` |
  | `router_settings.cooldown_time` | `upstream.cooldown_s` |
  | `router_settings.allowed_fails: N` | `upstream.cooldown_failures: N + 1` (LiteLLM counts failures per minute, tiergate in a row) |
  | `router_settings.routing_strategy: simple-shuffle` | `upstream.load_balance: round_robin` |
  | `general_settings.master_key` | `master_key` |

  Every other key of `litellm_settings`, `router_settings`, `general_settings` and `environment_variables`
  is ignored and named, all in one warning at start-up (and by `tiergate config check`): `fallbacks`,
  `cache`, callbacks, ..., and `general_settings.database_url` (tiergate keeps its own tables: set the
  top-level `database_url`).
- Per-tenant overrides (`routing.tenants`, `cache.tenants`, `learning.shadow.tenants`) write some of the
  global fields; the others keep the global value.
"""


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file."""
    return schema(ConfigFile)


def markdown() -> str:
    """docs/configuration.md: every field with its full path, type, default and meaning."""
    root = json_schema()
    top: list[str] = []
    sections: list[str] = []
    for name, node in root["properties"].items():
        rows = _rows(root, node, name, name in root.get("required", ()))
        if len(rows) == 1 and rows[0][0] == name:
            top.append(_row(*rows[0]))
            continue
        meaning = _object(root, node).get("description") or node.get("description", "")
        sections.append(f"\n## `{name}`\n\n{meaning}\n\n{_HEADER}" + "".join(_row(*r) for r in rows))
    return _INTRO + f"\n## Top-level fields\n\n{_HEADER}" + "".join(top) + "".join(sections)


_HEADER = "| field | type | default | meaning |\n|---|---|---|---|\n"


def _row(field: str, kind: str, default: str, meaning: str) -> str:
    cells = (f"`{field}`", kind, default, meaning)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _object(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The model a field holds (its properties), or an empty dict when it holds none."""
    for branch in node.get("anyOf", [node]):
        branch = _resolve(root, branch)
        if "properties" in branch:
            return branch
    return {}


def _rows(
    root: dict[str, Any], node: dict[str, Any], path: str, required: bool
) -> list[tuple[str, str, str, str]]:
    """One row per leaf field under `node` at `path`: (path, type, default, meaning)."""
    held = _object(root, node)
    if held:
        alternatives = [
            b for b in node.get("anyOf", []) if b.get("type") not in ("object", "null") and "$ref" not in b
        ]
        own = [(path, describe(node, root), "`null`", node.get("description", ""))] if alternatives else []
        return own + [
            row
            for name, child in held["properties"].items()
            for row in _rows(root, child, f"{path}.{name}", name in held.get("required", ()))
        ]
    value = _resolve(root, node)
    item = _item(value)
    if item is not None and _holds_model(root, item):
        inner = f"{path}[]" if value.get("type") == "array" else f"{path}.<{_key(path)}>"
        return _rows(root, item, inner, True)
    if required:
        default = "*required*"
    elif "default" in node:
        default = f"`{json.dumps(node['default'])}`"
    else:
        default = "`[]`" if value.get("type") == "array" else "`{}`"
    return [(path, describe(node, root), default, node.get("description", ""))]


def _item(node: dict[str, Any]) -> dict[str, Any] | None:
    """What each item of a list, or each value of a mapping, is (None: not a container)."""
    item = node.get("items") if node.get("type") == "array" else node.get("additionalProperties")
    return item if isinstance(item, dict) else None


def _holds_model(root: dict[str, Any], node: dict[str, Any]) -> bool:
    item = _item(_resolve(root, node))
    return bool(_object(root, node)) or (item is not None and _holds_model(root, item))


def _key(path: str) -> str:
    """The placeholder of a mapping's keys: `tenants` -> `tenant`."""
    last = path.rsplit(".", 1)[-1].removesuffix("[]")
    return last[:-1] if last.endswith("s") else "name"
