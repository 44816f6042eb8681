"""Edges to the outside world: gRPC, Postgres, Redis, connectors, legacy import."""
