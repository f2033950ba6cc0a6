"""Entry point for ``python -m crossbit``: the same command line as ``crossbit``."""

from crossbit.server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
