"""The `tiergate` command: collects the subcommands in `tiergate.admin.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from tiergate import __version__
from tiergate.admin import commands


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
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))
