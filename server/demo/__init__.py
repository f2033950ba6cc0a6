"""crossbit.server.demo: ``crossbit demo`` and the public-domain sample photos it indexes."""

from crossbit.server.demo.run import run_demo

__all__ = ["run_demo"]
