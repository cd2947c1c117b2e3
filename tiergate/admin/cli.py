"""The `tiergate` command: collects the subcommands in `tiergate.admin.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
from collections.abc import Sequence

from tiergate import __version__
from tiergate.admin import commands
from tiergate.gateway.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiergate", description="An OpenAI-compatible gateway over model tiers."
    )
    parser.add_argument("--version", action="version", version=f"tiergate {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("TIERGATE_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{module}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Worker processes (serve --workers N) are fresh interpreters: they read the level from the environment.
    os.environ["TIERGATE_LOG_LEVEL"] = args.log_level
    configure_logging(args.log_level)
    return int(args.func(args))
