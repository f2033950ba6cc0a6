"""crossbit.server: the gRPC service, micro-batching, config, auth, metrics and the command line."""
