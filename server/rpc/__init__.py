"""crossbit.server.rpc: the gRPC service: server start-up, the servicer (a thin adapter over the core),
conversions, the status mapping, stream guards, auth and reflection."""
