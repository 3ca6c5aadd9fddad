"""Generated protobuf/gRPC modules (from proto/lclusterd/rpc/lclusterd.proto via `make proto`). Do not edit."""
