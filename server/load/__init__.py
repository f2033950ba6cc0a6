"""crossbit.server.load: ``crossbit load``, a bounded load generator that reports like ghz."""
