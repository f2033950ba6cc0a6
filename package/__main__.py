"""``python -m crossbit``: the same command line as ``crossbit`` (``crossbit`` is a namespace package:
the service and crossbit-client both add to it)."""

from crossbit.server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
