"""crossbit.server.cli: the ``crossbit`` command line (serve, client commands, model commands)."""

from crossbit.server.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
