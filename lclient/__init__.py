"""lclient: the command-line client of lclusterd, and a small Python client library (JobsClient)."""

import os as _os

# gRPC's C core writes its own log lines (TLS handshake failures...) to stderr; lclient's
# errors are one line of its own
_os.environ.setdefault("GRPC_VERBOSITY", "NONE")
