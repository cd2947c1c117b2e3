"""`tiergate demo`: the gateway with a local stand-in model on every tier, and a config the CLI finds.

The demo writes its config to `./tiergate.yaml` (the file every command run in the folder reads when given no
`--config`), so that `tiergate tenants create` and `tiergate report cost` work on the demo's database and its
deployments. A `./tiergate.yaml` the demo did not write is the user's own and is left alone: the demo's config
then goes to `./tiergate-demo.yaml` and the banner prints the `--config` to add.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from tiergate.admin.commands.serve import port_number, uvicorn_kwargs
from tiergate.gateway.config.master_key import local_master_key
from tiergate.gateway.config.settings import CONFIG_FILE, Settings, parse_settings

DEMO_DATABASE = "tiergate-demo.db"
DEMO_MASTER_KEY_FILE = "tiergate-demo.master_key"
DEMO_CONFIG_FILE = "tiergate-demo.yaml"
# The first line of a config the demo wrote: the next run may overwrite such a file, never another.
WRITTEN_BY_DEMO = "# Written by `tiergate demo`"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_document(standin_port: int, master_key: str) -> dict[str, Any]:
    from tiergate.admin.standin import PREFIX

    base = f"http://127.0.0.1:{standin_port}/v1"
    # Made-up prices, in the ratio of real model families, so the cost figures mean something.
    prices = {"student": (0.15, 0.6), "ta": (0.4, 1.6), "teacher": (2.5, 10.0), "supervisor": (15.0, 60.0)}
    tiers = {
        tier: [
            {
                "model": PREFIX + tier,
                "api_base": base,
                "input_cost_per_mtok": p[0],
                "output_cost_per_mtok": p[1],
            }
        ]
        for tier, p in prices.items()
    }
    models = [{"model": PREFIX + "embedding", "api_base": base, "input_cost_per_mtok": 0.02}]
    return {
        "master_key": master_key,
        "database_url": f"sqlite:///./{DEMO_DATABASE}",
        "tiers": tiers,
        "models": models,
    }


def demo_settings(standin_port: int, master_key: str) -> Settings:
    settings = parse_settings(
        demo_document(standin_port, master_key), env={}, source="demo (local stand-in models)"
    )
    return replace(settings, master_key_source=f"./{DEMO_MASTER_KEY_FILE}")


def write_demo_config(doc: dict[str, Any]) -> Path:
    """The demo's config, in ./tiergate.yaml unless that file is the user's own; returns where it went."""
    path = Path(CONFIG_FILE)
    if path.exists() and not path.read_text(encoding="utf-8").startswith(WRITTEN_BY_DEMO):
        path = Path(DEMO_CONFIG_FILE)
    text = (
        f"{WRITTEN_BY_DEMO} for the CLI in this folder: its database, master key and stand-in models.\n"
        "# The stand-ins answer only while the demo runs; the next `tiergate demo` rewrites this file.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    # It holds the master key: readable by its owner only, like ./tiergate-demo.master_key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def _cli_hint(written: Path) -> str:
    found = written.name == CONFIG_FILE and not os.environ.get("TIERGATE_CONFIG")
    flag = "" if found else f" --config {written}"
    why = (
        f"the demo's config is ./{written} (written now), which commands run in this folder read"
        if found
        else f"the demo's config is ./{written} (written now): add `--config {written}`"
        + (" ($TIERGATE_CONFIG is set)" if written.name == CONFIG_FILE else f" (./{CONFIG_FILE} is your own)")
    )
    return f"""The CLI: {why}.
  tiergate tenants create acme{flag}
  tiergate keys create --tenant ten_...{flag}      # a virtual key for that tenant (sk-tg-...)
  tiergate report cost --group-by tier{flag}"""


def cmd_demo(args: argparse.Namespace) -> int:
    import uvicorn

    from tiergate.admin.server import create_server
    from tiergate.admin.standin import create_standin_app

    standin_port = _free_port()
    # Kept beside the demo's database, so that keys and scripts made in one run work in the next.
    master_key, created = local_master_key(Path(DEMO_MASTER_KEY_FILE))
    settings = demo_settings(standin_port, master_key)
    written = write_demo_config(demo_document(standin_port, master_key))
    url = f"http://{args.host}:{args.port}/v1"
    kept = "created now" if created else "the same as in the last run"
    print(
        f"""tiergate demo: the gateway on {url}, with a local stand-in model on every tier
(stand-ins answer "[stand-in <tier> model, not a real LLM] ..."; no account or network needed).

Master key: {master_key}
  ({kept}; kept in ./{DEMO_MASTER_KEY_FILE}, beside the demo's database ./{DEMO_DATABASE})

Try:
  curl -s {url}/models -H "Authorization: Bearer {master_key}"
  curl -s {url}/chat/completions -H "Authorization: Bearer {master_key}" -H "Content-Type: application/json" \\
       -d '{{"model": "auto", "messages": [{{"role": "user", "content": "Hello!"}}]}}' -D -
  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}", api_key="{master_key}"); print(c.chat.completions.create(model="teacher", messages=[{{"role": "user", "content": "hi"}}]).choices[0].message.content)'

{_cli_hint(written)}

Press Ctrl+C to stop.""",
        flush=True,
    )
    standin = uvicorn.Server(
        uvicorn.Config(
            create_standin_app(), host="127.0.0.1", port=standin_port, log_level="warning", log_config=None
        )
    )
    gateway = uvicorn.Server(
        uvicorn.Config(create_server(settings), **uvicorn_kwargs(args.host, args.port, settings))
    )

    async def run() -> None:
        await asyncio.gather(standin.serve(), gateway.serve())

    # Ctrl+C is how the demo stops: both servers have shut down gracefully by the time uvicorn hands the
    # signal on to asyncio, which turns it into KeyboardInterrupt (a traceback, if not suppressed).
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run the gateway with local stand-in models, no account needed")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=port_number, default=4000)
    demo.set_defaults(func=cmd_demo)
