"""The gRPC face of lclusterd: request validation, conversion, and error-to-status mapping."""
