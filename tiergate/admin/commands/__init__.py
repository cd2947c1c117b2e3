"""Subcommands of `tiergate`: every module here with a `register(subparsers)` function adds its own.

Modules import their heavy dependencies inside the command functions, so `tiergate --help` stays instant.
"""
