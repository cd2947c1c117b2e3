"""`tiergate config schema | check FILE | docs`: the config file's JSON Schema, a check, its reference."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_schema(args: argparse.Namespace) -> int:
    from tiergate.gateway.config.reference import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Loads FILE as `tiergate serve` would (`env:NAME` values included); a ConfigError exits 2 (cli.main)."""
    from tiergate.gateway.config.settings import load_settings

    settings = load_settings(args.file)
    for notice in settings.notices:
        print(f"tiergate: warning: {notice}", file=sys.stderr)
    print(f"{args.file}: OK ({len(settings.deployments)} deployments)")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from tiergate.gateway.config.reference import markdown

    print(markdown(), end="")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="the config file: its JSON Schema, a check, its reference")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("schema", help="print the JSON Schema of the config file").set_defaults(
        func=cmd_schema
    )
    check = actions.add_parser("check", help="validate a config file as `tiergate serve` would load it")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)
    actions.add_parser(
        "docs", help="print docs/configuration.md (every field, its type, default and meaning)"
    ).set_defaults(func=cmd_docs)
