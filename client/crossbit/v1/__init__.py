"""crossbit.v1: the gRPC API (generated from crossbit.proto)."""
