"""The `tiergate` command: collects the subcommands in `tiergate.admin.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from tiergate._version import __version__
from tiergate.admin import commands
from tiergate.admin.direct import USAGE, CommandError
from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import LOG_LEVELS
from tiergate.gateway.telemetry.logs import configure_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiergate", description="An OpenAI-compatible gateway over model tiers."
    )
    parser.add_argument("--version", action="version", version=f"tiergate {__version__}")
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        help="default: $TIERGATE_LOG_LEVEL, else the config's log_level, else info",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{module}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `serve` reconfigures from its settings once it has read them; every other command logs like this.
    configure_logging(
        args.log_level or os.environ.get("TIERGATE_LOG_LEVEL") or "info",
        os.environ.get("TIERGATE_LOG_FORMAT") or "text",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        # The one line naming the field is the whole answer: no traceback for a mistake in a file.
        print(f"tiergate: configuration error: {exc}", file=sys.stderr)
        return USAGE
    except CommandError as exc:
        print(f"tiergate: {exc}", file=sys.stderr)
        return exc.status
